"""The open-break register: a reconciliation break lives here until a person settles it.

A break is anything the reconciliation could not match (a duplicate refund, a refund
nobody recorded, a missing one...). The report of the run that first sees it records it;
every later report carries it forward with its age until someone resolves it or writes it
off with `refund-bots breaks resolve` (agent and comment required, like case decisions).
Every change is an audit record (subject ``break:B-000003``) in the hash-chained trail.

Breaks are keyed by what they are *about* (an intent key, a portal refund id, a charge),
so the same break seen again is the same row, whatever its status turned into. A resolved
break seen again stays resolved: the analyst decided about exactly that refund. A break
whose subject later reconciles cleanly (a pending refund the bot has since recorded) is
closed by the reconciliation itself, and the trail says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Index, Integer, String, Text, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from bots.queue.audit import audit, lock_chain
from bots.queue.base import Store
from bots.queue.schema import Base, Case, Money, RefundIntent, UTCDateTime, utcnow


class BreakState:
    OPEN = "open"
    INVESTIGATING = "investigating"
    RESOLVED = "resolved"
    WRITTEN_OFF = "written off"

    LIVE = (OPEN, INVESTIGATING)
    CLOSED = (RESOLVED, WRITTEN_OFF)
    ALL = (OPEN, INVESTIGATING, RESOLVED, WRITTEN_OFF)


class BreakRow(Base):
    __tablename__ = "breaks"
    __table_args__ = (Index("ix_breaks_state", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    break_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(60))  # the reconciliation status last seen
    state: Mapped[str] = mapped_column(String(20), default=BreakState.OPEN)
    case_ref: Mapped[str | None] = mapped_column(String(20))
    order_number: Mapped[str | None] = mapped_column(String(64))
    reference: Mapped[str | None] = mapped_column(String(200))
    refund_id: Mapped[str | None] = mapped_column(String(64))
    transaction_id: Mapped[str | None] = mapped_column(String(64))
    currency: Mapped[str | None] = mapped_column(String(3))
    ledger_amount: Mapped[Decimal | None] = mapped_column(Money)
    portal_amount: Mapped[Decimal | None] = mapped_column(Money)
    business_day: Mapped[str | None] = mapped_column(String(10))  # YYYY-MM-DD
    note: Mapped[str] = mapped_column(Text, default="")
    owner: Mapped[str | None] = mapped_column(String(100))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    first_seen_run: Mapped[str | None] = mapped_column(String(64))
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_run: Mapped[str | None] = mapped_column(String(64))
    resolution: Mapped[str | None] = mapped_column(Text)
    resolved_by: Mapped[str | None] = mapped_column(String(100))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def ref(self) -> str:
        return break_ref(self.id)

    @property
    def is_live(self) -> bool:
        return self.state in BreakState.LIVE

    def age_days(self, now: datetime | None = None) -> int:
        return max(((now or utcnow()) - self.first_seen_at).days, 0)

    @property
    def amount(self) -> Decimal | None:
        return self.portal_amount if self.portal_amount is not None else self.ledger_amount


def break_ref(break_id: int) -> str:
    return f"B-{break_id:06d}"


def break_id(ref: str) -> int:
    """`B-000003` or `3` -> 3; ValueError for anything else."""
    return int(ref.strip().upper().removeprefix("B-"))


@dataclass(frozen=True)
class Sighting:
    """One unmatched reconciliation row, as the register needs it."""

    key: str
    kind: str
    case_ref: str | None
    order_number: str
    reference: str
    refund_id: str | None
    transaction_id: str
    currency: str
    ledger_amount: Decimal | None
    portal_amount: Decimal | None
    day: date | None
    note: str


@dataclass(frozen=True)
class BreakUpdate:
    """What recording a reconciliation did to the register."""

    opening: list[BreakRow]  # live before this reconciliation
    new: list[BreakRow]
    closed_by_match: list[BreakRow]
    states: dict[str, BreakRow]  # break key -> its row now, for every sighting


class BreakError(ValueError):
    """A change to a break that is refused: the message says why (shown to the user)."""


class Breaks(Store):
    def record_breaks(self, run_id: str, sightings: Sequence[Sighting],
                      matched_keys: Iterable[str]) -> BreakUpdate:
        """Register every break a reconciliation saw; close live ones it now matched.

        One register writer at a time: several runners' reports can see the same new
        break at once, and each must find the other's row, not add it twice.
        """
        now = utcnow()
        with self.session() as s:
            lock_chain(s)
            opening = list(s.scalars(select(BreakRow).where(BreakRow.state.in_(BreakState.LIVE))
                                     .order_by(BreakRow.id)))
            live_keys = {b.break_key for b in opening}
            matched_keys = [k for k in matched_keys if k in live_keys]
            known = _by_key(s, [x.key for x in sightings] + matched_keys)
            new, states = [], {}
            for x in sightings:
                row = known.get(x.key)
                if row is None:
                    row = _new_break(x, run_id, now)
                    s.add(row)
                    s.flush()
                    known[x.key] = row
                    new.append(row)
                    audit(s, None, run_id, "reconciliation", None, row.state, "break_opened",
                          f"{row.ref} {x.kind}: {x.note}", subject=f"break:{row.ref}")
                else:
                    _seen_again(row, x, run_id, now)
                states[x.key] = row
            closed = []
            for key in matched_keys:
                row = known.get(key)
                if row is not None and row.is_live and key not in states:
                    before, row.state = row.state, BreakState.RESOLVED
                    row.resolution = f"matched by the reconciliation of run {run_id}"
                    row.resolved_by, row.resolved_at = "reconciliation", now
                    audit(s, None, run_id, "reconciliation", before, row.state,
                          "break_resolved", f"{row.ref}: {row.resolution}",
                          subject=f"break:{row.ref}")
                    closed.append(row)
        return BreakUpdate(opening, new, closed, states)

    def reconciliation_ledger(self, *, since: datetime, run_id: str, keys: Iterable[str],
                              refund_numbers: Iterable[str]) -> list[LedgerFacts]:
        """Every intent the portal's refunds of a period can be about, with its case.

        The intents opened since `since` (any run), those this run created or settled,
        and those whose key or refund number the portal's listing mentions (a refund
        landing long after its run is still the bot's, and may be its second).
        """
        with self.session() as s:
            found: dict[int, RefundIntent] = {}
            base = select(RefundIntent)
            for intent in s.scalars(base.where(or_(
                    RefundIntent.created_at >= since, RefundIntent.run_id == run_id,
                    RefundIntent.resolved_run_id == run_id))):
                found[intent.id] = intent
            for column, values in ((RefundIntent.key, keys),
                                   (RefundIntent.refund_number, refund_numbers)):
                unique = sorted(set(values))
                for start in range(0, len(unique), 500):
                    for intent in s.scalars(base.where(column.in_(unique[start:start + 500]))):
                        found[intent.id] = intent
            cases = _cases(s, {i.case_id for i in found.values()})
            return [LedgerFacts(i, cases[i.case_id]) for i in
                    sorted(found.values(), key=lambda i: i.id)]

    def breaks(self, states: Sequence[str] | None = None) -> list[BreakRow]:
        with self.session() as s:
            q = select(BreakRow).order_by(BreakRow.id)
            if states:
                q = q.where(BreakRow.state.in_(list(states)))
            return list(s.scalars(q))

    def live_breaks(self) -> list[BreakRow]:
        return self.breaks(BreakState.LIVE)

    def get_break(self, ref: str) -> BreakRow | None:
        with self.session() as s:
            return s.get(BreakRow, break_id(ref))

    def assign_break(self, ref: str, *, owner: str, agent: str, comment: str) -> BreakRow:
        """Give a live break an owner; it is then being investigated."""
        _need(agent, comment)
        if not owner.strip():
            raise BreakError("name the owner (--to)")
        with self.session() as s:
            row = _live(s, ref)
            before = row.state
            row.owner, row.state = owner.strip(), BreakState.INVESTIGATING
            audit(s, None, None, agent.strip(), before, row.state, "break_assigned",
                  f"{row.ref} -> {row.owner}: {comment.strip()}", subject=f"break:{row.ref}")
            return row

    def resolve_break(self, ref: str, *, agent: str, comment: str,
                      write_off: bool = False) -> BreakRow:
        """Settle a live break: resolved (explained/fixed) or written off (the money is lost)."""
        _need(agent, comment)
        with self.session() as s:
            row = _live(s, ref)
            before = row.state
            row.state = BreakState.WRITTEN_OFF if write_off else BreakState.RESOLVED
            row.resolution, row.resolved_by = comment.strip(), agent.strip()
            row.resolved_at = utcnow()
            audit(s, None, None, agent.strip(), before, row.state,
                  "break_written_off" if write_off else "break_resolved",
                  f"{row.ref}: {comment.strip()}", subject=f"break:{row.ref}")
            return row


@dataclass(frozen=True)
class LedgerFacts:
    """An intent and the case it pays (currency, approval, when the case began)."""

    intent: RefundIntent
    case: Case


def _cases(s: Session, ids: set[int]) -> dict[int, Case]:
    out: dict[int, Case] = {}
    unique = sorted(ids)
    for start in range(0, len(unique), 500):
        out.update({c.id: c for c in s.scalars(select(Case).where(
            Case.id.in_(unique[start:start + 500])))})
    return out


def _need(agent: str, comment: str) -> None:
    if not agent.strip():
        raise BreakError("say who you are (--agent): the audit trail records it")
    if not comment.strip():
        raise BreakError("say why (--comment/-m): the audit trail records it")


def _live(s: Session, ref: str) -> BreakRow:
    """The live break `ref`, read under the register's lock: a report that closes it
    meanwhile makes a person's assign or resolve a clear error, not an overwrite."""
    lock_chain(s)
    try:
        row = s.get(BreakRow, break_id(ref))
    except ValueError:
        raise BreakError(f"not a break reference: {ref!r} (B-000003)") from None
    if row is None:
        raise BreakError(f"no break {ref}")
    if not row.is_live:
        raise BreakError(f"{row.ref} is {row.state} already (by {row.resolved_by}: "
                         f"{row.resolution})")
    return row


def _by_key(s: Session, keys: list[str]) -> dict[str, BreakRow]:
    found: dict[str, BreakRow] = {}
    unique = sorted(set(keys))
    for start in range(0, len(unique), 500):
        chunk = unique[start:start + 500]
        found.update({b.break_key: b for b in s.scalars(
            select(BreakRow).where(BreakRow.break_key.in_(chunk)))})
    return found


def _new_break(x: Sighting, run_id: str, now: datetime) -> BreakRow:
    return BreakRow(break_key=x.key, kind=x.kind, state=BreakState.OPEN, case_ref=x.case_ref,
                    order_number=x.order_number, reference=x.reference[:200],
                    refund_id=x.refund_id, transaction_id=x.transaction_id or None,
                    currency=x.currency or None, ledger_amount=x.ledger_amount,
                    portal_amount=x.portal_amount,
                    business_day=x.day.isoformat() if x.day else None, note=x.note,
                    first_seen_at=now, first_seen_run=run_id, last_seen_at=now,
                    last_seen_run=run_id)


def _seen_again(row: BreakRow, x: Sighting, run_id: str, now: datetime) -> None:
    """Refresh what the break looks like now; a settled break stays settled."""
    row.last_seen_at, row.last_seen_run = now, run_id
    if row.is_live:
        row.kind, row.note = x.kind, x.note
        row.ledger_amount, row.portal_amount = x.ledger_amount, x.portal_amount
        row.currency = x.currency or row.currency
