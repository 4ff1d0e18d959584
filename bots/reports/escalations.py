"""The human decisions workbook: escalated cases out, agents' decisions back in.

`write_escalations` lists every case waiting for a human with what the bot knew
(the facts snapshot it decided on) and empty Decision / Amount / Agent / Comment
columns. Agents fill it in Excel or LibreOffice; `read_decisions` validates each row
on its own (one bad row never blocks the others, and says why in plain words);
`apply_decisions` hands each valid decision to the queue, which records it once.

The file is customer text opened by staff, so every cell is written through
:mod:`bots.reports.excel_safe`; and it comes back from humans, so nothing in it is trusted:
formulas and error values are refused, amounts are checked to the cent, and a row
whose case changed since the file was written (new escalation, edited order) is
refused rather than applied to the wrong thing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeAlias

from openpyxl import Workbook, load_workbook
from openpyxl.cell.cell import Cell, MergedCell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.worksheet.properties import PageSetupProperties
from openpyxl.worksheet.worksheet import Worksheet

from bots.decide import snapshot
from bots.intake.sentiment import score
from bots.models import CENT, money
from bots.queue import Case, CaseState, Queue
from bots.queue.staff import Staff
from bots.reports.excel_safe import DATETIME_FORMAT, GUARD, MONEY_FORMAT, needs_guard, write_cell
from bots.reports.report import _save_atomically, money_format

SHEET = "Escalations"
DECISIONS = ("approve", "reject", "partial")
DECISION_ROWS_MIN = 50  # the dropdown also covers a few empty rows below the cases
AGENT_MAX = 100  # the audit trail's actor column
COMMENT_MAX = 2000
_CASE_REF = re.compile(r"C-(\d{6,})", re.IGNORECASE)
_HUMAN_FILL = PatternFill("solid", fgColor="FFF2CC")  # the columns an agent fills in


@dataclass(frozen=True)
class Column:
    header: str
    width: int
    number_format: str | None = None
    wrap: bool = False


COLUMNS = (
    Column("Case", 11),
    Column("Order", 14),
    Column("Customer", 22),
    Column("Email", 28),
    Column("Channels", 16),
    Column("Priority", 9),  # angry, urgent, chargeback-threatening first (routing only)
    Column("Why this priority", 40, wrap=True),
    Column("Requested", 12, MONEY_FORMAT),
    Column("Bot's proposed amount", 14, MONEY_FORMAT),
    Column("Currency", 9),
    Column("Why escalated", 45, wrap=True),
    Column("Evidence", 60, wrap=True),
    Column("Escalated (UTC)", 19, DATETIME_FORMAT),
    Column("Age (days)", 9, "0"),
    Column("SLA", 16, wrap=True),
    Column("Assignee", 14),
    Column("Decision", 11),
    Column("Amount", 12, MONEY_FORMAT),
    Column("Agent", 16),
    Column("Comment", 40, wrap=True),
)
HEADERS = tuple(c.header for c in COLUMNS)
HUMAN_COLUMNS = ("Decision", "Amount", "Agent", "Comment")
REQUIRED_ON_READ = ("Case", "Decision", "Amount", "Agent", "Comment")
INSTRUCTIONS = (
    "One row per case waiting for a human decision.",
    "Decision: approve (refund the bot's proposed amount, or the Amount you enter), "
    "partial (refund the Amount you enter), or reject.",
    "Amount: a positive amount with at most 2 decimals; required for partial.",
    "Agent: your name, required: it goes in the case's audit trail.",
    "Comment: why; a rejection's comment is the reason recorded on the case.",
    "Leave Decision empty for a case you have not decided: it is left as it is.",
    "Do not edit the other columns and do not use formulas: such rows are refused.",
    "An approved refund is submitted by the next processing run, capped at what remains "
    "refundable on the charge.",
)


class EscalationsFileError(Exception):
    """The file cannot be read as a decisions workbook at all (not a row problem)."""


@dataclass(frozen=True)
class HumanDecision:
    case_ref: str
    case_id: int
    decision: str  # approve | reject | partial
    amount: Decimal | None  # None for reject, and for approve of the bot's proposal
    agent: str
    comment: str
    row: int  # the worksheet row, for messages
    order_number: str | None = None  # as written: a mismatch means the row was edited
    escalated_at: datetime | None = None  # as written: a mismatch means the file is stale


@dataclass(frozen=True)
class RejectedRow:
    row: int
    case_ref: str | None
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}" + (f" ({self.case_ref})" if self.case_ref else "") + \
            f": {self.reason}"


@dataclass
class ApplyResult:
    applied: list[HumanDecision] = field(default_factory=list)
    already_applied: list[HumanDecision] = field(default_factory=list)
    refused: list[RejectedRow] = field(default_factory=list)
    proposed: list[HumanDecision] = field(default_factory=list)  # wait for a second user


# -- writing ------------------------------------------------------------------------------


def write_escalations(path: Path, cases: Sequence[Case], run_id: str) -> Path:
    """Write `escalations.xlsx` (atomically) for the escalated cases among `cases`."""
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = SHEET
    # The angriest first (priority from bots.intake.sentiment), then the oldest.
    escalated = sorted((c for c in cases if c.state == CaseState.ESCALATED),
                       key=lambda c: (-(c.priority or 0), c.id))
    _write_header(ws)
    now = datetime.now(UTC)
    for r, case in enumerate(escalated, start=2):
        values = _case_values(case, now)
        currency = values[HEADERS.index("Currency")]
        for c, value in enumerate(values, start=1):
            col = COLUMNS[c - 1]
            fmt = money_format(str(currency or "")) if col.number_format == MONEY_FORMAT \
                else col.number_format
            cell = write_cell(ws, r, c, value, fmt)
            if col.wrap:
                cell.alignment = Alignment(wrap_text=True, vertical="top")
            else:
                cell.alignment = Alignment(vertical="top")
        ws.row_dimensions[r].height = _row_height(values)
    _add_validation(ws, max(len(escalated) + 1, DECISION_ROWS_MIN))
    _finish(ws, len(escalated))
    _write_instructions(wb.create_sheet("How to"), run_id)
    wb.properties.creator = "refund-bots"
    wb.properties.title = f"Escalations {run_id}"[:200]
    return _save_atomically(wb, Path(path))


SLA_HOURS = 48  # a human decides an escalated case within two days of the first contact


def _row_height(values: Sequence[object]) -> float:
    """Tall enough to read the wrapped evidence and reasons (capped at 12 lines)."""
    lines = 1
    for col, value in zip(COLUMNS, values, strict=True):
        if col.wrap and isinstance(value, str):
            per_line = max(int(col.width * 1.1), 1)
            count = sum(max(-(-len(part) // per_line), 1) for part in value.split("\n"))
            lines = max(lines, min(count, 12))
    return 15.0 * lines


def _sla(received: datetime | None, now: datetime) -> str:
    if received is None:
        return ""
    due = received + timedelta(hours=SLA_HOURS)
    if now > due:
        return f"OVERDUE by {(now - due).days} d {(now - due).seconds // 3600} h"
    return f"due {due:%Y-%m-%d %H:%M} UTC"


def _currency(case: Case) -> str | None:
    """The case's currency, else the order's (from the facts the bot decided on)."""
    if case.currency:
        return case.currency.upper()
    if not case.decision:
        return None
    try:
        order = snapshot.load(case.decision)[0]
    except Exception:  # noqa: BLE001 - an older snapshot layout: no currency, never fail
        return None
    return (order.currency or "").upper() or None


def _case_values(case: Case, now: datetime | None = None) -> list[object]:
    """The row for one case, in COLUMNS order (human columns empty)."""
    now = now or datetime.now(UTC)
    reqs = case.requests
    received = min((r.received_at for r in reqs), default=None)
    return [
        case.ref,
        case.order_number,
        case.customer_name or next((r.customer_name for r in reqs if r.customer_name), None),
        case.customer_email,
        ", ".join(case.channels),
        case.priority or 0,
        priority_evidence(case),
        money(case.requested_amount) if case.requested_amount is not None else None,
        money(case.approved_amount) if case.approved_amount is not None else None,
        _currency(case),
        case.reason,
        evidence_text(case.decision),
        case.updated_at,
        max((now - received).days, 0) if received else None,
        _sla(received, now),
        case.assigned_to,
        None, None, None, None,
    ]


def priority_evidence(case: Case) -> str:
    """The sentiment score and the words behind the case's priority, per contact.

    Scored again from the stored text and language (the same, deterministic scoring
    that intake wrote to the case's audit trail when the contact arrived).
    """
    lines = []
    for r in case.requests:
        found = score(r.reason_text, r.language)
        lines.append(f"{r.channel}{f' ({r.language})' if r.language else ''}: "
                     f"{found.describe()}")
    return "\n".join(lines)


def evidence_text(decision_json: str | None) -> str:
    """What the bot saw, in a few lines an agent reads in a cell (from bots.decide.snapshot)."""
    if not decision_json:
        return ""
    try:
        order, charge, claim, decision, today = snapshot.load(decision_json)
    except Exception:  # noqa: BLE001 - an older snapshot layout: show it raw, never fail
        return _raw_evidence(decision_json)
    delivered = (f", delivered {order.delivery_date:%Y-%m-%d}" if order.delivery_date
                 else ", not delivered")
    lines = [f"Order {order.order_number} of {order.order_date:%Y-%m-%d}{delivered}, "
             f"status {order.status}, total {order.total:,.2f} {order.currency}."]
    items = [f"{i.quantity} × {i.name} [{i.category}] {i.total:,.2f}"
             + (" (final sale)" if i.final_sale else "") for i in order.items]
    if len(items) > 8:
        items = [*items[:8], f"… and {len(items) - 8} more"]
    lines.append("Items: " + "; ".join(items) + f". Shipping {order.shipping_fee:,.2f}.")
    history = ", ".join(f"{r.refund_id} {r.amount:,.2f} on {r.created_at:%Y-%m-%d}"
                        for r in charge.refunds)
    lines.append(f"Charge {charge.transaction_id}: {charge.amount:,.2f}, refunded so far "
                 f"{charge.refunded:,.2f}" + (f" ({history})" if history else "")
                 + f", remaining {charge.remaining:,.2f}.")
    asked = ", ".join(f"{a:,.2f}" for a in claim.amounts) or "no amount stated"
    currency = f" {claim.currency}" if claim.currency and claim.amounts else ""
    lines.append(f"Asked: {asked}{currency} ({claim.reason_category}).")
    lines.append(f"Bot: {decision.outcome} {decision.amount:,.2f}, decided on "
                 f"{today:%Y-%m-%d}.")
    return "\n".join(lines)


def _raw_evidence(text: str) -> str:
    """A snapshot from another version of the bot: show what it holds, compactly."""
    try:
        data: Any = json.loads(text)
    except ValueError:
        return "(the facts snapshot is not readable)"
    return json.dumps(data, ensure_ascii=False, separators=(", ", ": "))[:1000]


def _write_header(ws: Worksheet) -> None:
    bold = Font(bold=True)
    for c, header in enumerate(HEADERS, start=1):
        cell = write_cell(ws, 1, c, header)
        cell.font = bold
        if header in HUMAN_COLUMNS:
            cell.fill = _HUMAN_FILL


def _add_validation(ws: Worksheet, last_row: int) -> None:
    """Dropdown for Decision, positive-number check for Amount (Excel enforces both)."""
    decision = _letter("Decision")
    amount = _letter("Amount")
    choice = DataValidation(type="list", formula1='"' + ",".join(DECISIONS) + '"',
                            allow_blank=True, showErrorMessage=True,
                            errorTitle="Decision", error="Choose approve, reject or partial.")
    positive = DataValidation(type="decimal", operator="greaterThan", formula1="0",
                              allow_blank=True, showErrorMessage=True, errorTitle="Amount",
                              error="A positive amount, at most 2 decimals.")
    choice.add(f"{decision}2:{decision}{last_row}")
    positive.add(f"{amount}2:{amount}{last_row}")
    ws.add_data_validation(choice)
    ws.add_data_validation(positive)
    for r in range(2, last_row + 1):
        for header in HUMAN_COLUMNS:
            cell = ws.cell(row=r, column=HEADERS.index(header) + 1)
            cell.fill = _HUMAN_FILL
            if header == "Amount":
                cell.number_format = MONEY_FORMAT


def _finish(ws: Worksheet, rows: int) -> None:
    ws.print_title_rows = "1:1"
    ws.page_setup.orientation = "landscape"
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    ws.sheet_properties.pageSetUpPr = PageSetupProperties(fitToPage=True)
    ws.freeze_panes = "B2"
    ws.auto_filter.ref = f"A1:{get_column_letter(len(COLUMNS))}{rows + 1}"
    for c, col in enumerate(COLUMNS, start=1):
        ws.column_dimensions[get_column_letter(c)].width = col.width


def _write_instructions(ws: Worksheet, run_id: str) -> None:
    write_cell(ws, 1, 1, f"Escalated cases, written by run {run_id}").font = Font(bold=True)
    for r, line in enumerate(INSTRUCTIONS, start=3):
        write_cell(ws, r, 1, line)
    ws.column_dimensions["A"].width = 110


def _letter(header: str) -> str:
    return get_column_letter(HEADERS.index(header) + 1)


# -- reading ------------------------------------------------------------------------------


# A cell as read back: one covered by a merged range (not its top-left) is a MergedCell,
# whose value is always None.
_ReadCell: TypeAlias = Cell | MergedCell


class DecisionRefused(ValueError):
    """This decision cannot be used: the message says why, in words an agent understands."""


_Refuse = DecisionRefused


def read_decisions(path: Path) -> tuple[list[HumanDecision], list[RejectedRow]]:
    """Every decided row of the workbook, validated one by one.

    Rows with an empty Decision are ignored (not decided yet). A case decided on two
    rows keeps the first; the others are refused. Raises EscalationsFileError only
    when the file itself is unusable (not a workbook, no Escalations sheet, columns
    missing).
    """
    ws_rows, columns = _load(path)
    decisions: list[HumanDecision] = []
    refused: list[RejectedRow] = []
    first_row: dict[int, int] = {}
    for number, cells in ws_rows:
        row = {name: cells[i] for name, i in columns.items() if i < len(cells)}
        if _blank(row.get("Decision")):
            continue
        ref = _text(row.get("Case")) or None
        try:
            decision = _parse_row(number, row)
            if decision.case_id in first_row:
                raise _Refuse(f"{decision.case_ref} is already decided on row "
                              f"{first_row[decision.case_id]}")
        except _Refuse as exc:
            refused.append(RejectedRow(number, ref, str(exc)))
            continue
        first_row[decision.case_id] = number
        decisions.append(decision)
    return decisions, refused


def _load(path: Path) -> tuple[list[tuple[int, tuple[_ReadCell, ...]]], dict[str, int]]:
    try:
        wb = load_workbook(path, data_only=False)  # formulas as formulas: they are refused
    except Exception as exc:  # noqa: BLE001 - zip, XML, missing file: all say the same
        raise EscalationsFileError(f"{path}: not a readable Excel workbook ({exc})") from exc
    if SHEET not in wb.sheetnames:
        raise EscalationsFileError(f"{path}: no sheet named {SHEET!r}")
    ws = wb[SHEET]
    rows = list(ws.iter_rows())
    if not rows:
        raise EscalationsFileError(f"{path}: the {SHEET} sheet is empty")
    headers = [_text(c) for c in rows[0]]
    missing = [h for h in REQUIRED_ON_READ if h not in headers]
    if missing:
        raise EscalationsFileError(f"{path}: column(s) missing: {', '.join(missing)}")
    columns = {h: headers.index(h) for h in HEADERS if h in headers}
    return [(_row_number(path, cells), cells) for cells in rows[1:] if cells], columns


def _row_number(path: Path, cells: tuple[_ReadCell, ...]) -> int:
    number = cells[0].row
    if number is None:  # only a MergedCell made by hand has no place; a loaded one has
        raise EscalationsFileError(f"{path}: a row of the {SHEET} sheet has no row number")
    return number


def _parse_row(number: int, row: dict[str, _ReadCell]) -> HumanDecision:
    for name, cell in row.items():
        if cell.data_type == "f":
            raise _Refuse(f"the {name} cell holds a formula: type the value itself")
        if cell.data_type == "e":
            raise _Refuse(f"the {name} cell holds an error value ({cell.value})")
    ref, case_id = _case(row.get("Case"))
    decision, amount, agent, comment = validate_decision(
        _text(row.get("Decision")), None if _blank(row.get("Amount")) else
        row["Amount"].value, _text(row.get("Agent")), _text(row.get("Comment")))
    return HumanDecision(ref, case_id, decision, amount, agent, comment, number,
                         order_number=_text(row.get("Order")) or None,
                         escalated_at=_datetime(row.get("Escalated (UTC)")))


def validate_decision(decision_text: str, amount_value: object, agent_text: str,
                      comment_text: str) -> tuple[str, Decimal | None, str, str]:
    """One person's decision, checked the same way on every route (workbook, console).

    Returns (decision, amount or None, agent, comment); raises DecisionRefused with why.
    """
    decision = decision_text.strip().lower()
    if decision not in DECISIONS:
        raise _Refuse(f"unknown decision {decision_text.strip()[:40]!r}: use approve, "
                      "reject or partial")
    amount = _amount_value(amount_value)
    if decision == "partial" and amount is None:
        raise _Refuse("partial needs an Amount")
    if decision == "reject" and amount is not None:
        raise _Refuse("reject takes no Amount: clear it, or choose partial")
    agent = " ".join(agent_text.split())
    if not agent:
        raise _Refuse("Agent is empty: who decided?")
    if len(agent) > AGENT_MAX:
        raise _Refuse(f"Agent is longer than {AGENT_MAX} characters")
    comment = comment_text.strip()
    if len(comment) > COMMENT_MAX:
        raise _Refuse(f"Comment is longer than {COMMENT_MAX} characters")
    return decision, amount, agent, comment


def _case(cell: _ReadCell | None) -> tuple[str, int]:
    text = _text(cell)
    m = _CASE_REF.fullmatch(text)
    if m is None or int(m.group(1)) == 0:
        raise _Refuse(f"Case {text[:40]!r} is not a case reference like C-000123")
    case_id = int(m.group(1))
    return f"C-{case_id:06d}", case_id


def _amount_value(value: object) -> Decimal | None:
    """A positive amount with at most 2 decimals, or None when empty (a cell or a form)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise _Refuse("Amount is not a number")
    numeric = isinstance(value, int | float | Decimal)  # typed in a number cell
    raw = str(value) if numeric else _money_text(str(value))
    try:
        amount = Decimal(raw)
    except InvalidOperation:
        raise _Refuse(f"Amount {str(value)[:40]!r} is not a number") from None
    if not amount.is_finite() or amount <= 0:
        raise _Refuse(f"Amount must be positive (found {str(value)[:40]})")
    if amount != amount.quantize(CENT):
        raise _Refuse(f"Amount {str(value)[:40]} has more than 2 decimals")
    return money(amount)


def _money_text(text: str) -> str:
    """'1,234.50' and '12,50' as typed by people; anything else is left for Decimal to refuse."""
    s = re.sub(r"\s", "", text)
    if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", s):
        return s.replace(",", "")
    if re.fullmatch(r"\d+,\d+", s):
        return s.replace(",", ".")
    return s if re.fullmatch(r"[+-]?\d+(\.\d+)?", s) else "not a number"


def _datetime(cell: _ReadCell | None) -> datetime | None:
    value = None if cell is None else cell.value
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) else None


def _blank(cell: _ReadCell | None) -> bool:
    if cell is None or cell.value is None:
        return True
    return isinstance(cell.value, str) and not cell.value.strip()


def _text(cell: _ReadCell | None) -> str:
    """A cell as trimmed text, without the guard apostrophe excel_safe may have added."""
    if cell is None or cell.value is None:
        return ""
    text = str(cell.value).strip()
    if text.startswith(GUARD) and needs_guard(text[1:]):
        text = text[1:]
    return text


# -- applying -----------------------------------------------------------------------------


STALE_TOLERANCE_SECONDS = 1.0  # Excel keeps times to the millisecond at best


def apply_decisions(queue: Queue, decisions: Iterable[HumanDecision], *,
                    run_id: str | None, four_eyes_above: Decimal | None = None,
                    raise_limit: Decimal | None = None) -> ApplyResult:
    """Hand each decision to `Staff.decide`, which applies it at most once.

    Checked here first, so that a decision is never applied to a case other than the
    one the agent looked at: the case exists, its order is the one on the row, and it
    has not changed since the file was written (a case re-escalated after an earlier
    decision gets a new file, not the old row). The Agent must be a user who may decide
    and, when the case is claimed, its assignee or a supervisor; above `four_eyes_above`
    the decision waits for a second user (in the console, or `cases confirm`).
    """
    result = ApplyResult()
    staff = Staff.on(queue)
    for d in decisions:
        try:
            _check(queue, d)
        except _Refuse as exc:
            result.refused.append(RejectedRow(d.row, d.case_ref, str(exc)))
            continue
        out = staff.decide(d.case_id, username=d.agent, decision=d.decision, amount=d.amount,
                           comment=d.comment, version=d.escalated_at,
                           four_eyes_above=four_eyes_above, run_id=run_id,
                           order_number=d.order_number, raise_limit=raise_limit)
        if out.status == "applied":
            result.applied.append(d)
        elif out.status in ("already applied", "already proposed"):
            result.already_applied.append(d)
        elif out.status == "proposed":
            result.proposed.append(d)
        else:
            result.refused.append(RejectedRow(d.row, d.case_ref, out.message))
    return result


def _check(queue: Queue, d: HumanDecision) -> None:
    case = queue.get_case(d.case_id)
    if case is None:
        raise _Refuse(f"unknown case {d.case_ref}")
    if d.order_number and (case.order_number or "").upper() != d.order_number.upper():
        raise _Refuse(f"the Order column says {d.order_number} but {d.case_ref} is for order "
                      f"{case.order_number or '(none)'}: was the row edited?")
    if case.state != CaseState.ESCALATED:
        return  # the queue answers "already applied" or "not escalated"
    if d.escalated_at is not None and abs(
            (case.updated_at - d.escalated_at).total_seconds()) > STALE_TOLERANCE_SECONDS:
        raise _Refuse(f"{d.case_ref} changed since this file was written: write a new "
                      "escalations file and decide again")
    if d.decision == "approve" and d.amount is None and not case.approved_amount:
        raise _Refuse("approve without an Amount, and the bot proposed none: enter the Amount")
