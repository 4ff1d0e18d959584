"""Reading .xlsx workbooks as a person sees them, in bounded time and memory.

What a person sees is not all the file holds: hidden sheets, rows and columns, and
formula cells whose value is whatever Excel last computed (or nothing, when another
tool wrote the file). And a few kilobytes can declare a sheet of 17 billion cells: a
4.9 KB file declaring `A1:XFD1048576` made the old reader use 4.6 GB. So, in order:

1. bounds before parsing: file size, the zip's member count and unpacked size, the
   number of sheets, each sheet's declared dimension;
2. the cells, streamed (openpyxl's read-only mode, declared dimensions ignored so that
   no row is padded to a width nobody wrote), with the row and column counts bounded
   while reading;
3. a second streamed pass over each sheet's XML for what read-only mode does not say:
   hidden rows and columns, and which cells are formulas (with or without a saved value).

A workbook over a bound is one reason (`WorkbookTooLarge`), a sheet over a bound is
skipped with its reason; the caller quarantines both.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import iterparse

MAX_BYTES = 50_000_000  # the file on disk
MAX_UNPACKED = 400_000_000  # every zip member unpacked (a zip bomb stops here)
MAX_MEMBERS = 5_000
MAX_SHEETS = 50
MAX_ROWS = 200_000  # per sheet
MAX_COLUMNS = 200  # per sheet: a request sheet has a dozen

_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_CELL_REF = re.compile(r"([A-Z]{1,3})(\d+)")


class WorkbookTooLarge(Exception):
    """The workbook exceeds a bound before anything is parsed: the reason says which."""


@dataclass
class SheetCells:
    """One sheet's visible truth: values by (0-based) row, and what is hidden or computed."""

    name: str
    state: str  # visible, hidden, veryHidden
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    hidden_rows: set[int] = field(default_factory=set)  # 0-based row positions
    hidden_columns: set[int] = field(default_factory=set)  # 0-based column positions
    formulas: dict[tuple[int, int], bool] = field(default_factory=dict)  # -> has saved value
    problem: str = ""  # over a bound: the sheet is not read


def _mb(n: int) -> str:
    return f"{n / 1_000_000:,.1f} MB"


def check_zip(path: Path) -> None:
    """Bounds a workbook must meet before any XML in it is parsed."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise WorkbookTooLarge(f"the workbook is {_mb(size)}, more than the {_mb(MAX_BYTES)} "
                               "an intake sheet can be: split it or handle it by hand")
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise WorkbookTooLarge(f"not a readable Excel workbook ({exc})") from exc
    if len(infos) > MAX_MEMBERS:
        raise WorkbookTooLarge(f"the workbook holds {len(infos):,} parts (more than "
                               f"{MAX_MEMBERS:,}): not read")
    unpacked = sum(i.file_size for i in infos)
    if unpacked > MAX_UNPACKED:
        raise WorkbookTooLarge(f"the workbook unpacks to {_mb(unpacked)} (more than "
                               f"{_mb(MAX_UNPACKED)}): not read")


def read_workbook(path: Path) -> list[SheetCells]:
    """Every sheet's cells and visibility, within the bounds above."""
    import openpyxl
    from openpyxl.worksheet._read_only import ReadOnlyWorksheet

    check_zip(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # openpyxl warns about styles and extensions
        book = openpyxl.load_workbook(path, read_only=True, data_only=True, keep_links=False)
    try:
        sheets = list(book.worksheets)
        if len(sheets) > MAX_SHEETS:
            raise WorkbookTooLarge(f"the workbook has {len(sheets)} sheets (more than "
                                   f"{MAX_SHEETS}): not read")
        out = []
        with zipfile.ZipFile(path) as z:
            for ws in sheets:
                sheet = SheetCells(ws.title, getattr(ws, "sheet_state", "visible") or "visible")
                if isinstance(ws, ReadOnlyWorksheet):
                    _read_sheet(ws, z, sheet)
                out.append(sheet)
        return out
    finally:
        book.close()


def _read_sheet(ws: Any, z: zipfile.ZipFile, sheet: SheetCells) -> None:
    rows, cols = ws.max_row or 0, ws.max_column or 0  # as the sheet declares them
    if rows > MAX_ROWS or cols > MAX_COLUMNS:
        sheet.problem = (f"it declares {rows:,} rows x {cols:,} columns, more than the "
                         f"{MAX_ROWS:,} x {MAX_COLUMNS} a request sheet can have: not read")
        return
    ws.reset_dimensions()  # never pad rows to a declared width
    for n, row in enumerate(ws.iter_rows(values_only=True)):
        if n >= MAX_ROWS or len(row) > MAX_COLUMNS:
            sheet.problem = (f"it has more than {MAX_ROWS:,} rows or {MAX_COLUMNS} columns: "
                             "not read")
            sheet.rows = []
            return
        sheet.rows.append(tuple(row))
    _scan_xml(z, ws._worksheet_path, sheet)


def _column_index(letters: str) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n - 1


def _scan_xml(z: zipfile.ZipFile, member: str, sheet: SheetCells) -> None:
    """Hidden rows and columns, and formula cells, from the sheet's XML (streamed)."""
    row_pos, col_pos = -1, -1
    with z.open(member) as fh:
        for event, elem in iterparse(fh, events=("start", "end")):
            tag = elem.tag
            if event == "start":
                if tag == f"{_NS}row":
                    r = elem.get("r")
                    row_pos = int(r) - 1 if r and r.isdigit() else row_pos + 1
                    col_pos = -1
                    if elem.get("hidden") in ("1", "true"):
                        sheet.hidden_rows.add(row_pos)
                elif tag == f"{_NS}col" and elem.get("hidden") in ("1", "true"):
                    low, high = int(elem.get("min", "1")), int(elem.get("max", "1"))
                    sheet.hidden_columns.update(range(low - 1, min(high, MAX_COLUMNS)))
                continue
            if tag == f"{_NS}c":
                ref = _CELL_REF.fullmatch(elem.get("r") or "")
                col_pos = _column_index(ref[1]) if ref else col_pos + 1
                if elem.find(f"{_NS}f") is not None:
                    value = elem.find(f"{_NS}v")
                    sheet.formulas[(row_pos, col_pos)] = bool(
                        value is not None and (value.text or "").strip())
                elem.clear()
            elif tag == f"{_NS}row":
                elem.clear()
            if row_pos >= MAX_ROWS:
                break
