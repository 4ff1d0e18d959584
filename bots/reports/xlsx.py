"""A streamed XlsxWriter workbook, written atomically, with safe cells only.

The run's reconciliation workbook has a row per case and per reconciliation row: 100,000
cases must be written in seconds with memory that does not grow with the rows. XlsxWriter's
``constant_memory`` mode writes each row to disk as soon as the next one starts (about
three times faster per cell than openpyxl's write-only mode, ``refund-bots bench
report``). Its rules are followed here: rows strictly in order, a row's height set before
its cells.

Safety: every text goes through :func:`bots.reports.excel_safe.neutralise` and is written
with ``write_string`` (a string cell, never a formula, URL or number, whatever it looks
like), and the workbook is opened with ``strings_to_formulas/urls/numbers`` off as a
second guard. The file is written next to its final path, flushed to disk, and renamed
over it: a crash mid-write leaves the previous report.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import xlsxwriter
from xlsxwriter.format import Format
from xlsxwriter.worksheet import Worksheet

from bots.reports.excel_safe import DATE_FORMAT, DATETIME_FORMAT, neutralise
from bots.reports.excel_safe import _fit as fit_text

FLUSH_EVERY = 4096  # rows: forget the heights of rows already on disk (bounded memory)


def temp_path(path: Path) -> Path:
    """A fresh name next to `path` (same file system, so the rename is atomic).

    Not mkstemp: its 0600 mode would survive the rename and hide the report from ops.
    """
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def commit(tmp: Path, path: Path) -> Path:
    """Flush `tmp` to disk and rename it over `path`."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


class Book:
    """One workbook being written; `save()` makes it appear at its path, all or nothing."""

    def __init__(self, path: Path, *, title: str = "") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_path(self.path)
        # The rows on disk until the file is zipped: a folder of this book's own, removed
        # whatever happens (on the report's file system, not a RAM-backed /tmp).
        self.scratch = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        self.wb = xlsxwriter.Workbook(str(self.tmp), {
            "constant_memory": True, "strings_to_formulas": False,
            "strings_to_urls": False, "strings_to_numbers": False,
            "nan_inf_to_errors": True, "tmpdir": str(self.scratch)})
        props: dict[str, str] = {"author": "refund-bots"}
        if title:
            props["title"] = str(neutralise(title))
        self.wb.set_properties(props)
        self._formats: dict[tuple[Any, ...], Format] = {}

    def __enter__(self) -> Book:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if exc is not None:  # written only by save(); anything else leaves nothing behind
            self.discard()

    def sheet(self, title: str) -> Worksheet:
        return self.wb.add_worksheet(title)

    def fmt(self, number_format: str | None = None, *, wrap: bool = False, bold: bool = False,
            fill: str | None = None, top: bool = False) -> Format | None:
        """A cell format, made once per combination (XlsxWriter keeps every one it makes)."""
        key = (number_format, wrap, bold, fill, top)
        if key == (None, False, False, None, False):
            return None
        found = self._formats.get(key)
        if found is None:
            props: dict[str, Any] = {}
            if number_format:
                props["num_format"] = number_format
            if wrap:
                props.update(text_wrap=True, valign="top")
            elif top:
                props["valign"] = "top"
            if bold:
                props["bold"] = True
            if fill:
                props.update(pattern=1, bg_color=f"#{fill}")
            found = self._formats[key] = self.wb.add_format(props)
        return found

    def conditional_fill(self, colour: str) -> Format:
        """A format for conditional formatting: only the background."""
        key = ("conditional", colour)
        found = self._formats.get(key)
        if found is None:
            found = self._formats[key] = self.wb.add_format({"bg_color": f"#{colour}"})
        return found

    def save(self) -> Path:
        try:
            self.wb.close()
            return commit(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def discard(self) -> None:
        """Nothing of this book is left on disk (the previous report stays)."""
        shutil.rmtree(self.scratch, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.tmp.unlink()


def write_value(book: Book, ws: Worksheet, row: int, col: int, value: object,
                number_format: str | None = None, *, wrap: bool = False, bold: bool = False,
                fill: str | None = None) -> None:
    """Write one value the safe way: text neutralised and forced to a string cell; money,
    counts and dates as numbers with their format; aware datetimes in UTC."""
    safe = neutralise(value)
    if safe is None:
        if fill or bold:
            ws.write_blank(row, col, None, book.fmt(wrap=wrap, bold=bold, fill=fill))
        return
    if isinstance(safe, str):
        ws.write_string(row, col, fit_text(safe), book.fmt(wrap=wrap, bold=bold, fill=fill))
        return
    if isinstance(safe, datetime | date | time):
        if isinstance(safe, datetime) and safe.tzinfo is not None:
            safe = safe.astimezone(UTC).replace(tzinfo=None)
        default = DATETIME_FORMAT if isinstance(safe, datetime) else DATE_FORMAT
        ws.write_datetime(row, col, safe, book.fmt(number_format or default, wrap=wrap,
                                                   bold=bold, fill=fill))
        return
    if isinstance(safe, bool):
        ws.write_boolean(row, col, safe, book.fmt(number_format, bold=bold, fill=fill))
        return
    number = float(safe) if isinstance(safe, Decimal) else safe
    ws.write_number(row, col, number, book.fmt(number_format, wrap=wrap, bold=bold, fill=fill))


def forget_flushed_rows(ws: Worksheet, below: int) -> None:
    """Drop the row heights XlsxWriter keeps for rows already written to disk.

    In constant-memory mode the cells of a row leave memory when the next row starts, but
    each row's height stays in two dicts until the sheet closes (about 250 bytes a row).
    Rows below `below` are on disk and never looked at again (no images anchor on them
    in the big sheets), so their entries are dropped.
    """
    for name in ("row_info", "row_sizes"):
        table: Mapping[int, Any] | None = getattr(ws, name, None)
        if isinstance(table, dict):
            for r in [r for r in table if r < below]:
                del table[r]
