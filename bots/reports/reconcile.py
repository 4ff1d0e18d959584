"""Reconcile what the portal shows against everything the queue knows, in linear time.

Pure logic, no browser: the pipeline reads the portal's refund listing for whole business
days, and the queue's refund intents (of every run) and approvals; this module says, row
by row, whether they agree. Anything that is not ``MATCHED`` is a *break* an analyst has
to look at (the register in :mod:`bots.queue.breaks` keeps it until someone resolves it),
so each row carries its currency, its business day and a note in words.

Matching is a set of hash joins (refund number, reference, the words of an edited
reference), never a nested scan: a million ledger entries against a million portal
refunds take seconds (``refund-bots bench reconcile``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import NamedTuple

import numpy as np

from bots.collector import paused
from bots.models import CENT, PortalRefund, money

CONFIRMED = "confirmed"  # refund number recorded
PENDING = "pending"  # submitted, outcome unknown
ABSENT = "absent"  # verified not to be in the portal
# Why a refund recorded while a report read is in flight (its row and its order note's).
RECORDED_LATE = ("after the portal's listing was read: the next report checks that the "
                 "portal lists it")

# The bot's idempotency keys (bots.queue.intents): found inside references people edited.
_KEY_RX = re.compile(r"C\d{6,}-[0-9a-f]{8}")
_SPLIT_RX = re.compile(r"[\s,;:()\[\]{}<>\"'/|#=]+")


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One refund intent as the bot's queue recorded it (any run)."""

    case_ref: str
    order_number: str
    reference: str  # idempotency key typed into the portal's reference field
    amount: Decimal
    status: str  # "confirmed" | "pending" | "absent"
    refund_number: str | None
    currency: str = ""
    transaction_id: str = ""
    run_id: str = ""
    created_at: datetime | None = None
    # A pending intent whose case a live runner still holds: its submit may be under way
    # right now (several runners share the queue), so "not confirmed" is not a break yet.
    in_flight: str = ""  # who holds it and until when; "" when nobody does
    # Confirmed only after the portal's listing was read (by another runner, while this
    # report read): the listing may lack it without it being missing. When, else "".
    settled_late: str = ""


@dataclass(frozen=True, slots=True)
class Approval:
    """What a case was allowed to be refunded in total (policy or a human), and when."""

    case_ref: str
    order_number: str
    amount: Decimal
    currency: str = ""
    since: datetime | None = None  # refunds on the order before this are not the case's


@dataclass(frozen=True, slots=True)
class ChargeBalance:
    """A charge as its transaction page shows it: what was paid and what was refunded."""

    transaction_id: str
    order_number: str
    amount: Decimal
    refunded: Decimal
    currency: str = ""


class ReconStatus(StrEnum):
    MATCHED = "matched"
    MISSING_IN_PORTAL = "missing in portal"
    NOT_IN_LEDGER = "in portal, not in ledger"
    AMOUNT_MISMATCH = "amount mismatch"
    DUPLICATE = "duplicate"
    OVER_REFUNDED = "over-refunded charge"
    UNCONFIRMED = "found in portal, not confirmed in ledger"
    UNVERIFIED = "not verified: portal unreachable"
    IN_FLIGHT = "in flight: a runner is submitting it"
    # The three-way check against the order system's notes (bots/reports/threeway.py).
    NOTE_MISSING = "refund without its order note"
    ORPHAN_NOTE = "order note without its refund"
    NOTES_UNVERIFIED = "not verified: order notes unread"


class ReconRow(NamedTuple):
    """One line of the reconciliation (a tuple: a million of them are made in a second)."""

    status: ReconStatus
    case_ref: str | None
    order_number: str
    reference: str
    ledger_amount: Decimal | None
    portal_amount: Decimal | None
    ledger_refund_number: str | None
    portal_refund_id: str | None
    note: str
    currency: str = ""
    day: date | None = None  # business day (UTC) of the portal refund, else of the intent
    operator: str = ""
    transaction_id: str = ""

    @property
    def is_problem(self) -> bool:
        """A break: anything not matched, except a refund another runner is submitting now
        (or settled only after this report read the portal's listing).

        An in-flight row is shown, never counted as matched, and checked again by the next
        report; if its runner dies, the lease runs out and the row becomes a break.
        """
        return self.status is not ReconStatus.MATCHED and self.status is not ReconStatus.IN_FLIGHT

    @property
    def break_key(self) -> str:
        """What a break is *about*, stable across runs (its status may change)."""
        if self.status in (ReconStatus.NOTE_MISSING, ReconStatus.ORPHAN_NOTE,
                           ReconStatus.NOTES_UNVERIFIED):
            return (f"note:{self.order_number.strip().upper()}:"
                    f"{(self.portal_refund_id or '').strip()}")
        if self.status is ReconStatus.OVER_REFUNDED:
            return f"charge:{self.transaction_id or self.order_number}"
        if self.status in (ReconStatus.DUPLICATE, ReconStatus.NOT_IN_LEDGER) \
                and self.portal_refund_id:
            return f"refund:{self.portal_refund_id}"
        if self.reference:
            return f"intent:{self.reference}"
        if self.portal_refund_id:
            return f"refund:{self.portal_refund_id}"
        return f"listing:{self.day or ''}"


def unread_day(day: date, why: str) -> ReconRow:
    """A business day whose listing could not be read: whatever it holds is unchecked."""
    return ReconRow(ReconStatus.UNVERIFIED, None, "", "", None, None, None, None,
                    f"the portal's refunds of {day} could not be read ({why}): refunds made "
                    "that day by people or other systems, and second payments, are unchecked",
                    day=day)


def unverified(ledger: Iterable[LedgerEntry], why: str) -> list[ReconRow]:
    """When the portal's listing cannot be read at all, say so row by row, never guess."""
    rows = [_row(ReconStatus.UNVERIFIED, e, None, why) for e in ledger]
    return rows or [ReconRow(ReconStatus.UNVERIFIED, None, "", "", None, None, None, None, why)]


def reconcile(ledger: Iterable[LedgerEntry], portal: Iterable[PortalRefund], *,
              approvals: Iterable[Approval] = (),
              charges: Iterable[ChargeBalance] = (),
              unread_days: Iterable[date] = ()) -> list[ReconRow]:
    """Pair ledger entries with portal refunds and classify every pair and leftover.

    A portal refund belongs to at most one ledger entry, found (strongest evidence first)
    by the refund number the ledger recorded, by its reference equal to the entry's key,
    or by the key appearing among the words of a reference an operator edited. An entry
    may get *several* refunds: the strongest is its pair, every other one is a
    ``DUPLICATE`` (paid twice). A refund nobody recorded, on the order of a case that is
    then refunded more in total than it was approved for, is a ``DUPLICATE`` too; else it
    is ``NOT_IN_LEDGER`` with its operator. A charge whose refunds exceed what was paid is
    ``OVER_REFUNDED``. A ledger entry not found in the portal is ``UNVERIFIED`` (not
    ``MISSING``) when a listing day on or after its creation could not be read.
    An ``absent`` entry that is not in the portal is what the ledger says: no row.
    """
    with paused():  # millions of acyclic rows: see bots.collector
        return _reconcile(list(ledger), portal, approvals, charges, unread_days)


def _reconcile(entries: list[LedgerEntry], portal: Iterable[PortalRefund],
               approvals: Iterable[Approval], charges: Iterable[ChargeBalance],
               unread_days: Iterable[date]) -> list[ReconRow]:
    refunds = _unique(portal)
    owner, strength = _assign(entries, refunds)
    pair, dups = _pairs(len(entries), owner, strength, refunds)
    rows = _paired(entries, refunds, pair)
    rows += [_duplicate_row(entries[i], refunds[j], refunds[pair[i]].refund_id) for i, j in dups]
    last_unread = max(unread_days, default=None)
    for i in np.flatnonzero(pair < 0).tolist():
        row = _missing_row(entries[i], last_unread)
        if row is not None:
            rows.append(row)
    rows += _loose(refunds, owner, rows, approvals)
    rows += _over_refunded_rows(charges)
    return _sorted(rows)


def summarise(rows: Iterable[ReconRow]) -> dict[ReconStatus, int]:
    """Count rows by status; every status is present (zero included), in enum order."""
    counts = dict.fromkeys(ReconStatus, 0)
    for row in rows:
        counts[row.status] += 1
    return counts


def totals_by_currency(rows: Iterable[ReconRow]) -> dict[tuple[ReconStatus, str], Decimal]:
    """Portal (else ledger) amounts per status and currency: EUR is never added to GBP."""
    out: dict[tuple[ReconStatus, str], Decimal] = defaultdict(lambda: Decimal("0.00"))
    for r in rows:
        amount = r.portal_amount if r.portal_amount is not None else r.ledger_amount
        if amount is not None:
            out[(r.status, r.currency or "?")] += amount
    return dict(out)


# -- matching: hash joins ------------------------------------------------------------------


def _unique(portal: Iterable[PortalRefund]) -> list[PortalRefund]:
    """One row per refund id (paginated listings can show a row twice).

    When two listed rows share an id but differ, the same one is kept whatever the order
    the portal listed them in.
    """
    items = portal if isinstance(portal, list) else list(portal)
    fast = {p.refund_id: p for p in items}
    if len(fast) == len(items):  # the usual case: no id listed twice
        return list(fast.values())
    seen: dict[str, PortalRefund] = {}
    for p in items:
        had = seen.get(p.refund_id)
        if had is None or (had != p and _refund_key(p) < _refund_key(had)):
            seen[p.refund_id] = p
    return list(seen.values())


def _refund_key(p: PortalRefund) -> tuple[str, ...]:
    # Total (every field of a listed row): two rows alike but for their operator, reason,
    # order, currency or charge kept whichever was listed first, so the report depended on
    # the portal's listing order (tests/test_reconcile_rows.py).
    return (p.reference, str(p.amount), p.created_at.isoformat(), p.operator, p.reason,
            p.order_number, p.currency, p.transaction_id)


def _ledger_key(entry: LedgerEntry) -> tuple[str, str, str, str, str, Decimal]:
    # Total (every field that tells entries apart): with ties left to the input order, two
    # entries alike but for their status or amount took a refund in turns, and the report
    # depended on the order the ledger was read in (tests/test_money_properties.py).
    return (entry.order_number, entry.case_ref, entry.reference, entry.refund_number or "",
            entry.status, entry.amount)


def _index(values: Sequence[str], entries: Sequence[LedgerEntry]) -> dict[str, int]:
    """value -> index of the entry holding it; two entries with one value: the first by
    (order, case, reference, number), so the result never depends on the input order."""
    fast = {v: i for i, v in enumerate(values) if v}
    if len(fast) == sum(1 for v in values if v):  # the usual case: no value held twice
        return fast
    out: dict[str, int] = {}
    ties: set[str] = set()
    for i, v in enumerate(values):
        if not v:
            continue
        if out.setdefault(v, i) != i:
            ties.add(v)
    for v in ties:
        out[v] = min((i for i, w in enumerate(values) if w == v),
                     key=lambda i: _ledger_key(entries[i]))
    return out


def _assign(entries: Sequence[LedgerEntry],
            refunds: Sequence[PortalRefund]) -> tuple[np.ndarray, np.ndarray]:
    """Per portal refund: (ledger index or -1, strength 0 number / 1 reference / 2 words).

    Three passes, strongest first, so that a weak match can never take a refund another
    entry matches by its number. Each refund goes to one entry; a refund number pairs its
    entry with one refund only (refund ids are unique, so this holds by construction).
    """
    by_number = _index([(e.refund_number or "").strip() for e in entries], entries)
    by_ref = _index([e.reference.strip() for e in entries], entries)
    owner = np.fromiter((by_number.get(p.refund_id.strip(), -1) for p in refunds),
                        dtype=np.int64, count=len(refunds))
    strength = np.where(owner >= 0, 0, 9)
    for j in np.flatnonzero(owner < 0).tolist():
        ref = refunds[j].reference.strip()
        i = by_ref.get(ref, -1)
        if i >= 0:
            owner[j], strength[j] = i, 1
            continue
        hits = [by_ref[w] for w in reference_words(ref) if w in by_ref]
        if hits:
            owner[j], strength[j] = min(hits, key=lambda k: _ledger_key(entries[k])), 2
    return owner, strength


def reference_words(reference: str) -> set[str]:
    """The words of a reference the matcher looks keys up by (and the intent keys in it)."""
    words = set(_SPLIT_RX.split(reference))
    words.update(_KEY_RX.findall(reference))
    words.discard("")
    return words


def _pairs(n: int, owner: np.ndarray, strength: np.ndarray, refunds: Sequence[PortalRefund]
           ) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Each entry's strongest refund (or -1), and every further refund of an entry."""
    pair = np.full(n, -1, dtype=np.int64)
    has = owner >= 0
    counts = np.bincount(owner[has], minlength=n) if n else np.zeros(0, dtype=np.int64)
    single = has & (counts[np.where(has, owner, 0)] == 1) if n else has
    pair[owner[single]] = np.flatnonzero(single)
    groups: dict[int, list[int]] = defaultdict(list)
    for j in np.flatnonzero(has & ~single):
        groups[int(owner[j])].append(int(j))
    dups: list[tuple[int, int]] = []
    for i, js in groups.items():
        js.sort(key=lambda j: (strength[j], refunds[j].created_at, refunds[j].refund_id))
        pair[i] = js[0]
        dups += [(i, j) for j in js[1:]]
    return pair, dups


# -- classification --------------------------------------------------------------------------


def _paired(entries: Sequence[LedgerEntry], refunds: Sequence[PortalRefund],
            pair: np.ndarray) -> list[ReconRow]:
    """Each entry with its strongest refund: flags computed for all pairs at once (numpy),
    words written only for the pairs that are not a clean match."""
    li = np.flatnonzero(pair >= 0)
    if not len(li):
        return []
    le = [entries[i] for i in li.tolist()]
    pr = [refunds[j] for j in pair[li].tolist()]
    clean = np.fromiter((e.status == CONFIRMED and e.refund_number == p.refund_id
                         and e.amount == p.amount and e.reference == p.reference
                         and (not p.order_number or p.order_number == e.order_number)
                         and (not e.currency or not p.currency or e.currency == p.currency)
                         for e, p in zip(le, pr, strict=True)), dtype=bool, count=len(le))
    matched = ReconStatus.MATCHED
    return [ReconRow(matched, e.case_ref, e.order_number, e.reference, _cents(e.amount),
                     _cents(p.amount), e.refund_number, p.refund_id, "",
                     (p.currency or e.currency).upper(), p.created_at.date(), p.operator,
                     p.transaction_id or e.transaction_id)
            if ok else _paired_row(e, p) for e, p, ok in zip(le, pr, clean, strict=True)]


def _paired_row(entry: LedgerEntry, refund: PortalRefund) -> ReconRow:
    """Both sides exist: decide which problem (if any) matters most, note all of them.

    Precedence: a refund the ledger believes absent is the worst (the bot may pay
    again), then a wrong amount or currency (money), then any other lack of confirmation.
    """
    status = entry.status.strip().lower()
    amount_note = _amount_note(entry, refund)
    confirm_note = _confirmation_note(entry, refund, status)
    order_note = _order_note(entry, refund)
    notes = [n for n in (confirm_note, amount_note, order_note, _reference_note(entry, refund))
             if n]
    if status == ABSENT:
        result = ReconStatus.UNCONFIRMED
    elif amount_note:
        result = ReconStatus.AMOUNT_MISMATCH
    elif status == PENDING and entry.in_flight and not order_note:
        result = ReconStatus.IN_FLIGHT
        notes[notes.index(confirm_note)] = (
            f"submitted and found in the portal as {refund.refund_id}; the runner that holds "
            f"the case ({entry.in_flight}) has not recorded it yet")
    elif confirm_note or order_note:
        result = ReconStatus.UNCONFIRMED
    else:
        result = ReconStatus.MATCHED
    return _row(result, entry, refund, "; ".join(notes))


def _loose(refunds: Sequence[PortalRefund], owner: np.ndarray, rows: Sequence[ReconRow],
           approvals: Iterable[Approval]) -> list[ReconRow]:
    loose = [refunds[j] for j in np.flatnonzero(owner < 0).tolist()]
    approved = list(approvals)
    if not approved:
        return [_portal_only_row(p) for p in loose]
    paid: dict[str, Decimal] = defaultdict(lambda: Decimal("0.00"))
    for r in rows:
        if r.case_ref and r.portal_amount is not None:
            paid[r.case_ref] += r.portal_amount
    return _loose_rows(loose, paid, approved)


def _sorted(rows: list[ReconRow]) -> list[ReconRow]:
    """Problems first, then matched; within each, by order number (ties broken stably).

    Matched rows (a million on a big day) are ordered by numpy on one text key: order
    number and reference (a matched row's reference is its intent's unique key).
    """
    problems = [r for r in rows if r.status is not ReconStatus.MATCHED]
    matched = [r for r in rows if r.status is ReconStatus.MATCHED]
    problems.sort(key=lambda r: (r.order_number, r.case_ref or "", r.reference,
                                 r.portal_refund_id or "", r.status.value,
                                 _amount_key(r.ledger_amount), _amount_key(r.portal_amount),
                                 r.ledger_refund_number or "", r.note))
    if len(matched) > 1:
        keys = np.array([f"{r.order_number}\x01{r.reference}\x01{r.portal_refund_id}"
                         for r in matched])
        matched = [matched[i] for i in np.argsort(keys, kind="stable")]
    return problems + matched


def _amount_key(amount: Decimal | None) -> str:
    """A tie-breaker that sorts like the amount (None first)."""
    return "" if amount is None else f"{money(amount):020.2f}"


def _missing_row(entry: LedgerEntry, last_unread: date | None) -> ReconRow | None:
    status = entry.status.strip().lower()
    created = entry.created_at.date() if entry.created_at else None
    if last_unread is not None and (created is None or created <= last_unread):
        return _row(ReconStatus.UNVERIFIED, entry, None,
                    f"not found, but the portal's listing for {last_unread} could not be read "
                    "(retried): check again before anything is paid")
    if status == ABSENT:
        return None
    if status == CONFIRMED and entry.settled_late:
        return _row(ReconStatus.IN_FLIGHT, entry, None,
                    f"recorded as refund {entry.refund_number or '(no number)'} "
                    f"{entry.settled_late}, {RECORDED_LATE}")
    if status == CONFIRMED:
        note = (f"ledger records refund {entry.refund_number or '(no number)'}, "
                "but the portal shows no such refund")
    elif status == PENDING and entry.in_flight:
        return _row(ReconStatus.IN_FLIGHT, entry, None,
                    f"being submitted: not in the portal yet, and the runner that holds the "
                    f"case ({entry.in_flight}) has not settled it")
    elif status == PENDING:
        note = "outcome unknown: submitted, but not found in the portal"
    else:
        note = f"outcome unknown: ledger status {entry.status!r}, not found in the portal"
    return _row(ReconStatus.MISSING_IN_PORTAL, entry, None, note)


def _duplicate_row(entry: LedgerEntry, refund: PortalRefund, first: str) -> ReconRow:
    note = (f"second refund for key {entry.reference}: {first} already pays this "
            f"intent; {refund.refund_id} by {refund.operator.strip() or 'unknown operator'} "
            f"on {refund.created_at:%Y-%m-%d %H:%M} pays it again")
    return _row(ReconStatus.DUPLICATE, entry, refund, note)


def _confirmation_note(entry: LedgerEntry, refund: PortalRefund, status: str) -> str:
    rid = refund.refund_id
    if status == ABSENT:
        return (f"ledger says verified absent, but the portal has refund {rid}: "
                "risk of paying twice, check before any resubmission")
    if status == PENDING:
        return f"submitted and found in the portal as {rid}: the bot must record it"
    if status != CONFIRMED:
        return f"ledger status {entry.status!r}; found in the portal as {rid}"
    if not entry.refund_number:
        return f"ledger is confirmed without a refund number; the portal shows {rid}"
    if entry.refund_number.strip() != rid.strip():
        return f"ledger records refund {entry.refund_number}, the portal shows {rid}"
    return ""


def _amount_note(entry: LedgerEntry, refund: PortalRefund) -> str:
    ours, theirs = money(entry.amount), money(refund.amount)
    mine, their_cur = entry.currency.strip().upper(), refund.currency.strip().upper()
    if mine and their_cur and mine != their_cur:
        return f"ledger {ours} {mine} vs portal {theirs} {their_cur}: another currency"
    if ours == theirs:
        return ""
    return f"ledger {ours} vs portal {theirs} (difference {theirs - ours:+})"


def _order_note(entry: LedgerEntry, refund: PortalRefund) -> str:
    # The listing may not show an order number; only a different one is a problem.
    theirs = refund.order_number.strip()
    if theirs and theirs != entry.order_number.strip():
        return f"portal refund is on order {theirs}, not {entry.order_number}"
    return ""


def _reference_note(entry: LedgerEntry, refund: PortalRefund) -> str:
    if refund.reference.strip() == entry.reference.strip():
        return ""
    return f"portal reference {refund.reference!r}"


def _loose_rows(loose: Sequence[PortalRefund], paid: dict[str, Decimal],
                approvals: Iterable[Approval]) -> list[ReconRow]:
    """Refunds no intent explains: another payment of an approved case, or someone else's.

    A case's total is what its intents' refunds paid plus these loose refunds on its
    order (made after the case began); past its approval, the refund is a duplicate.
    """
    by_order: dict[str, Approval] = {}
    for a in approvals:
        by_order.setdefault(a.order_number.strip().upper(), a)
    out = []
    for p in sorted(loose, key=lambda p: (p.created_at, p.refund_id)):
        case = by_order.get(p.order_number.strip().upper())
        if case is not None and (case.since is None or p.created_at >= case.since):
            paid[case.case_ref] += money(p.amount)
            if paid[case.case_ref] > case.amount:
                out.append(_over_approval_row(p, case, paid[case.case_ref]))
                continue
        out.append(_portal_only_row(p))
    return out


def _over_approval_row(refund: PortalRefund, case: Approval, total: Decimal) -> ReconRow:
    cur = refund.currency or case.currency
    note = (f"refund by {refund.operator.strip() or 'unknown operator'} on order "
            f"{refund.order_number}: {case.case_ref} is now refunded {total} {cur} in total, "
            f"more than the {case.amount} {cur} approved")
    return _portal_row(ReconStatus.DUPLICATE, refund, note, case.case_ref)


def _portal_only_row(refund: PortalRefund) -> ReconRow:
    who = refund.operator.strip() or "unknown operator"
    note = f"made by {who}"
    if refund.reason.strip():
        note += f"; reason {refund.reason.strip()!r}"
    return _portal_row(ReconStatus.NOT_IN_LEDGER, refund, note, None)


def _portal_row(status: ReconStatus, refund: PortalRefund, note: str,
                case: str | None) -> ReconRow:
    return ReconRow(status=status, case_ref=case, order_number=refund.order_number,
                    reference=refund.reference, ledger_amount=None,
                    portal_amount=money(refund.amount), ledger_refund_number=None,
                    portal_refund_id=refund.refund_id, note=note,
                    currency=refund.currency.strip().upper(), day=refund.created_at.date(),
                    operator=refund.operator, transaction_id=refund.transaction_id)


def _over_refunded_rows(charges: Iterable[ChargeBalance]) -> list[ReconRow]:
    return [ReconRow(status=ReconStatus.OVER_REFUNDED, case_ref=None,
                     order_number=c.order_number, reference="", ledger_amount=money(c.amount),
                     portal_amount=money(c.refunded), ledger_refund_number=None,
                     portal_refund_id=None, currency=c.currency.strip().upper(),
                     transaction_id=c.transaction_id,
                     note=(f"charge {c.transaction_id} paid {money(c.amount)} {c.currency} but "
                           f"{money(c.refunded)} {c.currency} was refunded on it (over by "
                           f"{money(c.refunded - c.amount)})"))
            for c in charges if money(c.refunded) > money(c.amount)]


def _row(status: ReconStatus, entry: LedgerEntry, refund: PortalRefund | None,
         note: str) -> ReconRow:
    when = refund.created_at if refund is not None else entry.created_at
    currency = (refund.currency if refund is not None and refund.currency else entry.currency)
    return ReconRow(status=status, case_ref=entry.case_ref, order_number=entry.order_number,
                    reference=entry.reference, ledger_amount=_cents(entry.amount),
                    portal_amount=_cents(refund.amount) if refund else None,
                    ledger_refund_number=entry.refund_number,
                    portal_refund_id=refund.refund_id if refund else None, note=note,
                    currency=currency.strip().upper(), day=when.date() if when else None,
                    operator=refund.operator if refund else "",
                    transaction_id=(refund.transaction_id if refund and refund.transaction_id
                                    else entry.transaction_id))


def _cents(amount: Decimal | int | str | float) -> Decimal:
    """money() without its detour through text, for amounts that are Decimals already."""
    if isinstance(amount, Decimal):
        return amount.quantize(CENT, rounding=ROUND_HALF_UP)
    return money(amount)
