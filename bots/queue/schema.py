"""The queue's tables, as SQLAlchemy models. Migrations (`migrations/`) create and change them.

Money is stored as text (exact on every backend) and times as aware UTC, so that SQLite
and PostgreSQL hold exactly the same values. Every column a hot query filters on has an
index; `migrations/versions/` is the authority on what the database really has.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Money(TypeDecorator[Decimal]):
    """Decimal stored as text: exact on every backend, no float on the way."""

    impl = String(32)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Any) -> str | None:
        return None if value is None else str(value)

    def process_result_value(self, value: str | None, dialect: Any) -> Decimal | None:
        return None if value is None else Decimal(value)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on SQLite too (which stores naive values).

    Stored as ISO text with a fixed width, so text order is time order on every backend.
    """

    impl = String(32)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> str | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat(timespec="microseconds")

    def process_result_value(self, value: str | None, dialect: Any) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)


class Base(DeclarativeBase):
    pass


class CaseState:
    QUEUED = "queued"  # waiting for a runner (maybe not before next_attempt_at)
    PROCESSING = "processing"  # leased by one runner until locked_until (fenced by lease_token)
    DONE = "done"  # finished with an outcome (refunded, partial, rejected)
    ESCALATED = "escalated"  # waiting for a human decision
    FAILED = "failed"  # system exceptions exhausted the retries: ops must look
    MERGED = "merged"  # folded into another case for the same order

    OPEN = (QUEUED, PROCESSING)
    ALL = (QUEUED, PROCESSING, DONE, ESCALATED, FAILED, MERGED)


def case_ref(case_id: int) -> str:
    return f"C-{case_id:06d}"


@dataclass
class Lease:
    """A runner's hold on a case: every write it makes about the case carries the token.

    `lost` is set (by the heartbeat or a failed fenced write) the moment the runner may no
    longer act on the case; it is checked before anything is written to a legacy app.
    """

    case_id: int
    owner: str
    token: int
    lost: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (
        Index("ix_cases_due", "state", "next_attempt_at"),
        Index("ix_cases_lease", "state", "locked_until"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_key: Mapped[str] = mapped_column(String(200), unique=True)
    order_number: Mapped[str | None] = mapped_column(String(64), index=True)
    customer_email: Mapped[str | None] = mapped_column(String(320), index=True)
    customer_name: Mapped[str | None] = mapped_column(String(200))
    # No index of its own: ix_cases_due and ix_cases_lease lead with it (migration 0005).
    state: Mapped[str] = mapped_column(String(20), default=CaseState.QUEUED)
    outcome: Mapped[str | None] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    requested_amount: Mapped[Decimal | None] = mapped_column(Money)
    approved_amount: Mapped[Decimal | None] = mapped_column(Money)
    currency: Mapped[str | None] = mapped_column(String(3))
    refund_number: Mapped[str | None] = mapped_column(String(64))
    decision: Mapped[str | None] = mapped_column(Text)  # JSON: rules fired
    merged_into: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    # A human's decision on an escalated case: "approve"/"partial"/"reject", who, why.
    human_decision: Mapped[str | None] = mapped_column(String(20))
    human_agent: Mapped[str | None] = mapped_column(String(100))
    human_comment: Mapped[str | None] = mapped_column(Text)
    assigned_to: Mapped[str | None] = mapped_column(String(100))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    locked_by: Mapped[str | None] = mapped_column(String(200))
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The fencing token: grows by one at every claim. A write by a runner carries the token
    # it claimed with; a runner whose lease was taken over writes nothing (zero rows).
    lease_token: Mapped[int] = mapped_column(Integer, default=0)
    # Higher first: angry, urgent or chargeback-threatening customers (never the amount).
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # A case opened by a contact about an earlier, finished case of the same order.
    follows: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    requests: Mapped[list[RequestRow]] = relationship(back_populates="case",
                                                      order_by="RequestRow.id")

    @property
    def ref(self) -> str:
        return case_ref(self.id)

    @property
    def channels(self) -> list[str]:
        return sorted({r.channel for r in self.requests})

    @property
    def lease(self) -> Lease:
        """The lease this case was claimed with (as returned by `claim`)."""
        return Lease(self.id, self.locked_by or "", self.lease_token)

    @property
    def doubts(self) -> list[str]:
        """What intake could not read for sure, from every contact (see RefundRequest.doubts)."""
        out: list[str] = []
        for r in self.requests:
            out += [d for d in r.doubt_list if d not in out]
        return out


class RequestRow(Base):
    __tablename__ = "requests"
    __table_args__ = (UniqueConstraint("channel", "source_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(20))
    source_id: Mapped[str] = mapped_column(String(300))
    source_ref: Mapped[str] = mapped_column(Text, default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    customer_email: Mapped[str | None] = mapped_column(String(320))
    customer_name: Mapped[str | None] = mapped_column(String(200))
    customer_phone: Mapped[str | None] = mapped_column(String(64))
    order_number: Mapped[str | None] = mapped_column(String(64))
    requested_amount: Mapped[Decimal | None] = mapped_column(Money)
    currency: Mapped[str | None] = mapped_column(String(3))
    reason_category: Mapped[str] = mapped_column(String(30), default="other")
    reason_text: Mapped[str] = mapped_column(Text, default="")
    reply_to: Mapped[str | None] = mapped_column(String(320))
    customer_handle: Mapped[str | None] = mapped_column(String(200))
    auth_results: Mapped[str | None] = mapped_column(Text)
    in_reply_to: Mapped[str | None] = mapped_column(String(400))
    # JSON list of what intake was unsure about (a minus sign, two orders...): escalates
    doubts: Mapped[str] = mapped_column(Text, default="[]")
    language: Mapped[str | None] = mapped_column(String(8))  # ISO 639-1, when detected
    run_id: Mapped[str | None] = mapped_column(String(64))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    case: Mapped[Case] = relationship(back_populates="requests")

    @property
    def doubt_list(self) -> list[str]:
        try:
            value = json.loads(self.doubts or "[]")
        except ValueError:
            return [f"unreadable doubts record: {self.doubts[:80]!r}"]
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]


class QuarantineRow(Base):
    __tablename__ = "quarantine"
    __table_args__ = (UniqueConstraint("channel", "source_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(20))
    source_id: Mapped[str] = mapped_column(String(300))
    source_ref: Mapped[str] = mapped_column(Text, default="")
    reason: Mapped[str] = mapped_column(Text)
    excerpt: Mapped[str] = mapped_column(Text, default="")
    run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditRow(Base):
    """Append-only: rows are inserted, never updated or deleted (hash-chained: audit.py)."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # None for records about something else than a case (a break: see `subject`).
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str | None] = mapped_column(String(20))
    event: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="")
    # issue 15 (migration 0003_breaks): what else the record is about ("break:B-000003"),
    # and the hash chain: detail enters it only as a salted hash, so erasure keeps it whole.
    subject: Mapped[str | None] = mapped_column(String(60), index=True)
    salt: Mapped[str | None] = mapped_column(String(32))
    detail_hash: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    row_hash: Mapped[str | None] = mapped_column(String(64))


class IntentState:
    PENDING = "pending"  # written before the submit click; outcome unknown until verified
    CONFIRMED = "confirmed"  # the portal showed a refund number for it
    ABSENT = "absent"  # verified not to exist in the portal: safe to submit anew


class RefundIntent(Base):
    __tablename__ = "refund_intents"
    __table_args__ = (Index("ix_intents_state_resolved", "state", "resolved_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    key: Mapped[str] = mapped_column(String(40), unique=True)
    order_number: Mapped[str] = mapped_column(String(64))
    transaction_id: Mapped[str] = mapped_column(String(64))
    amount: Mapped[Decimal] = mapped_column(Money)
    state: Mapped[str] = mapped_column(String(20), default=IntentState.PENDING)
    refund_number: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # Set, fenced, right before the submit click: until then no submit can have happened.
    submit_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set when the portal answered that submit (an error page, the login page, a refusal):
    # the request is over, so its history is final and no grace period is needed.
    submit_answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # What remained refundable on the charge when the intent was opened: a later balance
    # that dropped by exactly the amount without our key in the history is ambiguous.
    remaining_before: Mapped[Decimal | None] = mapped_column(Money)
    customer_email: Mapped[str | None] = mapped_column(String(320), index=True)


class LockRow(Base):
    """A lease: whoever holds an unexpired row owns the lock; an expired one is free."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RunRow(Base):
    __tablename__ = "runs"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    command: Mapped[str] = mapped_column(String(40))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(20), default="running")
    stats: Mapped[str] = mapped_column(Text, default="{}")
    owner: Mapped[str | None] = mapped_column(String(200))  # the runner's identity


class NotificationState:
    PENDING = "pending"  # written with the case's outcome: to be sent (maybe being sent)
    SENT = "sent"
    FAILED = "failed"  # the last send raised: retried with backoff until max tries
    GAVE_UP = "gave_up"  # max tries reached: ops must look (the report lists it)


class NotificationRow(Base):
    """One message to one contact about one outcome: the transactional outbox."""

    __tablename__ = "notifications"
    __table_args__ = (UniqueConstraint("request_id", "kind"),
                      Index("ix_notifications_due", "state", "next_attempt_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    notification_id: Mapped[str] = mapped_column(String(40), unique=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"))
    kind: Mapped[str] = mapped_column(String(20))
    channel: Mapped[str] = mapped_column(String(20))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(400))  # email: the one we sent
    state: Mapped[str] = mapped_column(String(20), default=NotificationState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=1)  # also the row's version
    last_error: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # JSON: what to tell (amount, currency, refund number, reason, card's last 4), rendered
    # with the current templates when sent; subject and body keep what was sent.
    facts: Mapped[str | None] = mapped_column(Text)
