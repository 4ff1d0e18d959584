"""Export files read into `Rows`: JSON, JSON Lines and delimited text, by field map.

Each tool exports its own shape; a field map (canonical field -> dotted JSON paths
or column headers, first found wins) says where the fields are, so a new tool
needs settings, not code. Reading never raises on bad input: a file that cannot
be read is one quarantined item, a JSON line that cannot be read is one
quarantined record, and everything else goes on to `bots.intake.records`.
"""

from __future__ import annotations

import csv
import io
import json
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from bots.intake.extract import html_to_text
from bots.intake.records import (
    CANONICAL_FIELDS,
    CELL_LIMIT,
    SCAN_LIMIT,
    FieldMap,
    FieldOverrides,
    Options,
    Rows,
    Unreadable,
    Wrong,
    build_items,
    quarantine_file,
)
from bots.intake.spreadsheet import _cell_text, _header_key, _sniff_delimiter, csv_rows
from bots.models import IntakeItem

_HTML = re.compile(r"<(?:[a-zA-Z][a-zA-Z0-9]*|/[a-zA-Z]|!--)[^<>]*>")


# --------------------------------------------------------------------------- field maps


def merge_fields(defaults: FieldMap, overrides: FieldOverrides | None
                 ) -> dict[str, tuple[str, ...]]:
    """The configured fields replace the defaults they name; the others keep the defaults."""
    merged = {k: tuple(v) for k, v in defaults.items()}
    for name, value in (overrides or {}).items():
        merged[name] = (value,) if isinstance(value, str) else tuple(value)
    return merged


_MISSING = object()


@lru_cache(maxsize=4096)
def _steps(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def get_path(obj: Any, path: str) -> Any:
    """`a.b.0.c` in nested JSON; `_MISSING` when any step is absent.

    A key that itself contains dots ("customer.email" as a flat key) is found too.
    """
    if isinstance(obj, dict):
        found = obj.get(path, _MISSING)
        if found is not _MISSING or "." not in path:
            return found
    for step in _steps(path):
        if isinstance(obj, dict):
            if step not in obj:
                return _MISSING
            obj = obj[step]
        elif isinstance(obj, list) and step.isdigit() and int(step) < len(obj):
            obj = obj[int(step)]
        else:
            return _MISSING
    return obj


def first_path(obj: Any, paths: Sequence[str]) -> Any:
    """The first of `paths` that holds a non-empty value, else None.

    Runs for every field of every record: plain keys are a single dict lookup.
    """
    is_dict = isinstance(obj, dict)
    for path in paths:
        value = obj.get(path) if is_dict else None
        if value is None and "." in path:
            value = get_path(obj, path)
        if value is not None and value is not _MISSING and value != "":
            return value
    return None


class Picker:
    """Where each field is in the records of one export, worked out once per record shape.

    Exports repeat a few shapes (sets of keys) over thousands of records; for a
    shape, only the candidate paths whose first step the record has can match, so
    only those are tried. The result is exactly `first_path` over all candidates.
    """

    MAX_SHAPES = 256

    def __init__(self, fields: FieldMap) -> None:
        self.fields = fields
        self._plans: dict[tuple[str, ...], dict[str, tuple[str, ...]]] = {}

    def plan(self, record: dict[str, Any]) -> dict[str, tuple[str, ...]]:
        shape = tuple(record)
        found = self._plans.get(shape)
        if found is None:
            keys = set(shape)
            found = {name: tuple(p for p in paths if p in keys or p.split(".", 1)[0] in keys)
                     for name, paths in self.fields.items()}
            if len(self._plans) < self.MAX_SHAPES:
                self._plans[shape] = found
        return found


def first_text(obj: Any, paths: Sequence[str]) -> str | None:
    """The first of `paths` that holds a string (a role may sit beside an author object)."""
    for path in paths:
        value = get_path(obj, path)
        if isinstance(value, str):
            return value
    return None


def cell(value: Any, limit: int = CELL_LIMIT) -> Any:
    """A raw JSON value as a cell: text, number, or `Wrong` for objects and lists.

    Cells must be hashable (they are parsed once per distinct value) and bounded
    (a 10 MB "order number" is not searched in full).
    """
    if value is None or isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return Wrong("a list")
    if isinstance(value, dict):
        return Wrong("an object")
    return Wrong(type(value).__name__)


def text_of(value: Any, limit: int = SCAN_LIMIT) -> str:
    """Customer text from a value: HTML as what a reader sees, lists of strings joined."""
    if isinstance(value, list):
        value = "\n".join(text_of(v, limit) for v in value[:100] if isinstance(v, str | int))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        value = _cell_text(value)
    elif not isinstance(value, str):
        return ""
    value = value[:limit]
    return html_to_text(value) if "<" in value and _HTML.search(value) else value


# --------------------------------------------------------------------------- files


def read_bytes(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise Unreadable(f"the file is {size:,} bytes, larger than the {max_bytes:,}-byte "
                             "limit: split the export or raise max_bytes")
        return path.read_bytes()
    except OSError as exc:
        raise Unreadable(f"the file could not be read: {exc.strerror or exc}") from exc


def decode(data: bytes) -> str:
    """Exports are UTF-8 (maybe with a BOM); Windows tools write UTF-16 or cp1252."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise Unreadable("not a readable text file (broken UTF-16)") from exc
    head = data[:8192]
    if head and head.count(b"\x00") > len(head) // 10:
        raise Unreadable("a binary file, not a text export")
    data = data.replace(b"\x00", b"")  # a stray NUL from a buggy exporter: invisible anyway
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")



def json_records(path: Path, data: bytes, *, records_key: str | None,
                 is_record: Callable[[dict[str, Any]], bool]
                 ) -> Iterator[tuple[str, Any, str]]:
    """(ref, record, problem) for every record of a JSON or JSON Lines export.

    JSON Lines is read line by line, so one broken line is one quarantined
    record; a broken JSON document is the whole file's problem.
    """
    text = decode(data)
    if not text.strip():
        raise Unreadable("the file is empty")
    lines = path.suffix.lower() in (".jsonl", ".ndjson")
    if not lines:
        try:
            doc = json.loads(text)
        except RecursionError as exc:
            raise Unreadable("not readable JSON (nested too deeply)") from exc
        except ValueError as exc:
            if "Extra data" not in str(exc) or not _first_line_is_json(text):
                raise Unreadable(f"not readable JSON ({_json_error(exc)})") from exc
            lines = True  # a .json file that is really JSON Lines
        else:
            yield from _document_records(doc, records_key, is_record)
            return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        ref = f"line {number}"
        try:
            record = json.loads(line)
        except RecursionError:
            yield ref, line, "the line is not readable JSON (nested too deeply)"
            continue
        except ValueError as exc:
            yield ref, line, f"the line is not readable JSON ({_json_error(exc)})"
            continue
        if isinstance(record, dict) and records_key is None:
            yield ref, record, ""
        else:
            for sub_ref, sub, problem in _document_records(record, records_key, is_record):
                yield f"{ref} {sub_ref}", sub, problem


def _first_line_is_json(text: str) -> bool:
    try:
        json.loads(text.lstrip().split("\n", 1)[0])
    except (ValueError, RecursionError):
        return False
    return True


def _json_error(exc: ValueError) -> str:
    return str(exc).split(":")[0] if isinstance(exc, json.JSONDecodeError) else str(exc)[:100]


_LIST_KEYS = ("records", "data", "items", "results", "conversations", "chats", "tickets",
              "messages", "posts", "mentions", "calls", "submissions", "forms", "requests",
              "entries")


def _document_records(doc: Any, records_key: str | None,
                      is_record: Callable[[dict[str, Any]], bool]
                      ) -> Iterator[tuple[str, Any, str]]:
    if records_key is not None:
        found = get_path(doc, records_key)
        if not isinstance(found, list):
            yield "document", _short(doc), f"no list of records under '{records_key}'"
            return
        items: list[Any] = found
    elif isinstance(doc, list):
        items = doc
    elif isinstance(doc, dict):
        if is_record(doc):
            items = [doc]
        else:
            lists = [doc[k] for k in _LIST_KEYS if isinstance(doc.get(k), list)] or [
                v for v in doc.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
            items = lists[0] if len(lists) == 1 else [doc]
    else:
        yield "document", _short(doc), (f"the file holds {_kind(doc)}, not a record or a list "
                                        "of records")
        return
    for i, item in enumerate(items, start=1):
        if isinstance(item, dict):
            yield f"record {i}", item, ""
        else:
            yield f"record {i}", _short(item), f"record {i} is {_kind(item)}, not an object"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _short(value: Any) -> str:
    """A bounded text for a record that is not an object (for the excerpt and the id)."""
    if isinstance(value, str):
        return value[:CELL_LIMIT]
    try:
        return json.dumps(value)[:CELL_LIMIT]
    except (ValueError, TypeError, RecursionError):
        return _kind(value)


def read_table(data: bytes) -> pd.DataFrame:
    """A delimited export (call log, form export) as string cells, header from line one.

    pandas' C parser does the work; a file with ragged rows (a line with more
    fields than the header) is read again with the csv module, never skipped.
    """
    text = decode(data)
    if not text.strip():
        raise Unreadable("the file is empty")
    delimiter = _sniff_delimiter(text)
    try:
        with warnings.catch_warnings():
            # pandas only warns when the first row is longer than the header (and drops
            # the extra fields): that is a ragged file too.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(io.StringIO(text), sep=delimiter, dtype=str, index_col=False,
                                keep_default_na=False, na_filter=False, engine="c",
                                skip_blank_lines=True)
    except pd.errors.EmptyDataError as exc:
        raise Unreadable("the file is empty") from exc
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError):
        frame = _ragged_table(text, delimiter)
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _ragged_table(text: str, delimiter: str) -> pd.DataFrame:
    try:
        rows = [r for r in csv_rows(text, delimiter) if any(c.strip() for c in r)]
    except csv.Error as exc:
        raise Unreadable(f"not a readable delimited text file ({exc})") from exc
    if not rows:
        raise Unreadable("the file is empty")
    header, body = rows[0], rows[1:]
    width = max(len(header), *(len(r) for r in body)) if body else len(header)
    header = header + [f"column {i + 1}" for i in range(len(header), width)]
    return pd.DataFrame([r + [""] * (width - len(r)) for r in body], columns=header,
                        dtype=object)


def table_rows(path: Path, frame: pd.DataFrame, fields: FieldMap, *,
               joined: Sequence[str] = ("reason_text",), min_fields: int = 2,
               what: str = "export", example: str = "") -> Rows:
    """Rows from a table: each field from the first candidate header present.

    Fields in `joined` take every candidate column present, joined by blank lines
    (a call log's agent notes and transcript are both the customer's words).
    """
    keys = {_header_key(c): c for c in reversed(frame.columns)}
    found: dict[str, list[str]] = {}
    for name, candidates in fields.items():
        cols = [keys[k] for k in (_header_key(c) for c in candidates) if k in keys]
        if cols:
            found[name] = list(dict.fromkeys(cols)) if name in joined else cols[:1]
    if len(found) < min_fields:
        raise Unreadable(f"not a {what}: no header row with at least {min_fields} known column "
                         f"names{example} (map your own in the source's `fields`)")
    rows = Rows(path)
    n = len(frame)
    for name, cols in found.items():
        if len(cols) == 1:
            values = frame[cols[0]].tolist()
        else:
            parts = [frame[c].astype(str).str.strip() for c in cols]
            values = ["\n\n".join(p for p in vals if p) for vals in zip(*parts, strict=True)]
        if name == "reason_text":
            values = [text_of(v) for v in values]
        rows.columns[name] = values
    rows.refs = [f"row {i + 2}" for i in range(n)]
    rows.problems = [""] * n
    return rows


def read_export(path: Path, opts: Options, *, max_bytes: int,
                load: Callable[[Path, bytes], Rows]) -> Iterator[IntakeItem]:
    """One export file's items; a file that cannot be read at all is one quarantined item."""
    data: bytes | None = None
    try:
        data = read_bytes(path, max_bytes)
        rows = load(path, data)
    except Unreadable as exc:
        yield quarantine_file(opts.channel, path, str(exc), data)
        return
    except Exception as exc:  # one odd file must not stop the intake of every other source
        yield quarantine_file(opts.channel, path,
                              f"could not be read ({type(exc).__name__}: {exc})", data)
        return
    yield from build_items(rows, opts)


# How export tools mark a message the business sent (our own answer, echoed back in the
# export): a direction field, or a flag (Messenger's `is_echo`, WhatsApp's `from_me`).
_DIRECTION_KEYS = ("direction", "message_direction", "msg_direction", "flow")
_OUTBOUND_VALUES = frozenset({"outbound", "outgoing", "out", "sent", "echo", "mt",
                              "from_business", "business"})
_OUTBOUND_FLAGS = ("is_echo", "from_me", "fromMe", "is_outgoing", "outgoing", "is_outbound",
                   "from_page", "is_from_business", "sent_by_business")


def outbound_mark(record: dict[str, Any]) -> str | None:
    """Why `record` is a message the business sent, or None when nothing says so.

    Such a message is never a customer's request: exports of shared chat and social
    inboxes carry our own answers next to the customers' messages.
    """
    for key in _DIRECTION_KEYS:
        value = record.get(key)
        if isinstance(value, str) and value.strip().lower() in _OUTBOUND_VALUES:
            return f"{key} '{value.strip()}'"
    for key in _OUTBOUND_FLAGS:
        value = record.get(key)
        if value is True or (isinstance(value, str) and value.strip().lower() == "true"):
            return f"{key} true"
    return None


def json_rows(path: Path, data: bytes, fields: FieldMap, *, records_key: str | None,
              to_cells: Callable[[dict[str, Any]], dict[str, Any]],
              problem_of: Callable[[dict[str, Any], dict[str, Any]], str] | None = None
              ) -> Rows:
    """Rows from a JSON / JSON Lines export, one per record, cells picked by `to_cells`.

    `problem_of(record, cells)` says why a record is not a request ("" when it is).
    """
    rows = Rows(path)
    markers = [p for name in ("source_id", "reason_text", "messages", "order_number",
                              "customer_email") for p in fields.get(name, ())]

    def is_record(doc: dict[str, Any]) -> bool:
        return first_path(doc, markers) is not None

    for ref, record, problem in json_records(path, data, records_key=records_key,
                                             is_record=is_record):
        if problem:
            rows.add(ref, {"reason_text": record if isinstance(record, str) else ""}, problem)
        else:
            cells = to_cells(record)
            rows.add(ref, cells, problem_of(record, cells) if problem_of else "")
    return rows


def pick_cells(record: dict[str, Any], picker: Picker) -> dict[str, Any]:
    """Every mapped field of a flat record as a cell; `reason_text` as customer text."""
    plan = picker.plan(record)
    cells = {name: cell(first_path(record, paths)) if paths else None
             for name, paths in plan.items()
             if name in CANONICAL_FIELDS and name != "reason_text"}
    if "reason_text" in plan:
        cells["reason_text"] = text_of(first_path(record, plan["reason_text"]))
    return cells
