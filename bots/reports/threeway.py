"""The third way of the reconciliation: the order system's notes.

After each refund the bot writes a note on the order ("Refund RF-000123 of 12.50 EUR issued
by refund-bots for case C-000042."). An analyst trusts the books when the three agree: the
portal lists the refund, the queue knows it, and the order says so. Two breaks come from
the notes:

* **refund without its order note**: a refund the portal lists whose order has no note
  naming it (a refund made straight in the portal by a person who did not write it up, or
  a bot whose note failed);
* **order note without its refund**: a note of the bot naming a refund the portal does not
  list (a refund reversed or never made, or a note written on the wrong order).

Pure logic: the pipeline reads the notes (bots/work/reconciling.py through the order page
object) and hands them here. An order whose page could not be read or recognised makes its
refunds "not verified", with the reason: never matched, never a silent pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bots.reports.reconcile import RECORDED_LATE, ReconRow, ReconStatus

# The bot's own note (bots/work/processing.py `_complete`): the refund number it names.
BOT_NOTE_PATTERN = r"Refund (?P<value>\S+) of .* issued by refund-bots"
_SPLIT_RX = re.compile(r"[\s,;:()\[\]{}<>\"'/|#=]+")
NOTE_STATUSES = frozenset({ReconStatus.NOTE_MISSING, ReconStatus.ORPHAN_NOTE,
                           ReconStatus.NOTES_UNVERIFIED})


class OrderNotesSettings(BaseModel):
    """`reconcile.order_notes` in the settings: the three-way check against order notes."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True  # false for an order system without notes
    max_orders: int = Field(2000, ge=1)  # order pages read per report; the rest: unverified
    bot_note_pattern: str = BOT_NOTE_PATTERN  # a note of the bot; (?P<value>...) = refund id

    @field_validator("bot_note_pattern")
    @classmethod
    def _has_value_group(cls, value: str) -> str:
        try:
            rx = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if "value" not in rx.groupindex:
            raise ValueError("needs a (?P<value>...) group: the refund id the note names")
        return value


class ReconcileSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_notes: OrderNotesSettings = OrderNotesSettings()


@dataclass(frozen=True, slots=True)
class ListedRefund:
    """A refund the portal lists in the period, with the order it is on."""

    refund_id: str
    order_number: str  # "" when neither the listing nor the ledger says which order
    case_ref: str | None = None
    currency: str = ""
    amount: Decimal | None = None
    day: date | None = None
    operator: str = ""


@dataclass
class OrderNotes:
    """What the order pages said: notes per order read, the reason per order not read."""

    read: dict[str, list[str]] = field(default_factory=dict)
    unread: dict[str, str] = field(default_factory=dict)  # order -> why (or over the cap)


@dataclass(frozen=True)
class ThreeWay:
    rows: list[ReconRow]  # problems only: missing notes, orphan notes, unverified
    agreed: list[str]  # break keys of refunds and notes that agree (their breaks close)
    orders_read: int
    orders_unread: int


def note_key(order_number: str, refund_id: str) -> str:
    return f"note:{order_number.strip().upper()}:{refund_id.strip()}"


def refunds_to_check(rows: Iterable[ReconRow]) -> list[ListedRefund]:
    """Every refund the portal lists (each once), from the reconciliation's rows; not a
    refund a runner is submitting right now (in flight: its note is the step after)."""
    seen: dict[str, ListedRefund] = {}
    for r in rows:
        if r.portal_refund_id and r.status not in NOTE_STATUSES \
                and r.status not in (ReconStatus.OVER_REFUNDED, ReconStatus.IN_FLIGHT):
            seen.setdefault(r.portal_refund_id, ListedRefund(
                r.portal_refund_id, r.order_number, r.case_ref, r.currency, r.portal_amount,
                r.day, r.operator))
    return list(seen.values())


def orders_to_read(refunds: Sequence[ListedRefund], ledger_orders: Iterable[str],
                   limit: int) -> tuple[list[str], list[str]]:
    """(orders to read, orders over the cap): those of the period's refunds first, then
    those of its ledger entries; each once, in a stable order."""
    wanted: dict[str, None] = {}
    for o in [*sorted({r.order_number for r in refunds}), *sorted(set(ledger_orders))]:
        if o.strip():
            wanted.setdefault(o.strip(), None)
    order = list(wanted)
    return order[:limit], order[limit:]


def check_notes(refunds: Sequence[ListedRefund], notes: OrderNotes,
                known_before: Mapping[str, str], *, pattern: str = BOT_NOTE_PATTERN,
                in_progress: Collection[str] = (), unread_days: Sequence[date] = (),
                settled_late: Mapping[str, tuple[str, str]] | None = None) -> ThreeWay:
    """Compare the portal's refunds with the notes on their orders.

    `known_before`: refund numbers the queue recorded before the period (refund -> case
    ref): a note naming one of them is about an earlier period, not a break now.
    `in_progress`: cases a runner is working on right now (its note is the step after the
    refund): their refunds are checked by the report written after they finish, not here.
    `unread_days`: days whose listing could not be read: a note naming a refund the listing
    lacks is then "not verified" (the refund may be on an unread day), never a break.
    `settled_late`: refunds the queue recorded only after the listing was read (refund ->
    case ref, when): a note naming one is shown in flight, checked by the next report.
    """
    rx = re.compile(pattern)
    settled_late = settled_late or {}
    listed = {r.refund_id.strip() for r in refunds}
    words = {o: _words(texts) for o, texts in notes.read.items()}
    rows: list[ReconRow] = []
    agreed: list[str] = []
    for r in refunds:
        if r.case_ref is not None and r.case_ref in in_progress:
            continue
        order = r.order_number.strip()
        key_row = _refund_row(r, order)
        if not order:
            rows.append(key_row(ReconStatus.NOTES_UNVERIFIED,
                                "the listing names no order for this refund: its order note "
                                "cannot be looked for"))
        elif order in notes.unread:
            rows.append(key_row(ReconStatus.NOTES_UNVERIFIED,
                                f"order notes not checked: {notes.unread[order]}"))
        elif order not in words:
            rows.append(key_row(ReconStatus.NOTES_UNVERIFIED,
                                "order notes not checked: the order was not read"))
        elif _names(r.refund_id.strip(), words[order], notes.read[order]):
            agreed.append(note_key(order, r.refund_id))
        else:
            who = r.operator.strip() or "unknown operator"
            rows.append(key_row(ReconStatus.NOTE_MISSING,
                                f"no note on order {order} names refund {r.refund_id} "
                                f"(made by {who})"))
    for order, texts in sorted(notes.read.items()):
        for text in texts:
            for found in rx.finditer(text):
                number = found.group("value").strip().rstrip(".")
                if not number or number in listed or number in known_before:
                    if number in listed:
                        agreed.append(note_key(order, number))
                    continue
                if number in settled_late:
                    case_ref, when = settled_late[number]
                    rows.append(ReconRow(
                        ReconStatus.IN_FLIGHT, case_ref, order, "", None, None, None, number,
                        f"a note of the bot on order {order} names refund {number}, which "
                        f"the queue recorded {when}, {RECORDED_LATE}"))
                    continue
                if unread_days:
                    days = ", ".join(str(d) for d in unread_days)
                    rows.append(ReconRow(
                        ReconStatus.NOTES_UNVERIFIED, None, order, "", None, None, None,
                        number, f"a note of the bot on order {order} names refund {number}, "
                        f"which the listing read lacks, but the portal's refunds of {days} "
                        f"could not be read: {_excerpt(text)!r}"))
                    continue
                rows.append(ReconRow(
                    ReconStatus.ORPHAN_NOTE, None, order, "", None, None, None, number,
                    f"a note of the bot on order {order} names refund {number}, which the "
                    f"portal does not list for the period: {_excerpt(text)!r}"))
    return ThreeWay(rows, agreed, len(notes.read), len(notes.unread))


def _refund_row(r: ListedRefund, order: str) -> Callable[[ReconStatus, str], ReconRow]:
    def make(status: ReconStatus, note: str) -> ReconRow:
        return ReconRow(status, r.case_ref, order, "", None, r.amount, None, r.refund_id,
                        note, r.currency, r.day, r.operator)
    return make


def _names(refund_id: str, words: set[str], texts: Sequence[str]) -> bool:
    """Whether a note names the refund id as a whole word (an id with its own separators,
    such as RF/2026/17, is looked for in the text, not among the split words)."""
    if refund_id in words:
        return True
    if not refund_id or not _SPLIT_RX.search(refund_id):
        return False
    rx = re.compile(rf"(?<![\w-]){re.escape(refund_id)}(?![\w-])")
    return any(rx.search(t) for t in texts)


def _words(texts: Iterable[str]) -> set[str]:
    """The words of an order's notes, as a refund id would stand among them."""
    out: set[str] = set()
    for text in texts:
        for w in _SPLIT_RX.split(text):
            w = w.strip(".!?")
            if w:
                out.add(w)
    return out


def _excerpt(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
