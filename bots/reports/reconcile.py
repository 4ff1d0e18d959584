"""Reconcile what the bot says it did (its ledger of refund intents) against the portal.

Pure logic, no browser: the pipeline reads the portal's refund listing and the queue's
intents, and this module says, row by row, whether they agree. Anything that is not
``MATCHED`` is a problem an ops agent has to look at, so the statuses are deliberately
few and each row carries a note in words.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from bots.models import PortalRefund, money

CONFIRMED = "confirmed"  # refund number recorded
PENDING = "pending"  # submitted, outcome unknown
ABSENT = "absent"  # verified not to be in the portal


@dataclass(frozen=True)
class LedgerEntry:
    """One refund intent as the bot's queue recorded it."""

    case_ref: str
    order_number: str
    reference: str  # idempotency key typed into the portal's reference field
    amount: Decimal
    status: str  # "confirmed" | "pending" | "absent"
    refund_number: str | None


class ReconStatus(StrEnum):
    MATCHED = "matched"
    MISSING_IN_PORTAL = "missing in portal"
    NOT_IN_LEDGER = "in portal, not in ledger"
    AMOUNT_MISMATCH = "amount mismatch"
    UNCONFIRMED = "found in portal, not confirmed in ledger"
    UNVERIFIED = "not verified: portal unreachable"


def unverified(ledger: Iterable[LedgerEntry], why: str) -> list[ReconRow]:
    """When the portal's listing cannot be read, say so row by row instead of guessing."""
    rows = [ReconRow(ReconStatus.UNVERIFIED, e.case_ref, e.order_number, e.reference, e.amount,
                     None, e.refund_number, None, why) for e in ledger]
    return rows or [ReconRow(ReconStatus.UNVERIFIED, None, "", "", None, None, None, None, why)]


@dataclass(frozen=True)
class ReconRow:
    status: ReconStatus
    case_ref: str | None
    order_number: str
    reference: str
    ledger_amount: Decimal | None
    portal_amount: Decimal | None
    ledger_refund_number: str | None
    portal_refund_id: str | None
    note: str

    @property
    def is_problem(self) -> bool:
        return self.status is not ReconStatus.MATCHED


def reconcile(ledger: Iterable[LedgerEntry], portal: Iterable[PortalRefund]) -> list[ReconRow]:
    """Pair ledger entries with portal refunds and classify every pair and leftover.

    Matching runs in passes, strongest evidence first, over the whole ledger each time,
    so a weak match (reference contained in an operator-edited reference) can never
    take a portal refund that another entry matches exactly:

    1. refund number recorded in the ledger == portal refund id;
    2. reference equal to the portal reference;
    3. ledger reference contained in the portal reference (operators prepend text).

    A portal refund is used by at most one ledger entry. An ``absent`` entry that is not
    in the portal is what the ledger says, so it produces no row (nothing to look at).
    """
    entries = sorted(ledger, key=_ledger_key)
    refunds = _unique(portal)
    matches = _match(entries, refunds)
    used = {id(p) for p in matches.values() if p is not None}
    rows = [_ledger_row(e, matches.get(i)) for i, e in enumerate(entries)]
    rows += [_portal_only_row(p) for p in refunds if id(p) not in used]
    return sorted((r for r in rows if r is not None), key=_row_key)


def summarise(rows: Iterable[ReconRow]) -> dict[ReconStatus, int]:
    """Count rows by status; every status is present (zero included), in enum order."""
    counts = dict.fromkeys(ReconStatus, 0)
    for row in rows:
        counts[row.status] += 1
    return counts


# -- matching ----------------------------------------------------------------------------


def _unique(portal: Iterable[PortalRefund]) -> list[PortalRefund]:
    """Drop exact duplicates (paginated listings can show a row twice) and sort.

    Sorting makes the pairing independent of the order the portal listed rows in.
    """
    return sorted(dict.fromkeys(portal), key=_portal_key)


def _match(entries: Sequence[LedgerEntry],
           refunds: Sequence[PortalRefund]) -> dict[int, PortalRefund | None]:
    """Ledger index -> the portal refund it matched (absent from the dict: no match)."""
    matches: dict[int, PortalRefund | None] = {}
    free = list(refunds)
    for rule in (_same_refund_number, _same_reference, _reference_contained):
        for i, entry in enumerate(entries):
            if i in matches:
                continue
            hit = next((p for p in free if rule(entry, p)), None)
            if hit is not None:
                matches[i] = hit
                free.remove(hit)
    return matches


def _same_refund_number(entry: LedgerEntry, refund: PortalRefund) -> bool:
    number = (entry.refund_number or "").strip()
    return bool(number) and number == refund.refund_id.strip()


def _same_reference(entry: LedgerEntry, refund: PortalRefund) -> bool:
    ref = entry.reference.strip()
    return bool(ref) and ref == refund.reference.strip()


def _reference_contained(entry: LedgerEntry, refund: PortalRefund) -> bool:
    # An empty reference is "contained" in every string: never match on it.
    ref = entry.reference.strip()
    return bool(ref) and ref in refund.reference


# -- classification ----------------------------------------------------------------------


def _ledger_row(entry: LedgerEntry, refund: PortalRefund | None) -> ReconRow | None:
    status = entry.status.strip().lower()
    if refund is None:
        return _missing_row(entry, status)
    return _paired_row(entry, refund, status)


def _missing_row(entry: LedgerEntry, status: str) -> ReconRow | None:
    if status == ABSENT:
        return None
    if status == CONFIRMED:
        note = (f"ledger records refund {entry.refund_number or '(no number)'}, "
                "but the portal shows no such refund")
    elif status == PENDING:
        note = "outcome unknown: submitted, but not found in the portal"
    else:
        note = f"outcome unknown: ledger status {entry.status!r}, not found in the portal"
    return _row(ReconStatus.MISSING_IN_PORTAL, entry, None, note)


def _paired_row(entry: LedgerEntry, refund: PortalRefund, status: str) -> ReconRow:
    """Both sides exist: decide which problem (if any) matters most, note all of them.

    Precedence: a refund the ledger believes absent is the worst (the bot may pay
    again), then a wrong amount (money), then any other lack of confirmation.
    """
    amount_note = _amount_note(entry.amount, refund.amount)
    confirm_note = _confirmation_note(entry, refund, status)
    order_note = _order_note(entry, refund)
    notes = [n for n in (confirm_note, amount_note, order_note, _reference_note(entry, refund))
             if n]
    if status == ABSENT:
        result = ReconStatus.UNCONFIRMED
    elif amount_note:
        result = ReconStatus.AMOUNT_MISMATCH
    elif confirm_note or order_note:
        result = ReconStatus.UNCONFIRMED
    else:
        result = ReconStatus.MATCHED
    return _row(result, entry, refund, "; ".join(notes))


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


def _amount_note(ledger_amount: Decimal, portal_amount: Decimal) -> str:
    ours, theirs = money(ledger_amount), money(portal_amount)
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


def _portal_only_row(refund: PortalRefund) -> ReconRow:
    who = refund.operator.strip() or "unknown operator"
    note = f"made by {who}"
    if refund.reason.strip():
        note += f"; reason {refund.reason.strip()!r}"
    return ReconRow(status=ReconStatus.NOT_IN_LEDGER, case_ref=None,
                    order_number=refund.order_number, reference=refund.reference,
                    ledger_amount=None, portal_amount=money(refund.amount),
                    ledger_refund_number=None, portal_refund_id=refund.refund_id, note=note)


def _row(status: ReconStatus, entry: LedgerEntry, refund: PortalRefund | None,
         note: str) -> ReconRow:
    return ReconRow(status=status, case_ref=entry.case_ref, order_number=entry.order_number,
                    reference=entry.reference, ledger_amount=money(entry.amount),
                    portal_amount=money(refund.amount) if refund else None,
                    ledger_refund_number=entry.refund_number,
                    portal_refund_id=refund.refund_id if refund else None, note=note)


# -- ordering ----------------------------------------------------------------------------


# Every key below is total (it compares every field): with ties left to the input order,
# two ledger entries alike but for their amount took the same portal refund in turns, so
# the report depended on the order the ledger and the listing were read in.


def _portal_key(p: PortalRefund) -> tuple[str, str, Decimal, str, str, str, str, str]:
    return (p.refund_id, p.reference, p.amount, p.order_number, p.currency, p.operator,
            p.reason, p.created_at.isoformat())


def _ledger_key(entry: LedgerEntry) -> tuple[str, str, str, str, str, Decimal]:
    return (entry.order_number, entry.case_ref, entry.reference, entry.refund_number or "",
            entry.status, entry.amount)


def _row_key(row: ReconRow) -> tuple[bool, str, str, str, str, str, str, str, str, str]:
    """Problems first, then matched; within each, by order number, then every field."""
    return (not row.is_problem, row.order_number, row.case_ref or "", row.reference,
            row.portal_refund_id or "", row.status.value, _amount_key(row.ledger_amount),
            _amount_key(row.portal_amount), row.ledger_refund_number or "", row.note)


def _amount_key(amount: Decimal | None) -> str:
    return "" if amount is None else f"{money(amount):020.2f}"
