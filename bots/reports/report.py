"""The Excel workbook written for every run: what happened, and whether the money agrees.

Four sheets, always in this order: Summary, Cases, Reconciliation, Quarantine. Every
cell goes through :mod:`bots.reports.excel_safe` (customer text never becomes a formula),
money is written as numbers with a money format so staff can sum and filter it, and
times as real Excel dates (UTC). The file is written atomically: a crash mid-write
leaves the previous report (or none), never half a workbook.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from openpyxl import Workbook, load_workbook
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from bots.models import Quarantined, money
from bots.reports.excel_safe import (
    DATETIME_FORMAT,
    MONEY_FORMAT,
    neutralise,
    write_cell,
)
from bots.reports.reconcile import ReconRow, ReconStatus, summarise

SHEETS = ("Summary", "Cases", "Reconciliation", "Quarantine")
OUTCOMES = ("refunded", "partial", "rejected", "escalated", "failed", "queued")
MAX_WIDTH = 60
MIN_WIDTH = 8
CHANNEL_NOTE = ("A case with several channels counts once per channel, so these counts can "
                "add up to more than the number of cases.")


@dataclass(frozen=True)
class CaseRow:
    """One case touched by the run, as an ops agent reads it."""

    case_ref: str
    channels: str  # e.g. "email, spreadsheet"
    customer: str
    customer_email: str
    order_number: str
    requested: Decimal | None
    approved: Decimal | None
    refund_number: str | None
    outcome: str  # refunded | partial | rejected | escalated | failed | queued
    reason: str  # the rules that fired, joined by "; "
    attempts: int
    sources: int  # customer contacts merged into the case


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    started_at: datetime
    finished_at: datetime
    orders_url: str
    payments_url: str
    dry_run: bool = False


@dataclass(frozen=True)
class Column:
    """A sheet column: its header, how to get the value from a record, its format."""

    header: str
    get: str  # attribute name on the record
    number_format: str | None = None


CASE_COLUMNS = (
    Column("Case", "case_ref"),
    Column("Channels", "channels"),
    Column("Customer", "customer"),
    Column("Customer email", "customer_email"),
    Column("Order number", "order_number"),
    Column("Requested", "requested", MONEY_FORMAT),
    Column("Approved", "approved", MONEY_FORMAT),
    Column("Refund number", "refund_number"),
    Column("Outcome", "outcome"),
    Column("Reason", "reason"),
    Column("Attempts", "attempts", "0"),
    Column("Contacts merged", "sources", "0"),
)
RECON_COLUMNS = (
    Column("Status", "status"),
    Column("Case", "case_ref"),
    Column("Order number", "order_number"),
    Column("Reference", "reference"),
    Column("Ledger amount", "ledger_amount", MONEY_FORMAT),
    Column("Portal amount", "portal_amount", MONEY_FORMAT),
    Column("Ledger refund number", "ledger_refund_number"),
    Column("Portal refund id", "portal_refund_id"),
    Column("Note", "note"),
)
QUARANTINE_COLUMNS = (
    Column("Channel", "channel"),
    Column("Source id", "source_id"),
    Column("Source", "source_ref"),
    Column("Reason", "reason"),
    Column("Excerpt", "excerpt"),
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
                 quarantined: Sequence[Quarantined]) -> Path:
    """Write the run's workbook to `path` (atomically) and return the path."""
    wb = Workbook()
    summary = wb.active
    assert summary is not None
    summary.title = "Summary"
    _write_summary(summary, summary_lines(run, cases, recon, quarantined))
    _write_table(wb.create_sheet("Cases"), CASE_COLUMNS, cases)
    _write_table(wb.create_sheet("Reconciliation"), RECON_COLUMNS, recon)
    _write_table(wb.create_sheet("Quarantine"), QUARANTINE_COLUMNS, quarantined)
    wb.properties.creator = "refund-bots"
    wb.properties.title = str(neutralise(f"Refund run {run.run_id}"))
    return _save_atomically(wb, Path(path))


def reconciliation_line(recon: Sequence[ReconRow]) -> str:
    """The one line an ops agent reads first."""
    problems = sum(1 for r in recon if r.status is not ReconStatus.MATCHED)
    if not problems:
        return "Reconciliation: OK"
    return f"Reconciliation: {problems} problem(s) — see Reconciliation sheet"


def summary_lines(run: RunInfo, cases: Sequence[CaseRow], recon: Sequence[ReconRow],
                  quarantined: Sequence[Quarantined]) -> list[SummaryLine]:
    """Everything on the Summary sheet, as data (so it can be tested without a file)."""
    return [
        SummaryLine("Result", "Reconciliation", reconciliation_line(recon)),
        *_run_lines(run),
        *_outcome_lines(cases),
        *_channel_lines(cases),
        *_money_lines(cases, recon),
        *[SummaryLine("Reconciliation", str(status), n, number_format="0")
          for status, n in summarise(recon).items()],
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


# -- summary -----------------------------------------------------------------------------


def _run_lines(run: RunInfo) -> list[SummaryLine]:
    mode = ("dry run: nothing was submitted in the portal" if run.dry_run
            else "live")
    return [
        SummaryLine("Run", "Run id", run.run_id),
        SummaryLine("Run", "Started (UTC)", run.started_at, number_format=DATETIME_FORMAT),
        SummaryLine("Run", "Finished (UTC)", run.finished_at, number_format=DATETIME_FORMAT),
        SummaryLine("Run", "Mode", mode),
        SummaryLine("Run", "Orders system URL", run.orders_url),
        SummaryLine("Run", "Payment portal URL", run.payments_url),
    ]


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


def _money_lines(cases: Sequence[CaseRow], recon: Sequence[ReconRow]) -> list[SummaryLine]:
    no_claim = sum(1 for c in cases if c.requested is None)
    matched = [r for r in recon if r.status is ReconStatus.MATCHED]
    return [
        SummaryLine("Money", "Requested", _total(c.requested for c in cases),
                    f"{no_claim} case(s) did not state an amount" if no_claim else "",
                    MONEY_FORMAT),
        SummaryLine("Money", "Approved", _total(c.approved for c in cases),
                    number_format=MONEY_FORMAT),
        SummaryLine("Money", "Refunded in portal", _total(r.portal_amount for r in matched),
                    "sum of portal amounts of matched reconciliation rows", MONEY_FORMAT),
    ]


def _total(amounts: Iterable[Decimal | None]) -> Decimal:
    return money(sum((a for a in amounts if a is not None), Decimal(0)))


def _write_summary(ws: Worksheet, lines: Sequence[SummaryLine]) -> None:
    _write_header(ws, SUMMARY_HEADERS)
    for r, line in enumerate(lines, start=2):
        write_cell(ws, r, 1, line.section)
        write_cell(ws, r, 2, line.item)
        write_cell(ws, r, 3, line.value, line.number_format)
        write_cell(ws, r, 4, line.note)
    ws["C2"].font = Font(bold=True)  # the reconciliation line
    _finish_sheet(ws, len(SUMMARY_HEADERS))


# -- tables ------------------------------------------------------------------------------


def _write_table(ws: Worksheet, columns: Sequence[Column], records: Iterable[object]) -> None:
    _write_header(ws, [c.header for c in columns])
    for r, record in enumerate(records, start=2):
        for c, col in enumerate(columns, start=1):
            value = getattr(record, col.get)
            if col.number_format == MONEY_FORMAT and value is not None:
                value = money(value)
            write_cell(ws, r, c, value, col.number_format)
    _finish_sheet(ws, len(columns))


def _write_header(ws: Worksheet, headers: Sequence[str]) -> None:
    bold = Font(bold=True)
    for c, header in enumerate(headers, start=1):
        write_cell(ws, 1, c, header).font = bold


def _finish_sheet(ws: Worksheet, ncols: int) -> None:
    """Frozen bold header, autofilter over the data, widths from content (capped)."""
    last = get_column_letter(ncols)
    ws.freeze_panes = "A2"
    ws.auto_filter.ref = f"A1:{last}{max(ws.max_row, 1)}"
    for c in range(1, ncols + 1):
        width = max((_display_len(cell.value, cell.number_format)
                     for (cell,) in ws.iter_rows(min_col=c, max_col=c)), default=0)
        ws.column_dimensions[get_column_letter(c)].width = min(max(width + 2, MIN_WIDTH),
                                                               MAX_WIDTH)


def _display_len(value: object, number_format: str) -> int:
    if value is None:
        return 0
    if isinstance(value, datetime):
        return 19
    if isinstance(value, Decimal | float | int) and number_format == MONEY_FORMAT:
        return len(f"{value:,.2f}")
    text = str(value)
    # Only the first MAX_WIDTH characters of each line matter once the width is capped.
    return max(len(line) for line in text[: MAX_WIDTH * 4].split("\n"))


# -- files -------------------------------------------------------------------------------


def _save_atomically(wb: Workbook, path: Path) -> Path:
    """Save next to `path`, flush to disk, then rename over it: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would survive the rename and hide the report from ops.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
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
    if (isinstance(value, int | float) and not isinstance(value, bool)
            and getattr(cell, "number_format", None) == MONEY_FORMAT):
        return money(value)
    return value
