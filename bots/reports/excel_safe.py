"""Make customer text safe to put in a spreadsheet cell.

Refund requests are written by strangers, and the report is opened by staff in
Excel or LibreOffice. A reason like ``=HYPERLINK("http://evil","x")`` or
``+cmd|' /C calc'!A0`` must show up as text, never run as a formula or a DDE call.

The choice, following the OWASP "CSV Injection" guidance:

* A string whose first character is ``\\t`` or ``\\r``, or whose first character after
  leading whitespace/control characters is one of ``= + - @ |`` (or the full-width
  ``＝ ＋ － ＠`` some spreadsheet apps normalise to ASCII), gets a leading apostrophe
  ``'``. The apostrophe is kept *in the value*, so it is visible in the cell: the text
  stays readable, and the guard survives copy-paste and CSV export of the sheet,
  which a cell style alone would not. Only strings are guarded: a negative *number*
  stays a number.
* Control characters other than tab and newline are removed (they are invisible, most
  are illegal in XML and make openpyxl fail); ``\\r\\n``/``\\r`` become ``\\n`` because XML
  readers would turn a bare ``\\r`` into a newline anyway. Unpaired surrogates and the
  XML non-characters U+FFFE/U+FFFF are replaced, so that odd input can never make the
  whole workbook fail to save.
* Independently of the guard, :func:`write_cell` forces the cell's type to string, so
  openpyxl never writes a ``<f>`` (formula) or error cell for text, whatever it looks like.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import TypeAlias

from openpyxl.cell.cell import Cell
from openpyxl.worksheet.worksheet import Worksheet

GUARD = "'"
EXCEL_MAX_CHARS = 32_767  # longest text a cell may hold; longer makes Excel "repair" the file
MONEY_FORMAT = "#,##0.00"
DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
DATE_FORMAT = "yyyy-mm-dd"

_TRIGGERS = frozenset("=+-@|\uff1d\uff0b\uff0d\uff20")  # ASCII, then full-width = + - @
_LEADING_TRIGGERS = frozenset("\t\r")
# C0 controls except \t \n \r, DEL, C1 controls, surrogates, and the XML non-characters.
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_UNENCODABLE_RE = re.compile("[\ud800-\udfff\ufffe\uffff]")
# What may precede a trigger and still let a spreadsheet see the formula.
_LEADING_JUNK_RE = re.compile(r"^[\s\x00-\x1f\x7f-\x9f]*")

# What `neutralise` gives back, all of which a cell takes as its value.
CellValue: TypeAlias = bool | int | float | Decimal | date | time | str | None


def neutralise(value: object) -> CellValue:
    """Return `value` made safe for a cell: strings cleaned and guarded, the rest as is.

    Numbers (int, float, Decimal), booleans, dates, times and None pass through
    untouched so that they stay numbers and dates in the sheet. Any other object is
    written as its text, cleaned like any string.
    """
    if value is None or isinstance(value, bool | int | float | Decimal | date | time):
        return value
    if value.__class__ is str and value.isprintable():
        # The common case, without the regexes: a printable string holds no control
        # character, surrogate or non-character, and only a space can precede a trigger.
        return GUARD + value if value.lstrip(" ")[:1] in _TRIGGERS else value
    text = _UNENCODABLE_RE.sub("\ufffd", _CONTROL_RE.sub("", str(value)))
    guard = needs_guard(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return GUARD + text if guard else text


def needs_guard(text: str) -> bool:
    """True if a spreadsheet could read `text` as a formula (or DDE call)."""
    if not text:
        return False
    if text[0] in _LEADING_TRIGGERS:
        return True
    rest = _LEADING_JUNK_RE.sub("", text, count=1)
    return bool(rest) and rest[0] in _TRIGGERS


def force_text(cell: Cell, text: str) -> Cell:
    """Put `text` in `cell` as a string, whatever it looks like.

    openpyxl types a string starting with ``=`` as a formula (written as ``<f>``) and
    one equal to ``#N/A`` etc. as an error; forcing the type afterwards makes it an
    inline string in the XML. This does not clean or guard the text: see
    :func:`write_cell`.
    """
    cell.value = text
    cell.data_type = "s"
    return cell


def write_cell(ws: Worksheet, row: int, column: int, value: object,
               number_format: str | None = None) -> Cell:
    """Write one value the safe way: the only way report cells are written.

    Strings are neutralised, truncated to what Excel accepts, and forced to string
    type; aware datetimes are converted to UTC and made naive (Excel has no time
    zones, openpyxl refuses them); numbers and dates get a real number format.
    """
    cell = ws.cell(row=row, column=column)
    if not isinstance(cell, Cell):  # a MergedCell, whose value openpyxl keeps read-only
        raise ValueError(f"cell {cell.coordinate} is inside a merged range: it cannot be written")
    safe = neutralise(value)
    if isinstance(safe, str):
        force_text(cell, _fit(safe))
        return cell
    if isinstance(safe, datetime) and safe.tzinfo is not None:
        safe = safe.astimezone(UTC).replace(tzinfo=None)
    cell.value = safe
    if number_format:
        cell.number_format = number_format
    elif isinstance(safe, datetime):
        cell.number_format = DATETIME_FORMAT
    elif isinstance(safe, date):
        cell.number_format = DATE_FORMAT
    return cell


def _fit(text: str) -> str:
    """Cut text Excel could not hold, saying so in the cell rather than losing it silently."""
    if len(text) <= EXCEL_MAX_CHARS:
        return text
    marker = f" … [truncated, {len(text)} characters in total]"
    return text[: EXCEL_MAX_CHARS - len(marker)] + marker
