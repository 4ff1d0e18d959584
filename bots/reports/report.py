"""The Excel workbook written for every run: what happened, and whether the money agrees.

Five sheets, always in this order: Summary, Cases, Reconciliation, Breaks, Quarantine.
It is a finance report: every amount is a number in its row's currency format (EUR is
never added to GBP: totals are per currency), dates are dates, headers are frozen and
filtered, long text wraps with its row tall enough, breaks and outcomes are coloured by
conditional formatting, the Summary has a chart and prints on one landscape page.

Every text cell goes through :mod:`bots.reports.excel_safe` (customer text never becomes
a formula). The workbook is streamed (XlsxWriter's constant-memory mode, through
:mod:`bots.reports.xlsx`: memory stays flat at 100,000 cases) and written atomically: a
crash mid-write leaves the previous report.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from openpyxl import Workbook, load_workbook
from openpyxl.cell.cell import ERROR_CODES
from xlsxwriter.worksheet import Worksheet

from bots.models import Quarantined, money
from bots.reports.excel_safe import (
    DATE_FORMAT,
    DATETIME_FORMAT,
    MONEY_FORMAT,
    neutralise,
)
from bots.reports.excel_safe import _fit as fit_text
from bots.reports.reconcile import ReconRow, ReconStatus, summarise
from bots.reports.xlsx import FLUSH_EVERY, Book, forget_flushed_rows, temp_path, write_value

SHEETS = ("Summary", "Cases", "Reconciliation", "Breaks", "Quarantine")
OUTCOMES = ("refunded", "partial", "rejected", "escalated", "failed", "queued")
MAX_WIDTH = 60
MIN_WIDTH = 8
MAX_LINES = 8  # a wrapped cell shows at most this many lines; the rest is in the cell
LINE_HEIGHT = 15.0
CHANNEL_NOTE = ("A case with several channels counts once per channel, so these counts can "
                "add up to more than the number of cases.")
RED, GREEN, AMBER = "F8CBAD", "C6EFCE", "FFEB9C"
HEADER_FILL = "D9E1F2"


@dataclass(frozen=True)
class CaseRow:
    """One case touched by the run, as an ops agent reads it."""

    case_ref: str
    channels: str  # e.g. "email, spreadsheet"
    customer: str
    customer_email: str
    order_number: str
    requested: Decimal | None
    approved: Decimal | None  # what policy or a human approved; never a mere proposal
    refund_number: str | None
    outcome: str  # refunded | partial | rejected | escalated | failed | queued
    reason: str  # the rules that fired, joined by "; "
    attempts: int
    sources: int  # customer contacts merged into the case
    currency: str = ""
    received_at: datetime | None = None
    decided_at: datetime | None = None
    reason_category: str = ""
    proposal: Decimal | None = None  # escalated: the bot's proposal, awaiting a human
    decided_by: str = ""  # "policy" | "human" | ""

    def age_days(self, now: datetime) -> int | None:
        if self.received_at is None:
            return None
        end = self.decided_at or now
        return max((end - self.received_at).days, 0)


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    started_at: datetime
    finished_at: datetime
    orders_url: str
    payments_url: str
    dry_run: bool = False


@dataclass(frozen=True)
class BreakLine:
    """One break of the register, as the report carries it forward."""

    ref: str
    state: str
    kind: str
    first_seen: datetime
    age_days: int
    owner: str
    business_day: str
    case_ref: str
    order_number: str
    refund_id: str
    currency: str
    amount: Decimal | None
    note: str
    resolution: str = ""


@dataclass(frozen=True)
class Books:
    """The reconciliation's context: period, break balances, audit chain head."""

    first_day: date | None = None
    last_day: date | None = None
    opening: Sequence[BreakLine] = ()  # live breaks before this reconciliation
    closing: Sequence[BreakLine] = ()  # live breaks after it (all runs)
    new_breaks: int = 0
    settled: Mapping[str, str] = field(default_factory=dict)  # break key -> who settled, why
    break_refs: Mapping[str, str] = field(default_factory=dict)  # break key -> B-000003
    unread_days: Sequence[date] = ()
    listing_size: int = 0
    chain_head: str = ""
    order_notes: str = ""  # the three-way step against the order notes, in words


@dataclass(frozen=True)
class Column:
    """A sheet column: header, value getter, format, width, whether it wraps."""

    header: str
    get: str | Callable[[Any], Any]  # attribute name on the record, or a function
    number_format: str | None = None  # "money": the row's currency format
    width: float | None = None
    wrap: bool = False
    currency: str = "currency"  # attribute holding the row's currency (money columns)


CASE_COLUMNS = (
    Column("Case", "case_ref", width=11),
    Column("Channels", "channels", width=16, wrap=True),
    Column("Customer", "customer", width=20, wrap=True),
    Column("Customer email", "customer_email", width=26),
    Column("Order number", "order_number", width=14),
    Column("Reason category", "reason_category", width=14),
    Column("Received", "received_at", DATETIME_FORMAT, width=17),
    Column("Decided", "decided_at", DATETIME_FORMAT, width=17),
    Column("Age (days)", "age", "0", width=9),
    Column("Currency", "currency", width=9),
    Column("Requested", "requested", "money", width=15),
    Column("Approved", "approved", "money", width=15),
    Column("Proposal (awaiting a human)", "proposal", "money", width=16),
    Column("Decided by", "decided_by", width=10),
    Column("Refund number", "refund_number", width=14),
    Column("Outcome", "outcome", width=12),
    Column("Reason", "reason", width=60, wrap=True),
    Column("Attempts", "attempts", "0", width=9),
    Column("Contacts merged", "sources", "0", width=9),
)
RECON_COLUMNS = (
    Column("Status", "status", width=22, wrap=True),
    Column("Business day", "day", DATE_FORMAT, width=12),
    Column("Case", "case_ref", width=11),
    Column("Order number", "order_number", width=14),
    Column("Reference", "reference", width=22, wrap=True),
    Column("Currency", "currency", width=9),
    Column("Ledger amount", "ledger_amount", "money", width=15),
    Column("Portal amount", "portal_amount", "money", width=15),
    Column("Ledger refund number", "ledger_refund_number", width=14),
    Column("Portal refund id", "portal_refund_id", width=14),
    Column("Operator", "operator", width=12),
    Column("Break", "break", width=26, wrap=True),
    Column("Note", "note", width=60, wrap=True),
)
BREAK_COLUMNS = (
    Column("Break", "ref", width=10),
    Column("State", "state", width=13),
    Column("Kind", "kind", width=22, wrap=True),
    Column("First seen", "first_seen", DATETIME_FORMAT, width=17),
    Column("Age (days)", "age_days", "0", width=9),
    Column("Owner", "owner", width=12),
    Column("Business day", "business_day", width=12),
    Column("Case", "case_ref", width=11),
    Column("Order number", "order_number", width=14),
    Column("Portal refund id", "refund_id", width=14),
    Column("Currency", "currency", width=9),
    Column("Amount", "amount", "money", width=15),
    Column("Note", "note", width=60, wrap=True),
)
QUARANTINE_COLUMNS = (
    Column("Channel", "channel", width=12),
    Column("Source id", "source_id", width=30, wrap=True),
    Column("Source", "source_ref", width=24, wrap=True),
    Column("Reason", "reason", width=40, wrap=True),
    Column("Excerpt", "excerpt", width=60, wrap=True),
)
SUMMARY_HEADERS = ("Section", "Item", "Value", "Note")


@dataclass(frozen=True)
class SummaryLine:
    section: str
    item: str
    value: object
    note: str = ""
    number_format: str | None = None


def write_report(path: Path, run: RunInfo, cases: Sequence[CaseRow], recon: Sequence[ReconRow],
                 quarantined: Sequence[Quarantined], books: Books | None = None) -> Path:
    """Write the run's workbook to `path` (atomically) and return the path."""
    books = books or Books()
    with Book(Path(path), title=f"Refund run {run.run_id}") as book:
        _write_workbook(book, run, cases, recon, quarantined, books)
        return book.save()


def _write_workbook(book: Book, run: RunInfo, cases: Sequence[CaseRow],
                    recon: Sequence[ReconRow], quarantined: Sequence[Quarantined],
                    books: Books) -> None:
    lines = summary_lines(run, cases, recon, quarantined, books)
    _write_summary(book, lines, failing=problem_count(recon, books) > 0)
    now = run.finished_at
    _write_table(book, "Cases", CASE_COLUMNS, cases, {"age": lambda c: c.age_days(now)},
                 status=("Outcome", ("rejected", "escalated", "failed", "queued"), "refunded"))
    _write_table(book, "Reconciliation", RECON_COLUMNS, recon,
                 {"break": lambda r: _break_label(r, books),
                  "status": lambda r: str(r.status)},
                 status=("Status", tuple(str(s) for s in ReconStatus  # in flight: no colour
                                          if s not in (ReconStatus.MATCHED,
                                                       ReconStatus.IN_FLIGHT)), "matched"))
    _write_table(book, "Breaks", BREAK_COLUMNS, books.closing, {},
                 status=("State", ("open",), "resolved"))
    _write_table(book, "Quarantine", QUARANTINE_COLUMNS, quarantined, {})


def problem_count(recon: Sequence[ReconRow], books: Books) -> int:
    """What is not matched: this run's unsettled rows, or any break still open."""
    mine = sum(1 for r in recon if r.is_problem and r.break_key not in books.settled)
    return max(mine, len(books.closing))


def reconciliation_line(recon: Sequence[ReconRow], books: Books | None = None) -> str:
    """The one line an ops agent reads first."""
    books = books or Books()
    mine = sum(1 for r in recon if r.is_problem and r.break_key not in books.settled)
    if not mine and not books.closing:
        return "Reconciliation: OK"
    if not books.closing and not books.break_refs:
        return f"Reconciliation: {mine} problem(s) — see Reconciliation sheet"
    carried = len(books.closing) - books.new_breaks
    return (f"Reconciliation: {len(books.closing)} open break(s) ({books.new_breaks} new, "
            f"{max(carried, 0)} carried forward) — see the Reconciliation and Breaks sheets")


def summary_lines(run: RunInfo, cases: Sequence[CaseRow], recon: Sequence[ReconRow],
                  quarantined: Sequence[Quarantined],
                  books: Books | None = None) -> list[SummaryLine]:
    """Everything on the Summary sheet, as data (so it can be tested without a file)."""
    books = books or Books()
    return [
        SummaryLine("Result", "Reconciliation", reconciliation_line(recon, books)),
        *_run_lines(run, books),
        *_outcome_lines(cases),
        *_channel_lines(cases),
        *_money_lines(cases, recon),
        *_bridge_lines(cases, recon),
        *[SummaryLine("Reconciliation", str(status), n, number_format="0")
          for status, n in summarise(recon).items()],
        *_break_lines(books),
        SummaryLine("Quarantine", "Quarantined inputs", len(quarantined),
                    "inputs that could not become a request; listed on the Quarantine sheet",
                    "0"),
    ]


def read_report(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Read a report back: sheet name -> rows as {header: value}, in sheet order.

    Money cells come back as `Decimal` (cents), dates as naive UTC `datetime`, text as
    written (guard apostrophe included: this is what the cell shows).
    """
    wb = load_workbook(path, read_only=True, data_only=True)
    try:
        return {ws.title: _read_sheet(ws) for ws in wb.worksheets}
    finally:
        wb.close()


def money_format(currency: str | None) -> str:
    """The number format of an amount in this currency: `1,234.50 EUR`."""
    cur = (currency or "").strip().upper()
    if len(cur) == 3 and cur.isalpha():
        return f'#,##0.00 "{cur}"'
    return MONEY_FORMAT


# -- summary -----------------------------------------------------------------------------


def _run_lines(run: RunInfo, books: Books) -> list[SummaryLine]:
    mode = ("dry run: nothing was submitted in the portal" if run.dry_run
            else "live")
    lines = [
        SummaryLine("Run", "Run id", run.run_id),
        SummaryLine("Run", "Started (UTC)", run.started_at, number_format=DATETIME_FORMAT),
        SummaryLine("Run", "Finished (UTC)", run.finished_at, number_format=DATETIME_FORMAT),
        SummaryLine("Run", "Mode", mode),
        SummaryLine("Run", "Orders system URL", run.orders_url),
        SummaryLine("Run", "Payment portal URL", run.payments_url),
    ]
    if books.first_day is not None:
        unread = ", ".join(str(d) for d in books.unread_days)
        lines.append(SummaryLine(
            "Run", "Portal refunds reconciled",
            f"{books.first_day} to {books.last_day} (business days, UTC)",
            f"{books.listing_size} refund(s) listed" +
            (f"; NOT READ (retried): {unread}" if unread else "")))
    if books.order_notes:
        lines.append(SummaryLine("Run", "Order notes (three-way)", books.order_notes,
                                 "each refund's note on its order, each note's refund"))
    if books.chain_head:
        lines.append(SummaryLine("Run", "Audit chain head", books.chain_head,
                                 "check later with: refund-bots audit verify --head "
                                 f"{books.chain_head.split(':')[0]}:<hash>"))
    return lines


def _outcome_lines(cases: Sequence[CaseRow]) -> list[SummaryLine]:
    counts = Counter(c.outcome.strip() or "(none)" for c in cases)
    names = [*OUTCOMES, *sorted(set(counts) - set(OUTCOMES))]
    return [SummaryLine("Cases", "Total cases", len(cases), number_format="0"),
            *[SummaryLine("Cases by outcome", name, counts.get(name, 0), number_format="0")
              for name in names]]


def _channel_lines(cases: Sequence[CaseRow]) -> list[SummaryLine]:
    counts: Counter[str] = Counter()
    for case in cases:
        counts.update(set(_channels(case.channels)) or {"(none)"})
    lines = [SummaryLine("Cases by channel", name, n, number_format="0")
             for name, n in sorted(counts.items())]
    if lines:
        first = lines[0]
        lines[0] = SummaryLine(first.section, first.item, first.value, CHANNEL_NOTE,
                               first.number_format)
    return lines


def _channels(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _currencies(cases: Sequence[CaseRow], recon: Sequence[ReconRow]) -> list[str]:
    found = {c.currency.upper() for c in cases} | {r.currency.upper() for r in recon}
    return sorted(found) or [""]


def _label(item: str, cur: str) -> str:
    return f"{item} ({cur})" if cur else item


def _money_lines(cases: Sequence[CaseRow], recon: Sequence[ReconRow]) -> list[SummaryLine]:
    out = []
    for cur in _currencies(cases, recon):
        mine = [c for c in cases if c.currency.upper() == cur]
        matched = [r for r in recon if r.status is ReconStatus.MATCHED
                   and r.currency.upper() == cur]
        no_claim = sum(1 for c in mine if c.requested is None)
        fmt = money_format(cur)
        out += [
            SummaryLine("Money", _label("Requested", cur), _total(c.requested for c in mine),
                        f"{no_claim} case(s) did not state an amount" if no_claim else "", fmt),
            SummaryLine("Money", _label("Approved", cur), _total(c.approved for c in mine),
                        "by policy or by a person; proposals awaiting a human are not "
                        "approved", fmt),
            SummaryLine("Money", _label("Refunded in portal", cur),
                        _total(r.portal_amount for r in matched),
                        "sum of portal amounts of matched reconciliation rows", fmt),
        ]
    return out


def _bridge_lines(cases: Sequence[CaseRow], recon: Sequence[ReconRow]) -> list[SummaryLine]:
    """Requested -> approved (policy, humans) -> refunded, with what explains each step."""
    out = []
    for cur in _currencies(cases, recon):
        if not cur:
            continue
        mine = [c for c in cases if c.currency.upper() == cur]
        fmt = money_format(cur)

        def asked(c: CaseRow) -> Decimal:
            return c.requested if c.requested is not None else (c.approved or Decimal(0))

        def total(values: Iterable[Decimal | None]) -> Decimal:
            return _total(values)

        requested = total(asked(c) for c in mine)
        rejected = total(asked(c) for c in mine if c.outcome == "rejected")
        waiting = total(asked(c) for c in mine if c.outcome == "escalated")
        failed = total(asked(c) for c in mine if c.outcome in ("failed", "queued"))
        by_policy = total(c.approved for c in mine if c.decided_by != "human")
        by_human = total(c.approved for c in mine if c.decided_by == "human")
        reduced = requested - rejected - waiting - failed - by_policy - by_human
        refs = {c.case_ref for c in mine}  # once: this runs for every reconciliation row
        refunded = total(r.portal_amount for r in recon if r.status is ReconStatus.MATCHED
                         and r.currency.upper() == cur and r.case_ref in refs)
        breaks = total(r.portal_amount if r.portal_amount is not None else r.ledger_amount
                       for r in recon if r.is_problem and r.currency.upper() == cur)
        section = f"Bridge {cur}"
        out += [
            SummaryLine(section, "Requested by customers", requested,
                        "a case without a stated amount counts at what was approved", fmt),
            SummaryLine(section, "less: rejected", -rejected, "", fmt),
            SummaryLine(section, "less: awaiting a human decision", -waiting, "", fmt),
            SummaryLine(section, "less: failed or still queued", -failed, "", fmt),
            SummaryLine(section, "less: reduced by policy or a person", -reduced,
                        "partial refunds: lines, fees, caps, human amounts", fmt),
            SummaryLine(section, "approved by policy", by_policy, "", fmt),
            SummaryLine(section, "plus: approved by humans", by_human, "", fmt),
            SummaryLine(section, "less: approved, not (yet) matched in the portal",
                        -(by_policy + by_human - refunded),
                        "dry runs, pending refunds and breaks", fmt),
            SummaryLine(section, "refunded in the portal (matched)", refunded, "", fmt),
            SummaryLine(section, "breaks in this currency (amounts involved)", breaks,
                        "see the Reconciliation sheet", fmt),
        ]
    return out


def _break_lines(books: Books) -> list[SummaryLine]:
    if not books.break_refs and not books.closing and not books.opening:
        return []
    lines = [SummaryLine("Open breaks", "Opening (before this reconciliation)",
                         len(books.opening), number_format="0"),
             SummaryLine("Open breaks", "New", books.new_breaks, number_format="0"),
             SummaryLine("Open breaks", "Settled since",
                         len(books.opening) + books.new_breaks - len(books.closing),
                         number_format="0"),
             SummaryLine("Open breaks", "Closing (all runs, listed on the Breaks sheet)",
                         len(books.closing), number_format="0")]
    for label, group in (("Opening", books.opening), ("Closing", books.closing)):
        amounts: dict[str, Decimal] = defaultdict(lambda: Decimal("0.00"))
        for b in group:
            if b.amount is not None:
                amounts[b.currency or ""] += b.amount
        lines += [SummaryLine("Open breaks", _label(f"{label} balance", cur), money(total),
                              number_format=money_format(cur))
                  for cur, total in sorted(amounts.items())]
    if books.closing:
        oldest = max(b.age_days for b in books.closing)
        lines.append(SummaryLine("Open breaks", "Oldest open break (days)", oldest,
                                 number_format="0"))
    return lines


def _total(amounts: Iterable[Decimal | None]) -> Decimal:
    return money(sum((a for a in amounts if a is not None), Decimal(0)))


def _write_summary(book: Book, lines: Sequence[SummaryLine], *, failing: bool) -> None:
    ws = book.sheet("Summary")
    _sheet_setup(ws, [16, 42, 40, 60], fit_height=True)
    ws.set_tab_color("#C00000" if failing else "#00B050")
    ws.freeze_panes(1, 0)
    _write_header(book, ws, SUMMARY_HEADERS)
    result_fill = RED if failing else GREEN
    outcome_rows = []
    for r, line in enumerate(lines, start=1):
        first = r == 1  # the result line: bold, red or green
        fill = result_fill if first else None
        ws.set_row(r, _height([(line.note, 60), (str(line.value), 40)]))
        write_value(book, ws, r, 0, line.section, bold=first, fill=fill)
        write_value(book, ws, r, 1, line.item, bold=first, fill=fill)
        write_value(book, ws, r, 2, line.value, line.number_format, bold=first, fill=fill)
        write_value(book, ws, r, 3, line.note, wrap=True, bold=first, fill=fill)
        if line.section == "Cases by outcome":
            outcome_rows.append(r)
    ws.autofilter(0, 0, len(lines), len(SUMMARY_HEADERS) - 1)
    if outcome_rows:
        _outcome_chart(book, ws, outcome_rows[0], outcome_rows[-1])


def _outcome_chart(book: Book, ws: Worksheet, first: int, last: int) -> None:
    chart = book.wb.add_chart({"type": "bar"})
    if chart is None:
        return
    name = ws.get_name()
    chart.add_series({"categories": [name, first, 1, last, 1],
                      "values": [name, first, 2, last, 2], "name": "Cases"})
    chart.set_title({"name": "Cases by outcome"})
    chart.set_legend({"none": True})
    chart.set_size({"width": 454, "height": 265})  # 12 x 7 cm
    ws.insert_chart(1, 5, chart)


# -- tables ------------------------------------------------------------------------------


def _write_table(book: Book, title: str, columns: Sequence[Column], records: Iterable[Any],
                 extra: Mapping[str, Callable[[Any], Any]],
                 status: tuple[str, tuple[str, ...], str] | None = None) -> None:
    ws = book.sheet(title)
    _sheet_setup(ws, [c.width or 14 for c in columns])
    ws.freeze_panes(1, 0)
    ws.repeat_rows(0)
    _write_header(book, ws, [c.header for c in columns])
    getters = [_getter(c, extra) for c in columns]
    wrapped = [(i, min(c.width or 14, MAX_WIDTH)) for i, c in enumerate(columns) if c.wrap]
    plan = [(i, c.number_format, c.currency, c.wrap, book.fmt(c.number_format, wrap=c.wrap),
             book.fmt(wrap=True) if c.wrap else None) for i, c in enumerate(columns)]
    money_formats: dict[str, Any] = {}
    neutral, fit, number = neutralise, fit_text, _NUMBER
    # XlsxWriter's undecorated writers (the public ones only add A1-notation parsing).
    write_string = getattr(ws, "_write_string", ws.write_string)
    write_number = getattr(ws, "_write_number", ws.write_number)
    r = 0
    for record in records:
        r += 1
        values = [get(record) for get in getters]
        height = _height([(values[i], w) for i, w in wrapped])
        if height > LINE_HEIGHT:
            ws.set_row(r, height)
        for (i, fmt, cur_attr, wrap, cell_fmt, text_fmt), value in zip(plan, values,
                                                                        strict=True):
            if value is None:
                continue
            if fmt == "money":  # the row's currency format
                cur = getattr(record, cur_attr, "") or ""
                cell_fmt = money_formats.get(cur)
                if cell_fmt is None:
                    cell_fmt = money_formats[cur] = book.fmt(money_format(cur))
            cls = value.__class__
            if cls is str:
                write_string(r, i, fit(str(neutral(value))), text_fmt)
            elif cls in number:
                write_number(r, i, float(value) if cls is Decimal else value, cell_fmt)
            else:  # dates, enums, anything else: the general (slower) path
                shown = money_format(getattr(record, cur_attr, "")) if fmt == "money" else fmt
                write_value(book, ws, r, i, value, shown, wrap=wrap)
        if r % FLUSH_EVERY == 0:
            forget_flushed_rows(ws, r - 1)
    ws.autofilter(0, 0, r, len(columns) - 1)
    if status is not None:
        _status_colours(book, ws, columns, status, r)


_NUMBER = frozenset({int, float, Decimal})


def _status_colours(book: Book, ws: Worksheet, columns: Sequence[Column],
                    status: tuple[str, tuple[str, ...], str], last_row: int) -> None:
    """Conditional colours: red for breaks/bad outcomes, green for matched/done."""
    header, bad, good = status
    index = next((i for i, c in enumerate(columns) if c.header == header), None)
    if index is None or last_row < 1:
        return
    red, green = book.conditional_fill(RED), book.conditional_fill(GREEN)

    def rule(value: str, fill: Any) -> None:
        ws.conditional_format(1, index, last_row, index, {
            "type": "cell", "criteria": "equal to", "value": f'"{value}"', "format": fill})

    for value in bad:
        rule(value, red)
    rule(good, green)
    if good == "refunded":
        rule("partial", book.conditional_fill(AMBER))


def _getter(col: Column, extra: Mapping[str, Callable[[Any], Any]]) -> Callable[[Any], Any]:
    if callable(col.get):
        return col.get
    if col.get in extra:
        return extra[col.get]
    name = col.get
    return lambda record: getattr(record, name)


def _sheet_setup(ws: Worksheet, widths: Sequence[float], *, fit_height: bool = False) -> None:
    """Widths, print setup (landscape, A4, fit to width, repeated header)."""
    for i, width in enumerate(widths):
        ws.set_column(i, i, min(max(width, MIN_WIDTH), MAX_WIDTH))
    ws.set_landscape()
    ws.set_paper(9)  # A4
    ws.fit_to_pages(1, 1 if fit_height else 0)
    ws.set_margins(left=0.4, right=0.4)


def _write_header(book: Book, ws: Worksheet, headers: Sequence[str]) -> None:
    fmt = book.fmt(wrap=True, bold=True, fill=HEADER_FILL)
    for i, text in enumerate(headers):
        ws.write_string(0, i, fit_text(str(neutralise(text))), fmt)


def _height(texts: Iterable[tuple[object, float]]) -> float:
    """Row height for wrapped text: enough lines for the longest cell (capped)."""
    lines = 1
    for value, width in texts:
        if not isinstance(value, str) or not value:
            continue
        per_line = max(int(width * 1.1), 1)
        if len(value) <= per_line and "\n" not in value:
            continue
        count = sum(max(math.ceil(len(part) / per_line), 1)
                    for part in value[: per_line * MAX_LINES].split("\n"))
        lines = max(lines, min(count, MAX_LINES))
    return lines * LINE_HEIGHT

def _break_label(row: ReconRow, books: Books) -> str:
    if row.status is ReconStatus.MATCHED:
        return ""
    ref = books.break_refs.get(row.break_key, "")
    settled = books.settled.get(row.break_key)
    if settled:
        return f"{ref} {settled}".strip()
    return f"{ref} open".strip() if ref else ""


# -- files -------------------------------------------------------------------------------


def _save_atomically(wb: Workbook, path: Path) -> Path:
    """Save an openpyxl workbook (escalations.xlsx) next to `path`, flush it to disk, then
    rename it over `path`: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "xb") as fh:
            wb.save(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def _read_sheet(ws: Any) -> list[dict[str, Any]]:
    rows = ws.iter_rows()
    header_row = next(rows, None)
    if header_row is None:
        return []
    headers = [str(cell.value) for cell in header_row]
    out = []
    for row in rows:
        values = [_read_value(cell) for cell in row]
        if all(v is None for v in values):
            continue
        out.append(dict(zip(headers, values, strict=False)))
    return out


def _read_value(cell: Any) -> Any:
    value = getattr(cell, "value", None)
    fmt = getattr(cell, "number_format", None) or ""
    if (isinstance(value, int | float) and not isinstance(value, bool)
            and fmt.startswith(MONEY_FORMAT)):
        return money(value)
    return value


__all__ = ["ERROR_CODES", "SHEETS", "BreakLine", "Books", "CaseRow", "Column",
           "RunInfo", "SummaryLine", "money_format", "read_report", "write_report"]
