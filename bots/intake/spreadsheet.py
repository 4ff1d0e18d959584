"""Spreadsheet intake: the sheets ops and phone teams keep (.xlsx/.xlsm, .csv/.tsv/.txt).

People make these by hand: a title above the header, their own column names,
local number and date formats, blank rows, the header pasted twice. The reader
copes with all of that and never guesses: a row it cannot trust is quarantined
with the row number and the reason, so that someone can fix the sheet.

Per-cell work is done once per distinct value of a column (`_per_value`), which
keeps a 100,000-row sheet cheap: most columns repeat the same few values.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from numbers import Number
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.typing import NaTType

from bots.intake.extract import (
    DEFAULT_ORDER_PATTERNS,
    MAX_AMOUNT,
    classify_reasons,
    clean_text,
    currency_code,
    cut_text,
    find_order_numbers,
    mask_secrets,
    mask_secrets_many,
    normalise_email,
    normalise_phone,
    order_doubts,
    parse_amount,
)
from bots.intake.xlsx import WorkbookTooLarge, read_workbook
from bots.models import Channel, IntakeItem, Quarantined, RefundRequest, money

CHANNEL = Channel.SPREADSHEET.value
EXCEL_SUFFIXES = (".xlsx", ".xlsm")
TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
HEADER_SCAN_ROWS = 20
TEXT_ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")
DELIMITERS = (",", ";", "\t", "|")
MAX_TEXT_BYTES = 100_000_000  # a .csv/.tsv/.txt sheet; larger ones are quarantined unread
CELL_LIMIT = 131_072  # characters of one CSV cell kept (the csv module's default field limit)

DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "order_number": ("order number", "order #", "order no.", "order_number", "order",
                     "order id"),
    "customer_email": ("email", "e-mail", "customer email"),
    "customer_name": ("name", "customer", "customer name"),
    "customer_phone": ("phone", "telephone", "mobile"),
    "requested_amount": ("amount", "refund amount", "requested amount"),
    "currency": ("currency",),
    "reason_text": ("reason", "comment", "notes", "details"),
    "received_at": ("date", "received", "received at", "request date"),
}
FIELDS = tuple(DEFAULT_COLUMNS)
TEXT_LIMITS = {"customer_name": 200, "reason_text": 5000}


class _Unreadable(Exception):
    """The file as a whole cannot be read: one quarantined item stands for it."""


@dataclass(frozen=True)
class _Sheet:
    name: str
    label: str  # how a person finds it: "sheet 'Refunds'" or "requests.csv"
    frame: pd.DataFrame  # header=None, object cells, index = 0-based row in the file
    # What a person does not see (issue #12): skipped and reported, never requests.
    state: str = "visible"
    hidden_rows: frozenset[int] = frozenset()
    hidden_columns: frozenset[int] = frozenset()
    formulas: Mapping[tuple[int, int], bool] = field(default_factory=dict)  # -> saved value
    problem: str = ""  # over a bound: not read


def read_spreadsheet(path: Path, *, columns: Mapping[str, Sequence[str]] = DEFAULT_COLUMNS,
                     order_patterns: Sequence[str] = DEFAULT_ORDER_PATTERNS,
                     default_currency: str | None = None,
                     date_dayfirst: bool = True,
                     default_region: str | None = None,
                     trust_formula_results: bool = False) -> Iterator[IntakeItem]:
    """Every data row of every sheet, in sheet and row order, as a request or quarantined.

    Row ids hash the row's content, not its position, so re-reading a sheet that
    was re-sorted or appended to yields the same id for the same row. Two rows
    identical in every request field are the same request and share one id.
    Phones are stored in E.164; `default_region` ("GB") places national numbers.
    """
    path = Path(path)
    unknown = set(columns) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown spreadsheet fields {sorted(unknown)}; known: {FIELDS}")
    lookup = _header_lookup(columns)
    try:
        sheets = _load(path)
        fallback = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except _Unreadable as exc:
        yield Quarantined(CHANNEL, _file_id(path), str(exc), source_ref=str(path))
        return
    ctx = _Context(path, order_patterns, default_currency, date_dayfirst, fallback,
                   default_region, trust_formula_results)
    for sheet in sheets:
        if skipped := _unseen(sheet, ctx):
            yield skipped
            if sheet.state != "visible" or sheet.problem:
                continue
        try:
            yield from _read_sheet(sheet, lookup, ctx)
        except Exception as exc:  # one odd sheet must not stop the intake of every other source
            yield Quarantined(CHANNEL, f"{_file_id(path)}#{sheet.name}",
                              f"{sheet.label} of {path.name} could not be read "
                              f"({type(exc).__name__}: {exc})", source_ref=str(path))


@dataclass(frozen=True)
class _Context:
    path: Path
    order_patterns: Sequence[str]
    default_currency: str | None
    dayfirst: bool
    fallback_time: datetime
    region: str | None = None
    trust_formulas: bool = False  # use a formula's saved result (settings: trust_formula_results)


# --------------------------------------------------------------------------- loading


def _file_id(path: Path) -> str:
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        digest = "unreadable"
    return f"{path.name}#file#{digest}"


def _load(path: Path) -> list[_Sheet]:
    suffix = path.suffix.lower()
    if suffix in EXCEL_SUFFIXES:
        return _load_excel(path)
    if suffix in TEXT_SUFFIXES:
        return [_Sheet("", path.name, _load_text(path))]
    raise _Unreadable(f"unsupported file type '{suffix}': save the sheet as .xlsx or .csv")


def _load_excel(path: Path) -> list[_Sheet]:
    """Every sheet, bounded and streamed (see `bots.intake.xlsx`); cells stay as typed.

    "N/A", "NaN", "null" stay text, so that a placeholder is seen as one, never as an
    empty cell; hidden columns are blanked so that no header or value is read from them.
    """
    try:
        books = read_workbook(path)
    except WorkbookTooLarge as exc:
        raise _Unreadable(str(exc)) from exc
    except Exception as exc:  # zip, XML and openpyxl errors alike: the file is unusable
        raise _Unreadable(f"not a readable Excel workbook ({type(exc).__name__}: {exc})") from exc
    sheets = []
    for cells in books:
        width = max((len(r) for r in cells.rows), default=0)
        frame = pd.DataFrame([r + (None,) * (width - len(r)) for r in cells.rows],
                             dtype=object)
        for col in cells.hidden_columns:
            if col < width:
                frame[col] = None
        sheets.append(_Sheet(cells.name, f"sheet '{cells.name}'", frame, cells.state,
                             frozenset(cells.hidden_rows), frozenset(cells.hidden_columns),
                             cells.formulas, cells.problem))
    return sheets


def _unseen(sheet: _Sheet, ctx: _Context) -> Quarantined | None:
    """A hidden or oversized sheet, or a sheet's hidden columns: one item saying so."""
    label = f"{sheet.label} of {ctx.path.name}"
    sid = f"{_file_id(ctx.path)}#{sheet.name}"
    if sheet.problem:
        return Quarantined(CHANNEL, f"{sid}#bounds", f"{label}: {sheet.problem}",
                           source_ref=str(ctx.path))
    if sheet.state != "visible":
        if sheet.frame.empty or _blank_rows(sheet.frame).all():
            return None
        return Quarantined(CHANNEL, f"{sid}#hidden", f"{label} is hidden ({sheet.state}): "
                           "skipped, its rows are not requests", source_ref=str(ctx.path))
    used = [c for c in sorted(sheet.hidden_columns) if c < sheet.frame.shape[1]]
    if not used:
        return None
    letters = ", ".join(_column_letters(c) for c in used[:10])
    return Quarantined(CHANNEL, f"{sid}#hidden-columns", f"{label}: column(s) {letters} are "
                       "hidden: skipped, nothing in them is read", source_ref=str(ctx.path))


def _column_letters(col: int) -> str:
    letters = ""
    col += 1
    while col:
        col, rem = divmod(col - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def _load_text(path: Path) -> pd.DataFrame:
    """A delimited text file as cells of strings.

    Parsed with the csv module rather than `read_csv` because hand-made files
    have title lines above the header with fewer fields, which `read_csv`'s
    column inference rejects; pandas then holds the ragged rows.
    """
    try:
        size = path.stat().st_size
        if size > MAX_TEXT_BYTES:
            raise _Unreadable(f"the file is {size / 1e6:,.1f} MB, more than the "
                              f"{MAX_TEXT_BYTES / 1e6:,.0f} MB a request sheet can be: not read")
        data = path.read_bytes()
    except OSError as exc:
        raise _Unreadable(f"the file could not be read: {exc.strerror or exc}") from exc
    text = _decode(data)
    try:
        rows = csv_rows(text, _sniff_delimiter(text))
    except csv.Error as exc:
        raise _Unreadable(f"not a readable delimited text file ({exc})") from exc
    if not rows:
        raise _Unreadable("the file is empty")
    width = max(map(len, rows))
    return pd.DataFrame([r + [None] * (width - len(r)) if len(r) < width else r for r in rows],
                        dtype=object)


def csv_rows(text: str, delimiter: str) -> list[list[str]]:
    """Every row; a cell over CELL_LIMIT characters is cut there instead of failing the file.

    The csv module refuses a field over its limit (131,072 characters by default),
    and with it the whole file: one customer who pasted a novel into a cell would
    cost every other row. Files without such a cell are read once, as before; the
    rare file with one is read again with the limit lifted, then its long cells cut.
    """
    try:
        return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        if "field limit" not in str(exc):
            raise
    with _field_size_limit(len(text) + 1):  # no field is longer than the text holding it
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    return [[_cut(cell) for cell in row] for row in rows]


@contextmanager
def _field_size_limit(limit: int) -> Iterator[None]:
    """The csv module's limit is process-wide: lifted for one read only, then put back."""
    before = csv.field_size_limit()
    csv.field_size_limit(max(before, limit))
    try:
        yield
    finally:
        csv.field_size_limit(before)


def _cut(cell: str) -> str:
    """A cell cut at CELL_LIMIT (only the first 5,000 characters of a reason are kept)."""
    return cut_text(cell, CELL_LIMIT)


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's "Unicode text" export
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise _Unreadable("not a readable text file (broken UTF-16)") from exc
    if b"\x00" in data[:8192]:
        raise _Unreadable("a binary file, not a spreadsheet or delimited text file")
    for encoding in TEXT_ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any bytes")  # pragma: no cover


def _sniff_delimiter(text: str) -> str:
    """The delimiter that splits the most lines into the same number of fields."""
    lines = [line for line in text[:65536].splitlines() if line.strip()][:50]
    best, best_score = ",", (0, 0)
    for delim in DELIMITERS:
        counts = [line.count(delim) for line in lines if line.count(delim)]
        if not counts:
            continue
        common = max(set(counts), key=lambda n: (counts.count(n), n))
        score = (counts.count(common), common)
        if score > best_score:
            best, best_score = delim, score
    return best


# --------------------------------------------------------------------------- headers


def _header_key(value: Any) -> str:
    """`Order #`, `ORDER_NO.` and ` order no ` are one header; `Amount (EUR)` is `amount`."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = re.sub(r"\([^)]*\)", "", str(value))
    return re.sub(r"[\W_]+", "", text.casefold())


def _header_lookup(columns: Mapping[str, Sequence[str]]) -> dict[str, str]:
    lookup: dict[str, str] = {}
    for fld, synonyms in columns.items():
        for synonym in synonyms:
            lookup.setdefault(_header_key(synonym), fld)
    lookup.pop("", None)
    return lookup


# Fields where picking the wrong one of two columns moves money or tells a stranger:
# several candidate columns are resolved by specificity ("Refund amount" over "Amount"),
# or not at all (two equally specific ones quarantine every row with the reason).
_MONEY_FIELDS = ("order_number", "customer_email", "customer_phone", "requested_amount",
                 "currency")
# Header names that say only what kind of value a column holds, not which one: a column
# named anything else ("Refund amount", "Customer email") is the more specific choice.
_GENERIC_HEADERS = frozenset({"amount", "order", "email", "phone", "currency",
                              "total", "value", "sum", "betrag", "montant"})


@dataclass(frozen=True)
class _Header:
    row: int
    mapping: dict[str, int]  # field -> column position
    currency: str | None  # named in the amount header: "Amount (EUR)"
    problems: tuple[str, ...] = ()  # columns the reader cannot choose between


def _find_header(frame: pd.DataFrame, lookup: dict[str, str]) -> _Header | None:
    """The header row, which column holds each field, and which fields are ambiguous."""
    for pos in range(min(HEADER_SCAN_ROWS, len(frame))):
        candidates: dict[str, list[tuple[int, Any]]] = {}
        for col, value in enumerate(frame.iloc[pos].tolist()):
            fld = lookup.get(_header_key(value))
            if fld:
                candidates.setdefault(fld, []).append((col, value))
        if len(candidates) < 2:
            continue
        mapping: dict[str, int] = {}
        problems: list[str] = []
        currency = None
        for fld, cols in candidates.items():
            chosen = cols[:1]
            if fld in _MONEY_FIELDS and len(cols) > 1:
                specific = [c for c in cols if _header_key(c[1]) not in _GENERIC_HEADERS]
                chosen = specific or cols
                if len(chosen) > 1:
                    names = " and ".join(f"'{clean_text(str(v), 40)}'" for _, v in chosen[:3])
                    problems.append(f"the columns {names} could each be the "
                                    f"{fld.replace('_', ' ')}: which one is meant is unclear")
            mapping[fld] = chosen[0][0]
            if fld == "requested_amount":
                currency = _header_currency(chosen[0][1])
        return _Header(pos, mapping, currency, tuple(problems))
    return None


def _header_currency(value: Any) -> str | None:
    m = re.search(r"\(([^)]*)\)", str(value))
    return currency_code(m[1]) if m else None


# --------------------------------------------------------------------------- cells


def _per_value(column: pd.Series, fn: Callable[[Any], Any]) -> np.ndarray:
    """`fn` applied once per distinct cell value (None for empty cells), spread to all rows."""
    return _per_values(column, lambda values: [fn(value) for value in values])


def _per_values(column: pd.Series, fn: Callable[[list[Any]], list[Any]]) -> np.ndarray:
    """`_per_value` for a function of the whole list of distinct values (a column search)."""
    codes, uniques = pd.factorize(column.to_numpy(dtype=object), use_na_sentinel=True)
    results = np.empty(len(uniques) + 1, dtype=object)
    results[:] = fn([*uniques, None])
    return results[codes]  # code -1 (empty) picks the last slot


def _cell_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value) or value is pd.NaT:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | pd.Timestamp):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value).strip()


def _displays(limit: int) -> Callable[[list[Any]], list[str]]:
    """Cell values as text fit to show: secrets masked (a column at a time), bounded."""
    return lambda values: [clean_text(text, limit) for text in
                           mask_secrets_many([_cell_text(value) for value in values])]


def _reasons(patterns: Sequence[str]
             ) -> Callable[[list[Any]], list[tuple[str, str, tuple[str, ...]]]]:
    """(reason text, reason category, order numbers written in it) per cell value.

    Masking and classifying go the whole column at a time (see `classify_reasons`).
    """

    def parse(values: list[Any]) -> list[tuple[str, str, tuple[str, ...]]]:
        texts = [clean_text(text, TEXT_LIMITS["reason_text"]) for text in
                 mask_secrets_many([_cell_text(value) for value in values])]
        found = [find_order_numbers(text, patterns) if text else [] for text in texts]
        return [(text, category, tuple(orders)) for text, category, orders
                in zip(texts, classify_reasons(texts), found, strict=True)]

    return parse


_CANONICAL_ORDER = re.compile(r"ORD-\d{6}")


def _order(patterns: Sequence[str]) -> Callable[[Any], tuple[str | None, str]]:
    """(order number, problem). A filled order cell must be recognisable: never guessed."""
    defaults = list(patterns) == DEFAULT_ORDER_PATTERNS

    def parse(value: Any) -> tuple[str | None, str]:
        text = _cell_text(value)
        if not text:
            return None, ""
        if defaults and _CANONICAL_ORDER.fullmatch(text):
            return text, ""  # the common case, without running every pattern
        found = find_order_numbers(text, patterns) or find_order_numbers(f"order {text}",
                                                                         patterns)
        if len(found) > 1:
            return None, (f"the order cell names {len(found)} orders ({', '.join(found[:3])}): "
                          "one row per order")
        if found:
            return found[0], ""
        return None, f"order number '{clean_text(mask_secrets(text), 40)}' is not in a " \
                     "recognised format"

    return parse


def _phone(region: str | None) -> Callable[[Any], str | None]:
    """E.164, so that a caller is one number on every channel (see `normalise_phone`)."""
    return lambda value: normalise_phone(_cell_text(value), region)


# What people and exports write in a cell that has no value: never a number, never
# silently "no amount" (which asks for the whole order): the request says so and escalates.
PLACEHOLDERS = frozenset({"nan", "n/a", "na", "n.a.", "null", "none", "nil", "-", "--", "---",
                          "?", "??", "#n/a", "tbd", "k.a.", "unknown", "\u2013", "\u2014"})


def _placeholder(value: Any) -> str | None:
    """The cell's text when it is a placeholder for "no value" ("N/A", "-", "null")."""
    text = _cell_text(value)
    return text if text and text.strip().lower() in PLACEHOLDERS else None


def _amount(value: Any) -> tuple[Decimal | None, str | None, str]:
    """(amount, currency written with it, problem). A placeholder is no amount, no problem."""
    text = _cell_text(value)
    if not text or _placeholder(text) is not None:
        return None, None, ""
    if not isinstance(value, bool) and isinstance(value, Number):
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            number = None
        if number is not None and number.is_finite() and 0 < number <= MAX_AMOUNT \
                and money(number) > 0:
            return money(number), None, ""
    elif isinstance(value, str) and (parsed := parse_amount(text)):
        return parsed[0], parsed[1], ""
    shown = clean_text(mask_secrets(text), 40)
    return None, None, (f"amount '{shown}' is not a valid refund amount (a positive number "
                        f"up to {MAX_AMOUNT:,})")


def _currency(value: Any) -> tuple[str | None, str]:
    text = _cell_text(value)
    if not text:
        return None, ""
    code = currency_code(text)
    return (code, "") if code else (None, f"currency '{clean_text(text, 20)}' is not known")


_DMY = re.compile(r"(\d{1,2})[./-](\d{1,2})[./-](\d{2,4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?")


# Excel's date serial numbers (days since 1899-12-30) for 1990-01-01 .. 2099-12-31: how a
# date cell reads once exported to CSV without its format ("46000" is 2025-12-09).
_SERIAL_RANGE = (32_874, 73_050)
_SERIAL_EPOCH = datetime(1899, 12, 30, tzinfo=UTC)


def excel_serial(value: Any) -> datetime | None:
    """A date written as an Excel serial number (a number, or digits in a text cell)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"\d{5}(?:\.\d+)?", text):
            return None
        value = float(text)
    if not isinstance(value, int | float) or not \
            _SERIAL_RANGE[0] <= value <= _SERIAL_RANGE[1]:
        return None
    return _SERIAL_EPOCH + timedelta(days=float(value))


def _when(dayfirst: bool) -> Callable[[Any], datetime | None]:
    """Excel datetimes and serial numbers, ISO strings, day-first (or month-first) strings."""

    def parse(value: Any) -> datetime | None:
        if value is None or value is pd.NaT or isinstance(value, bool):
            return None
        if isinstance(value, Number) or (isinstance(value, str) and value.strip().isdigit()):
            return excel_serial(value)
        if isinstance(value, datetime | pd.Timestamp | date):
            return _utc(value)
        text = str(value).strip()
        if re.match(r"\d{4}-\d{2}-\d{2}", text):
            try:
                return _utc(datetime.fromisoformat(text))
            except ValueError:
                return None
        if m := _DMY.fullmatch(text):
            return _from_parts(m, dayfirst)
        return _free_date(text, dayfirst) if text else None

    return parse


def _from_parts(m: re.Match[str], dayfirst: bool) -> datetime | None:
    a, b, year = int(m[1]), int(m[2]), int(m[3])
    year += 2000 if year < 100 else 0
    hh, mm, ss = int(m[4] or 0), int(m[5] or 0), int(m[6] or 0)
    # The preferred order first; the other one only when the first cannot be a date.
    for day, month in ((a, b), (b, a)) if dayfirst else ((b, a), (a, b)):
        try:
            return datetime(year, month, day, hh, mm, ss, tzinfo=UTC)
        except ValueError:
            continue
    return None


def _free_date(text: str, dayfirst: bool) -> datetime | None:
    """Last resort for "28 Nov 2026" and the like; anything pandas cannot read is no date."""
    if not re.search(r"\d", text) or len(text) > 40:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stamp = pd.to_datetime(text, dayfirst=dayfirst)
    except (ValueError, TypeError, OverflowError):
        return None
    return _utc(stamp)  # None for NaT


def _utc(value: datetime | date | NaTType) -> datetime | None:
    if isinstance(value, NaTType):  # a datetime subclass, but no Timestamp
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if not isinstance(value, datetime):
        value = datetime.combine(value, time())
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value if 1990 <= value.year <= 2100 else None


# --------------------------------------------------------------------------- rows


def _read_sheet(sheet: _Sheet, lookup: dict[str, str], ctx: _Context) -> Iterator[IntakeItem]:
    frame = sheet.frame
    if frame.empty or _blank_rows(frame).all():
        return  # an empty sheet (Excel's untouched "Sheet2") is not a problem
    found = _find_header(frame, lookup)
    if found is None:
        yield _no_header(sheet, ctx)
        return
    header_pos, mapping, header_currency = found.row, found.mapping, found.currency
    body = frame.iloc[header_pos + 1:]
    header = frame.iloc[header_pos]
    keep = ~_blank_rows(body) & ~_header_repeats(body, header, mapping)
    body = body[keep]
    if body.empty:
        return
    if sheet.hidden_rows:
        hidden = body.index.isin(list(sheet.hidden_rows))
        for row_index in body.index[hidden].tolist():
            yield Quarantined(CHANNEL, f"{_file_id(ctx.path)}#{sheet.name}#hidden-row-"
                              f"{int(row_index) + 1}",
                              f"row {int(row_index) + 1} of {sheet.label}: the row is hidden: "
                              "skipped, not a request", source_ref=str(ctx.path))
        body = body[~hidden]
        if body.empty:
            return
    cells = _parse_cells(body, mapping, ctx)
    currency = header_currency or ctx.default_currency
    keys = list(cells)
    columns = [cells[k].tolist() for k in keys]
    for row_index, values in zip(body.index.tolist(), zip(*columns, strict=True), strict=True):
        problems = [*found.problems, *_formula_problems(sheet, int(row_index), mapping, ctx)]
        yield _row_item(sheet, int(row_index) + 1, dict(zip(keys, values, strict=True)),
                        currency, ctx, problems)


def _formula_problems(sheet: _Sheet, row: int, mapping: dict[str, int],
                      ctx: _Context) -> list[str]:
    """A formula is not data: its saved result is used only when the settings say so."""
    if not sheet.formulas:
        return []
    out = []
    for fld, col in mapping.items():
        saved = sheet.formulas.get((row, col))
        if saved is None:
            continue
        what = fld.replace("_", " ")
        if not saved:
            out.append(f"the {what} is a formula with no saved result")
        elif not ctx.trust_formulas:
            out.append(f"the {what} is a formula: its saved result is used only with "
                       "trust_formula_results: true in the source's settings")
    return out


def _blank_rows(body: pd.DataFrame) -> np.ndarray:
    """Rows whose every cell is empty or whitespace (vectorised: this runs on every row)."""
    if body.empty:  # a header and no rows; pandas cannot "or" the empty frames' dtypes
        return np.ones(len(body), dtype=bool)
    blank = body.isna() | body.astype(str).apply(lambda col: col.str.strip().eq(""))
    return blank.all(axis=1).to_numpy()


def _header_repeats(body: pd.DataFrame, header: pd.Series, mapping: dict[str, int]
                    ) -> np.ndarray:
    """Rows that repeat the header (pasted blocks, concatenated exports).

    Columns with the fewest distinct values are checked first, and later columns
    only on the rows still in question, so a column of 100,000 order numbers is
    rarely looked at.
    """
    candidates = np.ones(len(body), dtype=bool)
    cols = sorted(mapping.values(), key=lambda c: body.iloc[:, c].nunique())
    for col in cols:
        rows = np.flatnonzero(candidates)
        if not len(rows):
            break
        key = _header_key(header.iloc[col])
        same = _per_value(body.iloc[rows, col], _header_key) == key
        candidates[rows[~same.astype(bool)]] = False
    return candidates


def _parse_cells(body: pd.DataFrame, mapping: dict[str, int], ctx: _Context
                 ) -> dict[str, np.ndarray]:
    """Every field of every row, computed column-wise."""
    empty = np.full(len(body), None, dtype=object)

    def column(fld: str, fn: Callable[[Any], Any]) -> np.ndarray:
        return _per_value(body.iloc[:, mapping[fld]], fn) if fld in mapping else empty

    cells = {fld: _per_values(body.iloc[:, mapping[fld]], _displays(TEXT_LIMITS.get(fld, 500)))
             if fld in mapping else empty for fld in FIELDS if fld != "reason_text"}
    cells["reason"] = _per_values(body.iloc[:, mapping["reason_text"]], _reasons(
        ctx.order_patterns)) if "reason_text" in mapping else empty
    cells["reason_text"] = np.array([r[0] if r else None for r in cells["reason"]], dtype=object)
    cells["order"] = column("order_number", _order(ctx.order_patterns))
    cells["email"] = column("customer_email", lambda v: normalise_email(_cell_text(v)))
    cells["phone"] = column("customer_phone", _phone(ctx.region))
    cells["amount"] = column("requested_amount", _amount)
    cells["requested_amount_raw"] = column("requested_amount", lambda v: v)
    cells["currency_code"] = column("currency", _currency)
    cells["when"] = column("received_at", _when(ctx.dayfirst))
    return cells


def _row_item(sheet: _Sheet, row_no: int, cell: dict[str, Any], header_currency: str | None,
              ctx: _Context, sheet_problems: Sequence[str] = ()) -> IntakeItem:
    texts = [cell[f] or "" for f in FIELDS]
    source_id = f"{ctx.path.name}#{sheet.name}#" + hashlib.sha256(
        "\x1f".join(texts).encode("utf-8")).hexdigest()[:16]
    reason, category, reason_orders = cell["reason"] or ("", "other", ())
    order, problems = _row_order(cell, reason_orders[0] if reason_orders else None)
    bad_order = bool(problems)
    problems = [*sheet_problems, *problems]
    doubts = [*order_doubts(list(dict.fromkeys([o for o in (order, *reason_orders) if o])))]
    if (placeholder := _placeholder(cell["requested_amount_raw"])) is not None:
        doubts.append(f"the amount cell says '{placeholder}': no amount is given, and the "
                      "bot does not read that as the whole order")
    amount, amount_currency, amount_problem = cell["amount"] or (None, None, "")
    currency, currency_problem = cell["currency_code"] or (None, "")
    problems += [p for p in (amount_problem, currency_problem) if p]
    if currency and amount_currency and currency != amount_currency:
        problems.append(f"the amount is in {amount_currency} but the currency column says "
                        f"{currency}")
    if not (order or bad_order or cell["email"] or cell["phone"]):
        problems.append("no order number, email or phone" + _bad_email_note(cell))
    if example := next((t for t in (cell["order_number"], cell["customer_name"], reason,
                                    cell["customer_email"]) if t and _TEMPLATE.match(t)), None):
        problems = [f"an example or template row ('{clean_text(example, 40)}'), not a request"]
    if problems:
        return Quarantined(CHANNEL, source_id,
                           f"row {row_no} of {sheet.label}: " + "; ".join(problems),
                           clean_text(" | ".join(t for t in texts if t), 200), str(ctx.path))
    if amount is not None:
        currency = currency or amount_currency or header_currency
    return RefundRequest(
        channel=CHANNEL,
        source_id=source_id,
        received_at=cell["when"] or ctx.fallback_time,
        reason_text=reason,
        customer_email=cell["email"],
        customer_name=cell["customer_name"] or None,
        customer_phone=cell["phone"],
        order_number=order,
        requested_amount=amount,
        currency=currency,
        reason_category=category,
        reply_to=cell["email"],
        source_ref=f"{ctx.path} {sheet.label} row {row_no}",
        doubts=tuple(doubts),
    )


# The example row ops sheets keep under the header ("e.g. ORD-123456", "Example: ...").
_TEMPLATE = re.compile(r"(?i)^\s*(?:e\.\s?g\.|z\.\s?b\.|p\.\s?ex\.|(?:example|beispiel|exemple|"
                       r"ejemplo|esempio|voorbeeld|sample|template|muster|vorlage)\b)")


def _row_order(cell: dict[str, Any], reason_order: str | None
               ) -> tuple[str | None, list[str]]:
    """The order cell, else an order number written in the reason; a bad order cell is a problem."""
    order, problem = cell["order"] or (None, "")
    if problem:
        return None, [problem]
    return order or reason_order, []


def _bad_email_note(cell: dict[str, Any]) -> str:
    notes = []
    if written := cell["customer_email"]:
        notes.append(f"the email '{written}' is not a valid address")
    if written := cell["customer_phone"]:
        notes.append(f"the phone '{written}' is not a valid number")
    return f" ({'; '.join(notes)})" if notes else ""


def _no_header(sheet: _Sheet, ctx: _Context) -> Quarantined:
    top = sheet.frame.head(HEADER_SCAN_ROWS)
    shown = " | ".join(_cell_text(v) for v in top.to_numpy().ravel() if _cell_text(v))
    digest = hashlib.sha256(shown.encode("utf-8")).hexdigest()[:16]
    return Quarantined(
        CHANNEL, f"{ctx.path.name}#{sheet.name}#no-header#{digest}",
        f"{sheet.label} of {ctx.path.name}: no header row found in the first "
        f"{HEADER_SCAN_ROWS} rows (need at least two known column names, e.g. "
        f"'Order number', 'Email', 'Amount', 'Reason')",
        clean_text(mask_secrets(shown), 200), str(ctx.path))
