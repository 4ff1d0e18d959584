"""The durable work queue: requests, cases, refund intents, audit trail, locks.

Everything a bot learns is written here before it acts on it, so a crash at any
point leaves enough on disk for the next run to carry on without paying twice.
SQLite by default; any SQLAlchemy URL (PostgreSQL for several runners) works,
because every hand-over between workers is a conditional UPDATE checked by its
row count, never a read-then-write.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import CursorResult, Engine, Result
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from bots.models import Quarantined, RefundRequest

INSERT_BATCH = 500  # requests per transaction in Queue.add_requests


def utcnow() -> datetime:
    return datetime.now(UTC)


def rowcount(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE matched.

    `Session.execute` is typed as returning a plain `Result`; for a DML statement it is
    always a `CursorResult`, the one that carries the count.
    """
    return cast("CursorResult[Any]", result).rowcount


class Money(TypeDecorator[Decimal]):
    """Decimal stored as text: exact on every backend, no float on the way."""

    impl = String(32)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Any) -> str | None:
        return None if value is None else str(value)

    def process_result_value(self, value: str | None, dialect: Any) -> Decimal | None:
        return None if value is None else Decimal(value)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on SQLite too (which stores naive values)."""

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
    QUEUED = "queued"  # waiting for a worker (maybe not before next_attempt_at)
    PROCESSING = "processing"  # leased by one worker until locked_until
    DONE = "done"  # finished with an outcome (refunded, partial, rejected)
    ESCALATED = "escalated"  # waiting for a human decision
    FAILED = "failed"  # system exceptions exhausted the retries: ops must look
    MERGED = "merged"  # folded into another case for the same order

    OPEN = (QUEUED, PROCESSING)


class Case(Base):
    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_key: Mapped[str] = mapped_column(String(200), unique=True)
    order_number: Mapped[str | None] = mapped_column(String(64), index=True)
    customer_email: Mapped[str | None] = mapped_column(String(320))
    customer_name: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20), index=True, default=CaseState.QUEUED)
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
    locked_by: Mapped[str | None] = mapped_column(String(100))
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
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
    run_id: Mapped[str | None] = mapped_column(String(64))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    case: Mapped[Case] = relationship(back_populates="requests")


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
    """Append-only: rows are inserted, never updated or deleted."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(100))
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str | None] = mapped_column(String(20))
    event: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="")


class IntentState:
    PENDING = "pending"  # written before the submit click; outcome unknown until verified
    CONFIRMED = "confirmed"  # the portal showed a refund number for it
    ABSENT = "absent"  # verified not to exist in the portal: safe to submit anew


class RefundIntent(Base):
    __tablename__ = "refund_intents"

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


def case_ref(case_id: int) -> str:
    return f"C-{case_id:06d}"


def case_key_for(req: RefundRequest) -> str:
    """Requests for the same order are one case, whatever channel they came on.

    Without an order number, the customer's email (or phone) keys the case until
    processing finds the order, then it is merged into that order's case.
    """
    if req.order_number:
        return f"order:{req.order_number.upper()}"
    if req.customer_email:
        return f"customer:{req.customer_email.lower()}"
    return f"contact:{req.channel}:{req.source_id}"


class LockHeld(Exception):
    """Another runner holds the lock."""


class Queue:
    """Producer/consumer API over the queue database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        Base.metadata.create_all(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            yield s

    # -- producer side -------------------------------------------------------------

    def add_request(self, req: RefundRequest, run_id: str | None = None) -> tuple[int, bool]:
        """Store a request and attach it to its case. Returns (case id, was it new).

        Idempotent by (channel, source_id): re-reading a source adds nothing.
        """
        with self.session() as s:
            existing = s.scalar(
                select(RequestRow).where(
                    RequestRow.channel == req.channel, RequestRow.source_id == req.source_id
                )
            )
            if existing is not None:
                return existing.case_id, False
            key = case_key_for(req)
            case = s.scalar(select(Case).where(Case.case_key == key))
            if case is None:
                case = _new_case(req, key)
                s.add(case)
                s.flush()
                _audit(s, case, run_id, "intake", None, CaseState.QUEUED, "case_opened",
                       _contact_detail("first", req))
            else:
                _merge_request_into(case, req)
                _audit(s, case, run_id, "intake", case.state, case.state, "contact_linked",
                       _contact_detail("another", req))
            s.add(_request_row(req, case.id, run_id))
            return case.id, True

    def add_requests(self, reqs: Sequence[RefundRequest], run_id: str | None = None,
                     batch: int = INSERT_BATCH) -> list[tuple[int, bool]]:
        """`add_request` for many requests, `batch` of them per transaction.

        The same rows, ids, audit trail and answers as calling `add_request` on each
        in turn (a request repeated within the list is "already seen" the second
        time), but a commit costs a disk flush: one per request caps intake at a few
        hundred requests a second. A crash loses at most the open batch, which the
        next run reads again (sources are re-readable, and the queue is idempotent).
        """
        if batch < 1:
            raise ValueError("batch must be at least 1")
        results: list[tuple[int, bool]] = []
        for start in range(0, len(reqs), batch):
            results += self._add_batch(reqs[start:start + batch], run_id)
        return results

    def _add_batch(self, reqs: Sequence[RefundRequest], run_id: str | None
                   ) -> list[tuple[int, bool]]:
        """One transaction: every request decided in order as `add_request` would, then stored."""
        with self.session() as s:
            plan = _BatchPlan({**_stored_sources(s, reqs)},
                              _cases_by_key(s, {case_key_for(r) for r in reqs}))
            for req in reqs:
                plan.add(req)
            _insert_cases(s, plan.opened)
            _insert_contacts(s, plan.added, run_id)
            return [(c if isinstance(c, int) else c.id, new) for c, new in plan.answers]

    def add_quarantined(self, item: Quarantined, run_id: str | None = None) -> bool:
        with self.session() as s:
            exists = s.scalar(
                select(QuarantineRow.id).where(
                    QuarantineRow.channel == item.channel, QuarantineRow.source_id == item.source_id
                )
            )
            if exists is not None:
                return False
            s.add(QuarantineRow(channel=item.channel, source_id=item.source_id,
                                source_ref=item.source_ref, reason=item.reason,
                                excerpt=item.excerpt, run_id=run_id))
            return True

    # -- consumer side -------------------------------------------------------------

    def claim(self, worker: str, lease_seconds: int, run_id: str | None = None,
              exclude: Collection[int] = ()) -> Case | None:
        """Lease the next due case to `worker`, or None when nothing is due.

        A case left `processing` by a crashed worker becomes claimable again when
        its lease runs out; the processor then verifies any pending refund intent
        before doing anything else.
        """
        now = utcnow()
        due = or_(
            (Case.state == CaseState.QUEUED)
            & or_(Case.next_attempt_at.is_(None), Case.next_attempt_at <= now),
            (Case.state == CaseState.PROCESSING) & (Case.locked_until < now),
        )
        with self.session() as s:
            query = select(Case.id).where(due)
            if exclude:  # a dry run releases what it decided: do not decide it twice
                query = query.where(Case.id.not_in(list(exclude)))
            candidates = s.scalars(query.order_by(Case.id).limit(20)).all()
            for case_id in candidates:
                won = rowcount(s.execute(
                    update(Case)
                    .where(Case.id == case_id, due)
                    .values(state=CaseState.PROCESSING, locked_by=worker,
                            locked_until=now + timedelta(seconds=lease_seconds),
                            attempts=Case.attempts + 1)
                    .execution_options(synchronize_session=False)
                ))
                if won == 1:
                    case = s.get(Case, case_id, populate_existing=True)
                    assert case is not None
                    _audit(s, case, run_id, worker, CaseState.QUEUED, CaseState.PROCESSING,
                           "claimed", f"attempt {case.attempts}")
                    _ = case.requests  # load while the session is open
                    return case
        return None

    def recover_orphans(self, *, actor: str, run_id: str | None) -> int:
        """Release every case still leased by a dead run. Call only holding the process lock.

        With the lock held no other processing run is alive, so a `processing` case
        belongs to a crashed one: waiting for its lease to expire would only delay
        it. Its refund intents are verified by the processor before anything else.
        """
        with self.session() as s:
            orphans = list(s.scalars(select(Case).where(Case.state == CaseState.PROCESSING)))
            for case in orphans:
                case.state, case.locked_by, case.locked_until = CaseState.QUEUED, None, None
                _audit(s, case, run_id, actor, CaseState.PROCESSING, CaseState.QUEUED,
                       "recovered", "left in processing by a run that stopped without finishing")
            return len(orphans)

    def next_due_at(self) -> datetime | None:
        """When the earliest waiting retry becomes due (None: nothing waits)."""
        with self.session() as s:
            return s.scalar(
                select(func.min(Case.next_attempt_at)).where(
                    Case.state == CaseState.QUEUED, Case.next_attempt_at.is_not(None)
                )
            )

    def pending_count(self) -> int:
        with self.session() as s:
            return s.scalar(
                select(func.count()).select_from(Case).where(Case.state.in_(CaseState.OPEN))
            ) or 0

    def finish(self, case_id: int, *, state: str, outcome: str | None, reason: str,
               actor: str, run_id: str | None, **fields: Any) -> None:
        with self.session() as s:
            case = s.get(Case, case_id)
            assert case is not None
            before = case.state
            case.state, case.outcome, case.reason = state, outcome, reason
            case.locked_by = case.locked_until = case.next_attempt_at = None
            for name, value in fields.items():
                setattr(case, name, value)
            _audit(s, case, run_id, actor, before, state, outcome or state, reason)

    def retry_later(self, case_id: int, *, delay: float, error: str, actor: str,
                    run_id: str | None) -> None:
        with self.session() as s:
            case = s.get(Case, case_id)
            assert case is not None
            case.state = CaseState.QUEUED
            case.last_error = error
            case.locked_by = case.locked_until = None
            case.next_attempt_at = utcnow() + timedelta(seconds=delay)
            _audit(s, case, run_id, actor, CaseState.PROCESSING, CaseState.QUEUED,
                   "retry_scheduled", f"in {delay:.1f}s after: {error}")

    def release(self, case_id: int, *, actor: str, run_id: str | None, why: str) -> None:
        """Give a leased case back untouched (run stopping): it stays due at once."""
        with self.session() as s:
            case = s.get(Case, case_id)
            assert case is not None
            case.state = CaseState.QUEUED
            case.attempts = max(0, case.attempts - 1)
            case.locked_by = case.locked_until = None
            _audit(s, case, run_id, actor, CaseState.PROCESSING, CaseState.QUEUED, "released", why)

    def note(self, case_id: int, *, event: str, detail: str, actor: str,
             run_id: str | None) -> None:
        with self.session() as s:
            case = s.get(Case, case_id)
            assert case is not None
            _audit(s, case, run_id, actor, case.state, case.state, event, detail)

    def merge(self, case_id: int, into_key: str, *, actor: str, run_id: str | None) -> int | None:
        """Fold a customer-keyed case into the case for its order, if there is one."""
        with self.session() as s:
            case = s.get(Case, case_id)
            target = s.scalar(select(Case).where(Case.case_key == into_key))
            if case is None or target is None or target.id == case_id:
                return None
            for row in list(case.requests):
                row.case_id = target.id
            case.state, case.merged_into = CaseState.MERGED, target.id
            case.locked_by = case.locked_until = None
            _audit(s, case, run_id, actor, CaseState.PROCESSING, CaseState.MERGED, "merged",
                   f"same order as {target.ref}")
            _audit(s, target, run_id, actor, target.state, target.state, "contact_linked",
                   f"contacts of {case.ref} merged in")
            return target.id

    def record_decision(self, case_id: int, facts_json: str) -> None:
        """Keep what the bot saw and decided (see bots.decide.snapshot), before acting on it."""
        with self.session() as s:
            case = s.get(Case, case_id)
            assert case is not None
            case.decision = facts_json

    def human_decision(self, case_id: int, *, decision: str, amount: Decimal | None, agent: str,
                       comment: str, run_id: str | None) -> str:
        """Apply a human's decision on an escalated case, once.

        approve/partial: the case is queued again with the amount the human set (or the
        bot's proposal) and the next processing run pays exactly that, capped at what
        remains refundable. reject: the case ends, with the agent's words as reason.
        Returns "applied", "already applied" or "not escalated".
        """
        decision = decision.strip().lower()
        if decision not in ("approve", "partial", "reject"):
            raise ValueError(f"unknown decision {decision!r}")
        with self.session() as s:
            case = s.get(Case, case_id)
            if case is None:
                return "not escalated"
            if _decided_since_escalation(s, case_id, decision):
                return "already applied"
            if case.state != CaseState.ESCALATED:
                return "not escalated"
            case.human_decision, case.human_agent, case.human_comment = decision, agent, comment
            detail = f"{decision} by {agent}" + (f" ({amount})" if amount is not None else "")
            detail += f": {comment}" if comment else ""
            if decision == "reject":
                case.state, case.outcome = CaseState.DONE, "rejected"
                case.reason = f"Rejected by {agent}: {comment}" if comment else \
                    f"Rejected by {agent}."
                case.approved_amount = Decimal("0.00")
            else:
                case.state, case.next_attempt_at, case.attempts = CaseState.QUEUED, None, 0
                if amount is not None:
                    case.approved_amount = amount
            _audit(s, case, run_id, agent, CaseState.ESCALATED, case.state, "human_decision",
                   detail)
            return "applied"

    def assign(self, case_id: int, *, agent: str, by: str, comment: str,
               run_id: str | None) -> bool:
        """Hand an escalated case to another agent (the audit says who and why)."""
        with self.session() as s:
            case = s.get(Case, case_id)
            if case is None or case.state != CaseState.ESCALATED:
                return False
            before, case.assigned_to = case.assigned_to, agent
            _audit(s, case, run_id, by, case.state, case.state, "reassigned",
                   f"{before or 'unassigned'} -> {agent}" + (f": {comment}" if comment else ""))
            return True

    def retry(self, case_id: int, *, agent: str, comment: str, run_id: str | None) -> bool:
        """Put a case the bot gave up on (system failures) back in the queue, attempts reset.

        For after an outage: the next processing run takes it up again, and settles
        any refund a failed attempt may have left in the portal before paying.
        """
        with self.session() as s:
            case = s.get(Case, case_id)
            if case is None or case.state != CaseState.FAILED:
                return False
            case.state, case.next_attempt_at, case.attempts = CaseState.QUEUED, None, 0
            case.outcome = None
            _audit(s, case, run_id, agent, CaseState.FAILED, CaseState.QUEUED, "retry_requested",
                   f"by {agent}" + (f": {comment}" if comment else "")
                   + f" (last error: {case.last_error})")
            return True

    def failed_case_ids(self) -> list[int]:
        with self.session() as s:
            return list(s.scalars(select(Case.id).where(Case.state == CaseState.FAILED)
                                  .order_by(Case.id)))

    def set_order(self, case_id: int, order_number: str) -> None:
        with self.session() as s:
            case = s.get(Case, case_id)
            assert case is not None
            case.order_number = order_number

    # -- refund intents (exactly-once) ----------------------------------------------

    def open_intent(self, case_id: int, *, order_number: str, transaction_id: str,
                    amount: Decimal, run_id: str | None) -> RefundIntent:
        """Durably record that we are about to submit: committed before the click."""
        key = f"{case_ref(case_id).replace('-', '')}-{secrets.token_hex(4)}"
        with self.session() as s:
            intent = RefundIntent(case_id=case_id, key=key, order_number=order_number,
                                  transaction_id=transaction_id, amount=amount, run_id=run_id)
            s.add(intent)
            case = s.get(Case, case_id)
            assert case is not None
            _audit(s, case, run_id, "bot", case.state, case.state, "intent_recorded",
                   f"refund {amount} on {transaction_id}, key {key}")
        return intent

    def resolve_intent(self, intent_id: int, *, state: str, refund_number: str | None,
                       run_id: str | None) -> None:
        with self.session() as s:
            intent = s.get(RefundIntent, intent_id)
            assert intent is not None
            intent.state, intent.refund_number = state, refund_number
            intent.resolved_at, intent.resolved_run_id = utcnow(), run_id
            case = s.get(Case, intent.case_id)
            assert case is not None
            _audit(s, case, run_id, "bot", case.state, case.state, f"intent_{state}",
                   f"key {intent.key}" + (f", refund {refund_number}" if refund_number else ""))

    def intents(self, case_id: int) -> list[RefundIntent]:
        with self.session() as s:
            return list(s.scalars(
                select(RefundIntent)
                .where(RefundIntent.case_id == case_id)
                .order_by(RefundIntent.id)
            ))

    def intents_for_run(self, run_id: str) -> list[RefundIntent]:
        with self.session() as s:
            return list(s.scalars(
                select(RefundIntent)
                .where(or_(RefundIntent.run_id == run_id, RefundIntent.resolved_run_id == run_id))
                .order_by(RefundIntent.id)
            ))

    def customer_refunds(self, email: str, *, exclude_case: int) -> list[tuple[datetime, Decimal]]:
        """The bot's confirmed refunds for a customer (by the case's email), other cases."""
        with self.session() as s:
            rows = s.execute(
                select(RefundIntent.resolved_at, RefundIntent.amount)
                .join(Case, Case.id == RefundIntent.case_id)
                .where(RefundIntent.state == IntentState.CONFIRMED,
                       func.lower(Case.customer_email) == email.lower(),
                       Case.id != exclude_case)
            ).all()
            return [(at, amount) for at, amount in rows if at is not None]

    def refunds_since(self, since: datetime) -> int:
        """How many refunds the bot confirmed store-wide since a moment."""
        with self.session() as s:
            return s.scalar(
                select(func.count()).select_from(RefundIntent).where(
                    RefundIntent.state == IntentState.CONFIRMED, RefundIntent.resolved_at >= since)
            ) or 0

    def intent_keys(self) -> set[str]:
        with self.session() as s:
            return set(s.scalars(select(RefundIntent.key)))

    # -- locks -----------------------------------------------------------------------

    def acquire_lock(self, name: str, owner: str, ttl_seconds: int) -> bool:
        """Take the lock if free, expired, or held by a dead process here; renew it if ours.

        Owners are "host:pid:...": a holder on this host whose pid is gone crashed
        (SIGKILL, power loss of a container), so its lock is taken over at once
        instead of after the lease; holders on other hosts are trusted until expiry.
        """
        now = utcnow()
        expires = now + timedelta(seconds=ttl_seconds)
        with self.session() as s:
            row = s.get(LockRow, name)
            stale = row.owner if row is not None and holder_is_dead(row.owner) else None
            free = or_(LockRow.expires_at < now, LockRow.owner == owner)
            if stale is not None:
                free = or_(free, LockRow.owner == stale)
            taken = rowcount(s.execute(
                update(LockRow)
                .where(LockRow.name == name, free)
                .values(owner=owner, expires_at=expires)
                .execution_options(synchronize_session=False)
            ))
            if taken:
                return True
        try:
            with self.session() as s:
                if s.get(LockRow, name) is not None:
                    return False
                s.add(LockRow(name=name, owner=owner, expires_at=expires))
            return True
        except Exception:  # lost an insert race to another runner
            return False

    def release_lock(self, name: str, owner: str) -> None:
        with self.session() as s:
            row = s.get(LockRow, name)
            if row is not None and row.owner == owner:
                s.delete(row)

    def lock_owner(self, name: str) -> str | None:
        with self.session() as s:
            row = s.get(LockRow, name)
            return row.owner if row is not None and row.expires_at >= utcnow() else None

    # -- runs and reporting -----------------------------------------------------------

    def start_run(self, run_id: str, command: str) -> None:
        with self.session() as s:
            s.add(RunRow(run_id=run_id, command=command))

    def finish_run(self, run_id: str, status: str, stats: dict[str, Any]) -> None:
        with self.session() as s:
            run = s.get(RunRow, run_id)
            if run is not None:
                run.finished_at, run.status = utcnow(), status
                run.stats = json.dumps(stats, default=str)

    def get_run(self, run_id: str) -> RunRow | None:
        with self.session() as s:
            return s.get(RunRow, run_id)

    def last_run_id(self) -> str | None:
        with self.session() as s:
            return s.scalar(select(RunRow.run_id).order_by(RunRow.started_at.desc()).limit(1))

    def cases_touched(self, run_id: str) -> list[Case]:
        """Cases with any audit event in the run, with their requests loaded."""
        with self.session() as s:
            ids = select(AuditRow.case_id).where(AuditRow.run_id == run_id).distinct()
            cases = list(s.scalars(
                select(Case).where(Case.id.in_(ids), Case.state != CaseState.MERGED)
                .order_by(Case.id)
            ))
            for case in cases:
                _ = case.requests
            return cases

    def quarantined(self, run_id: str | None = None) -> list[QuarantineRow]:
        with self.session() as s:
            q = select(QuarantineRow).order_by(QuarantineRow.id)
            if run_id is not None:
                q = q.where(QuarantineRow.run_id == run_id)
            return list(s.scalars(q))

    def audit_trail(self, case_id: int) -> list[AuditRow]:
        with self.session() as s:
            return list(s.scalars(
                select(AuditRow).where(AuditRow.case_id == case_id).order_by(AuditRow.id)
            ))

    def cases(self, states: Sequence[str] | None = None) -> list[Case]:
        with self.session() as s:
            q = select(Case).order_by(Case.id)
            if states:
                q = q.where(Case.state.in_(states))
            cases = list(s.scalars(q))
            for case in cases:
                _ = case.requests
            return cases

    def get_case(self, case_id: int) -> Case | None:
        with self.session() as s:
            case = s.get(Case, case_id)
            if case is not None:
                _ = case.requests
            return case


def lock_owner_id(tag: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{tag}"


def holder_is_dead(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the report read while workers write; busy_timeout makes writers queue
    # up instead of failing with "database is locked" when several processes share it.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


@dataclass
class _BatchPlan:
    """What `add_request` would do with each request of a batch, decided in memory.

    `seen` holds every stored source (channel, source id) of the batch and `cases`
    every stored case of its keys, so no decision needs the database.
    """

    seen: dict[tuple[str, str], Case | int]  # -> its case (or stored case id)
    cases: dict[str, Case]  # case key -> stored case, or one opened in this batch
    answers: list[tuple[Case | int, bool]] = field(default_factory=list)
    added: list[tuple[RefundRequest, Case, bool]] = field(default_factory=list)  # opened it?
    opened: list[Case] = field(default_factory=list)  # new, not in the session

    def add(self, req: RefundRequest) -> None:
        source = (req.channel, req.source_id)
        if source in self.seen:
            self.answers.append((self.seen[source], False))
            return
        key = case_key_for(req)
        is_new = key not in self.cases
        if is_new:
            self.cases[key] = _new_case(req, key)
            self.opened.append(self.cases[key])
        else:
            _merge_request_into(self.cases[key], req)
        self.seen[source] = case = self.cases[key]
        self.answers.append((case, True))
        self.added.append((req, case, is_new))


def _new_case(req: RefundRequest, key: str) -> Case:
    return Case(case_key=key, order_number=req.order_number, customer_email=req.customer_email,
                customer_name=req.customer_name, requested_amount=req.requested_amount,
                currency=req.currency, state=CaseState.QUEUED)


# What a new case is opened with (`_new_case`) and what a repeat contact may fill in.
_CASE_FIELDS = ("case_key", "order_number", "customer_email", "customer_name",
                "requested_amount", "currency", "state")


def _insert_cases(s: Session, cases: list[Case]) -> None:
    """The batch's new cases in one INSERT, then their ids, found by their unique key.

    Flushing them as ORM objects costs one statement per case (the ORM reads each
    new id back); the key lookup is one query and works alike on every backend.
    """
    if not cases:
        return
    s.execute(insert(Case), [{f: getattr(c, f) for f in _CASE_FIELDS} for c in cases],
              execution_options={"render_nulls": True})
    ids: dict[str, int] = {}
    for chunk in _chunked([c.case_key for c in cases]):
        rows = s.execute(select(Case.case_key, Case.id).where(Case.case_key.in_(chunk)))
        ids.update({key: case_id for key, case_id in rows})
    for case in cases:
        case.id = ids[case.case_key]


def _contact_detail(which: str, req: RefundRequest) -> str:
    return f"{which} contact via {req.channel} ({req.source_ref or req.source_id})"


_IN_CHUNK = 500  # bound parameters per IN (...): old SQLite builds allow 999 in all


def _stored_sources(s: Session, reqs: Sequence[RefundRequest]) -> dict[tuple[str, str], int]:
    """(channel, source id) -> case id of the requests already stored, one query a chunk."""
    by_channel: dict[str, set[str]] = {}
    for req in reqs:
        by_channel.setdefault(req.channel, set()).add(req.source_id)
    found: dict[tuple[str, str], int] = {}
    for channel, ids in by_channel.items():
        for chunk in _chunked(sorted(ids)):
            rows = s.execute(select(RequestRow.source_id, RequestRow.case_id).where(
                RequestRow.channel == channel, RequestRow.source_id.in_(chunk)))
            found.update({(channel, source_id): case_id for source_id, case_id in rows})
    return found


def _cases_by_key(s: Session, keys: set[str]) -> dict[str, Case]:
    found: dict[str, Case] = {}
    for chunk in _chunked(sorted(keys)):
        found.update({c.case_key: c for c in s.scalars(select(Case).where(
            Case.case_key.in_(chunk)))})
    return found


def _chunked(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start:start + _IN_CHUNK]


def _request_row(req: RefundRequest, case_id: int, run_id: str | None) -> RequestRow:
    return RequestRow(**_request_values(req, case_id, run_id))


def _request_values(req: RefundRequest, case_id: int, run_id: str | None) -> dict[str, Any]:
    return dict(
        channel=req.channel, source_id=req.source_id, source_ref=req.source_ref,
        received_at=req.received_at, customer_email=req.customer_email,
        customer_name=req.customer_name, customer_phone=req.customer_phone,
        order_number=req.order_number, requested_amount=req.requested_amount,
        currency=req.currency, reason_category=req.reason_category,
        reason_text=req.reason_text, reply_to=req.reply_to, customer_handle=req.customer_handle,
        auth_results=req.auth_results, in_reply_to=req.in_reply_to, run_id=run_id,
        case_id=case_id,
    )


def _insert_contacts(s: Session, added: list[tuple[RefundRequest, Case, bool]],
                     run_id: str | None) -> None:
    """The audit rows and request rows of a batch, in order, as two multi-row INSERTs.

    The same rows `_audit` and `_request_row` add one object at a time; building
    ORM objects for them was half the cost of a batch.
    """
    if not added:  # an empty parameter list would insert one row of defaults
        return
    audits, rows = [], []
    for req, case, opened in added:
        before, event_name, which = ((None, "case_opened", "first") if opened
                                     else (case.state, "contact_linked", "another"))
        audits.append(dict(case_id=case.id, run_id=run_id, actor="intake", from_state=before,
                           to_state=case.state, event=event_name,
                           detail=_contact_detail(which, req)))
        rows.append(_request_values(req, case.id, run_id))
    # NULLs written out: rows that leave different columns empty are still one statement.
    nulls = {"render_nulls": True}
    s.execute(insert(AuditRow), audits, execution_options=nulls)
    s.execute(insert(RequestRow), rows, execution_options=nulls)


def _merge_request_into(case: Case, req: RefundRequest) -> None:
    """A repeat contact fills what the case did not know yet; it never lowers the ask."""
    case.customer_email = case.customer_email or req.customer_email
    case.customer_name = case.customer_name or req.customer_name
    case.currency = case.currency or req.currency
    if req.requested_amount is not None and (
        case.requested_amount is None or req.requested_amount > case.requested_amount
    ):
        case.requested_amount = req.requested_amount


def _decided_since_escalation(s: Session, case_id: int, decision: str) -> bool:
    """Has this decision been applied since the case last entered `escalated`?

    Importing the same decisions file twice must apply nothing the second time, but a
    case escalated again later (e.g. after an approval without an amount) can be
    decided again.
    """
    trail = list(s.scalars(select(AuditRow).where(AuditRow.case_id == case_id)
                           .order_by(AuditRow.id)))
    entered = max((i for i, a in enumerate(trail) if a.to_state == CaseState.ESCALATED
                   and a.from_state != CaseState.ESCALATED), default=-1)
    return any(a.event == "human_decision" and a.detail.split(" ", 1)[0] == decision
               for a in trail[entered + 1:])


def _audit(s: Session, case: Case, run_id: str | None, actor: str, before: str | None,
           after: str | None, event_name: str, detail: str) -> None:
    s.add(AuditRow(case_id=case.id, run_id=run_id, actor=actor, from_state=before,
                   to_state=after, event=event_name, detail=detail))
