"""The producer side: requests stored once, joined into cases, quarantine kept.

Requests for the same order, on any channel, are one case. A contact about a case that
is already finished (done or failed) is new work, never attached and forgotten: it opens
a follow-up case linked to the old one (`follows`), which a human answers. Storing is
idempotent by (channel, source id) and safe when two intakes run at once: a batch that
loses a race to the other intake's insert is planned again against what is stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Connection, Table, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bots.models import Quarantined, RefundRequest
from bots.queue.audit import audit, chain_rows, masked
from bots.queue.base import Store
from bots.queue.bulk import (
    CHUNK,
    find_in,
    insert_rows,
    insert_values,
    new_ids,
    update_values,
)
from bots.queue.schema import (
    AuditRow,
    Base,
    Case,
    CaseState,
    Money,
    NotificationRow,
    QuarantineRow,
    RequestRow,
    case_ref,
    utcnow,
)

# Requests per transaction when intake stores. SQLite: every commit waits for the disk,
# and the batch holds the one write lock the runners also need. PostgreSQL: each batch
# costs a dozen round trips and the chain lock; a larger batch takes about a third less
# time per request (measured: 13.1 s at 500, 10.4 s at 2,000, 8.4 s at 5,000 for 20,000).
INSERT_BATCH = 2_000
INSERT_BATCH_POSTGRES = 5_000
ANALYZE_EVERY = 10_000  # requests stored at once that make a bulk load: ANALYZE after it (PG)
_RACE_RETRIES = 5
FINISHED = (CaseState.DONE, CaseState.FAILED)
_T = TypeVar("_T")


class Stored(NamedTuple):
    case_id: int
    new: bool  # the request was not stored before
    opened: bool  # it opened a new case (first contact, or a follow-up)


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


class IntakeStore(Store):
    def add_request(self, req: RefundRequest, run_id: str | None = None) -> tuple[int, bool]:
        """Store a request and attach it to its case. Returns (case id, was it new)."""
        stored = self.store_requests([req], run_id)[0]
        return stored.case_id, stored.new

    def add_requests(self, reqs: Sequence[RefundRequest], run_id: str | None = None,
                     batch: int | None = None) -> list[tuple[int, bool]]:
        """`add_request` for many requests, `batch` of them per transaction."""
        return [(s.case_id, s.new) for s in self.store_requests(reqs, run_id, batch)]

    @property
    def insert_batch(self) -> int:
        """Requests per transaction when intake stores, for this backend."""
        return INSERT_BATCH_POSTGRES if self.dialect == "postgresql" else INSERT_BATCH

    def store_requests(self, reqs: Sequence[RefundRequest], run_id: str | None = None,
                       batch: int | None = None) -> list[Stored]:
        """Store requests, `batch` per transaction (default: `insert_batch`); what happened
        to each, in order.

        The same rows, ids, audit trail and answers as storing them one at a time (a
        request repeated within the list is "already seen" the second time), but a
        commit costs a disk flush: one per request caps intake at a few hundred a
        second. A crash loses at most the open batch, which the next run reads again.
        """
        batch = self.insert_batch if batch is None else batch
        if batch < 1:
            raise ValueError("batch must be at least 1")
        results: list[Stored] = []
        for start in range(0, len(reqs), batch):
            results += self._store_batch(reqs[start:start + batch], run_id)
        self.after_bulk_load(len(reqs))
        return results

    def after_bulk_load(self, stored: int) -> bool:
        """ANALYZE after `stored` requests went in at once, if that makes a bulk load
        (PostgreSQL, ANALYZE_EVERY or more); True when it ran.

        Intake stores in batches far smaller than a bulk load: it calls this once, after
        its last batch, with what the whole run stored.
        """
        if stored < ANALYZE_EVERY or self.dialect != "postgresql":
            return False
        self._analyze()
        return True

    def _analyze(self) -> None:
        """Fresh planner statistics after a bulk load (PostgreSQL).

        The planner sizes a table by its last ANALYZE; autovacuum waits a minute between
        looks. The runners that work the queue right after an intake of tens of thousands
        of cases would plan for the tables as they were before it.
        """
        with self.engine.begin() as conn:
            conn.execute(text("ANALYZE cases, requests"))

    def _store_batch(self, reqs: Sequence[RefundRequest], run_id: str | None) -> list[Stored]:
        for attempt in range(_RACE_RETRIES):
            try:
                with self.session() as s:
                    if self.dialect == "postgresql":
                        # Every lookup of a batch is by a unique key. A table that grows
                        # from empty in one intake still looks empty to the planner, which
                        # then scans it whole for each batch (0.11 s a batch at the start,
                        # 0.8 s after 60,000 requests); an ANALYZE every 10,000 requests
                        # cured that but cost a quarter of the load.
                        s.execute(text("SET LOCAL enable_seqscan = off"))
                    return _store(s, reqs, run_id)
            except IntegrityError:  # another intake stored some of them first: plan again
                if attempt == _RACE_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def sent_texts(self, case_ids: Iterable[int]) -> dict[int, list[str]]:
        """The texts of every message the bot wrote to customers about these cases."""
        found: dict[int, list[str]] = {}
        with self.session() as s:
            for chunk in _chunked(sorted(set(case_ids))):
                for case_id, body in s.execute(
                        select(NotificationRow.case_id, NotificationRow.body)
                        .where(NotificationRow.case_id.in_(chunk))):
                    found.setdefault(case_id, []).append(body)
        return found

    def known(self, reqs: Sequence[RefundRequest]) -> set[tuple[str, str]]:
        """The (channel, source id) of those of `reqs` that are already stored.

        Intake asks before it works out a request's language and priority: a file read
        again (an export that grows, read every run) costs only its parsing. Read on a
        plain connection: no write transaction (on SQLite, no write lock) for a lookup.
        """
        with self.engine.connect() as conn:
            return set(_stored_sources(conn, reqs))

    def add_quarantined(self, item: Quarantined, run_id: str | None = None) -> bool:
        try:
            with self.session() as s:
                exists = s.scalar(select(QuarantineRow.id).where(
                    QuarantineRow.channel == item.channel,
                    QuarantineRow.source_id == item.source_id))
                if exists is not None:
                    return False
                s.add(QuarantineRow(channel=item.channel, source_id=item.source_id,
                                    source_ref=masked(item.source_ref),
                                    reason=masked(item.reason), excerpt=masked(item.excerpt),
                                    run_id=run_id))
                return True
        except IntegrityError:  # the same item quarantined by a concurrent intake
            return False


def _store(s: Session, reqs: Sequence[RefundRequest], run_id: str | None) -> list[Stored]:
    known = _cases_by_key(s, {case_key_for(r) for r in reqs})
    plan = _BatchPlan(_stored_sources(s, reqs), dict(known))
    for req in reqs:
        plan.add(req)
    for old_id, archived_key in plan.archived:
        s.execute(update(Case).where(Case.id == old_id).values(case_key=archived_key)
                  .execution_options(synchronize_session=False))
    _update_known(s, known.values())
    _insert_cases(s, plan.opened)
    _insert_contacts(s, plan.added, run_id)
    return [Stored(c if isinstance(c, int) else c.id, new, opened)
            for c, new, opened in plan.answers]


@dataclass
class _BatchPlan:
    """What storing each request of a batch does, decided in memory.

    `seen` holds every stored source (channel, source id) of the batch and `cases`
    every stored case of its keys, so no decision needs the database.
    """

    seen: dict[tuple[str, str], _CaseLike | int]  # -> its case (or stored case id)
    cases: dict[str, _CaseLike]  # case key -> stored case, or one opened in this batch
    answers: list[tuple[_CaseLike | int, bool, bool]] = field(default_factory=list)
    added: list[tuple[RefundRequest, _CaseLike, str]] = field(default_factory=list)  # event
    opened: list[_Opened] = field(default_factory=list)  # new, not stored yet
    archived: list[tuple[int, str]] = field(default_factory=list)  # finished case: new key

    def add(self, req: RefundRequest) -> None:
        source = (req.channel, req.source_id)
        if source in self.seen:
            self.answers.append((self.seen[source], False, False))
            return
        key = case_key_for(req)
        case = self.cases.get(key)
        if case is None:
            case, event_name = self._open(req, key), "case_opened"
        elif case.state in FINISHED and isinstance(case, _Known):
            # A contact about a finished case: new work, linked to the old case.
            self.archived.append((case.id, f"{key}@{case_ref(case.id)}"))
            case, event_name = self._open(req, key, follows=case), "followup_opened"
        else:
            _merge_request_into(case, req)
            event_name = "contact_linked"
        self.seen[source] = case
        self.answers.append((case, True, event_name != "contact_linked"))
        self.added.append((req, case, event_name))

    def _open(self, req: RefundRequest, key: str, follows: _CaseLike | None = None) -> _Opened:
        case = _Opened(case_key=key, order_number=req.order_number,
                       customer_email=req.customer_email, customer_name=req.customer_name,
                       requested_amount=req.requested_amount, currency=req.currency,
                       priority=req.priority, follows=follows.id if follows else None)
        self.cases[key] = case
        self.opened.append(case)
        return case


@dataclass(slots=True)
class _Opened:
    """A case opened in this batch: plain values, stored with one multi-row INSERT.

    Building ORM objects for thousands of new cases cost more than storing them.
    """

    case_key: str
    order_number: str | None
    customer_email: str | None
    customer_name: str | None
    requested_amount: Decimal | None
    currency: str | None
    priority: int
    follows: int | None
    state: str = CaseState.QUEUED
    id: int = 0


@dataclass(slots=True)
class _Known:
    """A stored case of one of the batch's keys, as plain values: what a repeat contact
    may fill in (`_MERGED`) and what the plan reads. Changes go back in one statement
    per batch (`_update_known`): ORM objects for ten thousand linked cases, and the
    flush that updated them one by one, cost 2 to 3 s of a 100,000-contact intake.
    """

    id: int
    case_key: str
    state: str
    customer_email: str | None
    customer_name: str | None
    requested_amount: Decimal | None
    currency: str | None
    priority: int
    loaded: tuple[Any, ...] = ()  # the `_MERGED` values as read
    updated_at: datetime | None = None  # set: the case's version must move (issue #16)

    def changes(self) -> tuple[str, ...]:
        """The `_MERGED` columns this batch changed."""
        return tuple(name for name, was in zip(_MERGED, self.loaded, strict=True)
                     if getattr(self, name) != was)


_CaseLike = _Known | _Opened
# What a repeat contact may fill in on a case (`_merge_request_into`).
_MERGED = ("customer_email", "customer_name", "requested_amount", "currency", "priority")
_merged = attrgetter(*_MERGED)
_MONEY = Money()  # reads a money column's text as the ORM does
# What a new case is opened with and what a repeat contact may fill in.
_CASE_FIELDS = ("case_key", "order_number", "customer_email", "customer_name",
                "requested_amount", "currency", "state", "priority", "follows")
_CASE_COLUMNS = (*_CASE_FIELDS, "attempts", "lease_token", "created_at", "updated_at")


def _insert_cases(s: Session, cases: list[_Opened]) -> None:
    """The batch's new cases in one INSERT, with their ids taken first (PostgreSQL) or
    found after it by their unique key (SQLite).

    Core inserts on the session's connection: the ORM's bulk path costs several times more
    per row, and these rows need none of its bookkeeping.
    """
    if not cases:
        return
    now = utcnow()
    fields = attrgetter(*_CASE_FIELDS)
    conn = s.connection()
    ids = new_ids(conn, _table(Case), len(cases))
    if ids is not None:  # PostgreSQL: the ids first, from the table's sequence
        for case, case_id in zip(cases, ids, strict=True):
            case.id = case_id
        insert_values(conn, _table(Case), ("id", *_CASE_COLUMNS),
                      [(c.id, *fields(c), 0, 0, now, now) for c in cases])
        return
    insert_values(conn, _table(Case), _CASE_COLUMNS,
                  [(*fields(c), 0, 0, now, now) for c in cases])
    found = dict(find_in(conn, _table(Case), ("case_key", "id"), "case_key",
                         [c.case_key for c in cases]))
    for case in cases:
        case.id = found[case.case_key]


def _table(model: type[Base]) -> Table:
    """The model's Core table (typed as one: the ORM declares it a FromClause)."""
    table = model.__table__
    if not isinstance(table, Table):  # pragma: no cover - declarative models have tables
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table


def _contact_detail(which: str, req: RefundRequest) -> str:
    return f"{which} contact via {req.channel} ({req.source_ref or req.source_id})"


def _stored_sources(s: Session | Connection, reqs: Sequence[RefundRequest]
                    ) -> dict[tuple[str, str], _CaseLike | int]:
    """(channel, source id) -> case id of the requests already stored, one query a chunk."""
    by_channel: dict[str, set[str]] = {}
    for req in reqs:
        by_channel.setdefault(req.channel, set()).add(req.source_id)
    conn = s.connection() if isinstance(s, Session) else s
    found: dict[tuple[str, str], _CaseLike | int] = {}
    for channel, ids in by_channel.items():
        rows = find_in(conn, _table(RequestRow), ("source_id", "case_id"), "source_id",
                       sorted(ids), channel=channel)
        found.update({(channel, source_id): case_id for source_id, case_id in rows})
    return found


def _cases_by_key(s: Session, keys: set[str]) -> dict[str, _Known]:
    """The stored cases of these keys, as plain values (a repeat contact may update them):
    one query on PostgreSQL, one per CHUNK keys on SQLite. Most keys of a batch are new."""
    rows = find_in(s.connection(), _table(Case), ("id", "case_key", "state", *_MERGED),
                   "case_key", sorted(keys))
    found: dict[str, _Known] = {}
    for case_id, key, state, email, name, amount, currency, priority in rows:
        case = _Known(case_id, key, state, email, name, _MONEY.process_result_value(amount, None),
                      currency, priority or 0)
        case.loaded = _merged(case)
        found[key] = case
    return found


def _update_known(s: Session, cases: Iterable[_Known]) -> None:
    """Write back what the batch's contacts filled in on stored cases: only the columns
    each one changed (as the ORM's flush did), and `updated_at` whenever one changed or
    the case's version must move. One statement per set of changed columns."""
    now = utcnow()
    by_columns: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    for case in cases:
        changed = case.changes()
        if changed or case.updated_at is not None:
            by_columns.setdefault(changed, []).append(
                (case.id, *(getattr(case, name) for name in changed), case.updated_at or now))
    for changed, rows in by_columns.items():
        update_values(s.connection(), _table(Case), "id", (*changed, "updated_at"), rows)


def _chunked(values: list[_T]) -> Iterator[list[_T]]:
    for start in range(0, len(values), CHUNK):
        yield values[start:start + CHUNK]


# A request's row: these fields of the request as they are, then what storing adds.
_REQUEST_FIELDS = ("channel", "source_id", "received_at", "customer_email", "customer_name",
                   "customer_phone", "order_number", "requested_amount", "currency",
                   "reason_category", "reason_text", "reply_to", "customer_handle",
                   "auth_results", "in_reply_to", "language")
_REQUEST_COLUMNS = (*_REQUEST_FIELDS, "source_ref", "doubts", "run_id", "case_id",
                    "created_at")


def request_row(req: RefundRequest, case_id: int, run_id: str | None, source_ref: str,
                now: datetime) -> tuple[Any, ...]:
    """A request's row, in the order of `_REQUEST_COLUMNS`; `source_ref` is the
    request's, masked (see `_insert_contacts`)."""
    return (*_request_fields(req), source_ref, json.dumps(list(req.doubts)), run_id, case_id,
            now)


_request_fields = attrgetter(*_REQUEST_FIELDS)


_EVENTS = {"case_opened": (None, "first"), "contact_linked": ("same", "another"),
           "followup_opened": (None, "follow-up")}


def _insert_contacts(s: Session, added: list[tuple[RefundRequest, _CaseLike, str]],
                     run_id: str | None) -> None:
    """The audit rows and request rows of a batch, in order, as two bulk inserts.

    A source reference (a file name, a subject) can quote a card number like any text a
    customer wrote: it is masked in the request row and in the audit record, the whole
    batch at once (most hold nothing to mask, and a column search tells which).
    """
    if not added:
        return
    from bots.intake.extract import mask_secrets_many  # as `masked`: only needed here

    audits, rows = [], []
    now = utcnow()
    texts = mask_secrets_many([r.source_ref for r, _, _ in added] + [_detail(*a) for a in added])
    source_refs, details = texts[:len(added)], texts[len(added):]
    for (req, case, event_name), source_ref, detail in zip(added, source_refs, details,
                                                           strict=True):
        audits.append(dict(case_id=case.id, run_id=run_id, actor="intake",
                           from_state=case.state if _EVENTS[event_name][0] else None,
                           to_state=case.state, event=event_name, detail=detail, at=now))
        rows.append(request_row(req, case.id, run_id, source_ref, now))
    chain_rows(s, audits)  # issue 15: hash-chained, in this order (bots/queue/audit.py)
    conn = s.connection()
    insert_rows(conn, _table(AuditRow), audits)
    insert_values(conn, _table(RequestRow), _REQUEST_COLUMNS, rows)


def _detail(req: RefundRequest, case: _CaseLike, event_name: str) -> str:
    """The audit detail of a contact stored: how it came, why its priority, what it opened."""
    detail = _contact_detail(_EVENTS[event_name][1], req)
    if req.triage:  # routing evidence (issue 17): why this contact has its priority
        detail += f"; {req.triage}"
    if event_name == "followup_opened" and isinstance(case, _Opened):  # always one
        detail += (f": the earlier case {case_ref(case.follows or 0)} for this order is "
                   f"finished, so this is new work")
    return detail


def _merge_request_into(case: _CaseLike, req: RefundRequest) -> None:
    """A repeat contact fills what the case did not know yet; it never lowers the ask."""
    case.customer_email = case.customer_email or req.customer_email
    case.customer_name = case.customer_name or req.customer_name
    case.currency = case.currency or req.currency
    case.priority = max(case.priority or 0, req.priority)
    if req.requested_amount is not None and (
        case.requested_amount is None or req.requested_amount > case.requested_amount
    ):
        case.requested_amount = req.requested_amount
    if isinstance(case, _Known) and case.state == CaseState.ESCALATED:
        # issue #16: a person deciding this case has not seen this contact yet: the case's
        # version (updated_at) moves, so a decision taken on the older view is refused.
        case.updated_at = utcnow()


__all__ = ["INSERT_BATCH", "INSERT_BATCH_POSTGRES", "IntakeStore", "Stored", "audit",
           "case_key_for"]
