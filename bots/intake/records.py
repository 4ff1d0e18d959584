"""Records from any export turned into canonical requests, the same way on every channel.

Helpdesk, social and telephony tools all export the same thing in different
shapes: one record per conversation, message, call or form, with a handful of
fields that matter. `bots.intake.exports` reads the files into `Rows` (one cell per
field per record); this module turns rows into requests or quarantined items:
column-wise and once per distinct value, with the spreadsheet reader's cell parsers
(an amount, currency, date or order cell means the same on every channel), and
without ever raising on bad input. A record it cannot trust is quarantined with
the reason.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bots.intake.extract import (
    REASON_CATEGORIES,
    amounts_possible,
    classify_reason,
    classify_reasons,
    clean_text,
    cut_text,
    find_order_numbers,
    mask_secrets,
    mask_secrets_many,
    normalise_email,
    normalise_phone,
    order_doubts,
    read_amount,
)
from bots.intake.spreadsheet import (
    _amount,
    _cell_text,
    _currency,
    _order,
    _placeholder,
    _when,
    excel_serial,
)
from bots.models import IntakeItem, Quarantined, RefundRequest

DEFAULT_MAX_BYTES = 256_000_000  # one export file; larger ones are quarantined unread
SCAN_LIMIT = 50_000  # characters of customer text searched; the stored text is far shorter
CELL_LIMIT = 1_000  # characters of a structured value (id, order, amount...) looked at
REASON_LIMIT = 5000
EXCERPT_LIMIT = 200
MAX_SOURCE_ID = 200  # the queue stores 300 (with a platform prefix); longer ids are hashed

# Every field an export can fill; adapters use the subset that fits their channel.
CANONICAL_FIELDS = (
    "source_id", "received_at", "reason_text", "reason_category", "customer_email",
    "customer_name", "customer_phone", "customer_handle", "platform", "order_number",
    "requested_amount", "currency",
)
# Fields compared to tell two records apart when the export gives no id.
_IDENTITY_FIELDS = ("received_at", "reason_text", "customer_email", "customer_name",
                    "customer_phone", "customer_handle", "platform", "order_number",
                    "requested_amount", "currency", "reason_category")

FieldMap = Mapping[str, tuple[str, ...]]  # field -> candidate paths / headers, first found wins
# What a source's `fields:` setting holds: one path / header, or a list of candidates.
FieldOverrides = Mapping[str, str | Sequence[str]]

_HANDLE = re.compile(r"@?[\w.\-]{1,64}")
_PLATFORM = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,29}")
_CATEGORY_WORDS = re.compile(r"[\s\-]+")
_EPOCH_SECONDS = (946_684_800, 4_102_444_800)  # 2000-01-01 .. 2100-01-01


class Unreadable(Exception):
    """The file as a whole cannot be read: one quarantined item stands for it."""


@dataclass(frozen=True)
class Wrong:
    """A value of the wrong type (an object or a list where a value belongs)."""

    kind: str

    def __str__(self) -> str:
        return ""


@dataclass(frozen=True)
class Options:
    """How one source's records are read (from its configuration)."""

    channel: str
    order_patterns: Sequence[str]
    default_currency: str | None = None
    dayfirst: bool = True
    region: str | None = None  # for national phone numbers, e.g. "GB"
    platform: str | None = None  # social: when the export does not say


@dataclass
class Rows:
    """Raw records as columns: field -> one cell per record (None when absent).

    `refs` says where each record is ("record 3", "row 7"); `problems` holds what
    an adapter already knows is wrong with a record (a line that is not JSON).
    """

    path: Path
    columns: dict[str, list[Any]] = field(default_factory=dict)
    refs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, ref: str, cells: Mapping[str, Any], problem: str = "") -> None:
        n = len(self.refs)
        for name, value in cells.items():
            values = self.columns.get(name)
            if values is None:
                values = self.columns[name] = [None] * n
            values.append(value)
        self.refs.append(ref)
        self.problems.append(problem)
        if len(cells) < len(self.columns):
            for values in self.columns.values():
                if len(values) == n:
                    values.append(None)

    def __len__(self) -> int:
        return len(self.refs)


# --------------------------------------------------------------------------- values


def _source_id(value: Any) -> str | None:
    text = _cell_text(value) if not isinstance(value, Wrong) else ""
    text = text.strip()
    if not text:
        return None
    if len(text) > MAX_SOURCE_ID or not text.isprintable():
        return "sha256:" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()
    return text


def _received(dayfirst: bool) -> Callable[[Any], datetime | None]:
    """Dates as the spreadsheet reads them, plus Unix timestamps (s or ms) as APIs give."""
    parse = _when(dayfirst)
    latest = datetime.now(UTC) + timedelta(days=1)

    def when(value: Any) -> datetime | None:
        if isinstance(value, Wrong):
            return None
        number = value
        if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) in (10, 13):
            number = int(value.strip())
        if isinstance(number, int | float) and not isinstance(number, bool):
            seconds = number / 1000 if number > _EPOCH_SECONDS[1] else number
            if not _EPOCH_SECONDS[0] <= seconds < _EPOCH_SECONDS[1]:
                return excel_serial(value)  # an Excel date exported as its serial number
            return datetime.fromtimestamp(seconds, UTC)
        found = parse(value)
        # A date in the future is a broken clock, not a fact: the file time stands in.
        return found if found is not None and found <= latest else None

    return when


def _text_cells(values: Sequence[Any], limit: int) -> list[str]:
    """`_text_cell` of each value, the distinct ones masked a column at a time."""
    distinct = list(dict.fromkeys(values))
    texts = mask_secrets_many(["" if isinstance(v, Wrong) else _cell_text(v)[:CELL_LIMIT]
                               for v in distinct])
    shown = {v: clean_text(t, limit) for v, t in zip(distinct, texts, strict=True)}
    return [shown[v] for v in values]


def _text_cell(limit: int) -> Callable[[Any], str]:
    return lambda value: "" if isinstance(value, Wrong) else clean_text(
        mask_secrets(_cell_text(value)[:CELL_LIMIT]), limit)


# (stored text, reason category, text searched for order numbers and amounts, whether an
# amount can be in it)
Reason = tuple[str, str, str, bool]
_NO_REASON: Reason = ("", "other", "", False)


def _reasons(values: Sequence[Any]) -> list[Reason]:
    """The `Reason` of each value.

    Masking, classifying and ruling out amounts go a column of distinct texts at a
    time (see `classify_reasons`). The order and amount searches wait until a record
    needs them: most forms and call logs have their own order and amount fields.
    """
    distinct = list(dict.fromkeys(v for v in values if isinstance(v, str) and v))
    searched = mask_secrets_many([_bounded(text) for text in distinct])
    table = {raw: (clean_text(text, REASON_LIMIT), category, text, amount)
             for raw, text, category, amount in zip(
                 distinct, searched, classify_reasons(searched), amounts_possible(searched),
                 strict=True)}
    return [table[v] if isinstance(v, str) and v else _NO_REASON for v in values]


def _bounded(text: str) -> str:
    """The head of a long text; never half a card number at the cut (masking would miss it)."""
    return cut_text(text, SCAN_LIMIT)


def _category(value: Any) -> str | None:
    """A form's reason choice ("Item damaged", "not_received") as a policy category."""
    text = _cell_text(value) if not isinstance(value, Wrong) else ""
    if not text:
        return None
    key = _CATEGORY_WORDS.sub("_", text.strip().lower())
    if key in REASON_CATEGORIES and key != "other":
        return key
    found = classify_reason(text[:CELL_LIMIT])
    return found if found != "other" else None


def _amount_placeholder(value: Any) -> list[str]:
    """A doubt for an amount field that says "N/A", "null", "-": no amount, and not "all"."""
    if isinstance(value, Wrong) or (found := _placeholder(value)) is None:
        return []
    return [f"the amount field says '{found}': no amount is given, and the bot does not "
            "read that as the whole order"]


def _email(value: Any) -> str | None:
    return None if isinstance(value, Wrong) else normalise_email(_cell_text(value)[:CELL_LIMIT])


def _phone(region: str | None) -> Callable[[Any], str | None]:
    return lambda value: None if isinstance(value, Wrong) else normalise_phone(
        _cell_text(value), region)


def _handle(value: Any) -> str | None:
    text = "" if isinstance(value, Wrong) else _cell_text(value)
    if not _HANDLE.fullmatch(text):
        return None
    return "@" + text.lstrip("@").lower()


def _platform(value: Any) -> str | None:
    text = "" if isinstance(value, Wrong) else _cell_text(value).lower()
    return text if _PLATFORM.fullmatch(text) else None


def _typed(parse: Callable[[Any], tuple[Any, ...]], what: str
           ) -> Callable[[Any], tuple[Any, ...]]:
    """A spreadsheet cell parser that also refuses objects and lists, with the reason."""

    def wrapped(value: Any) -> tuple[Any, ...]:
        if isinstance(value, Wrong):
            result = parse(None)
            return (*result[:-1], f"the {what} is {value.kind}, not a value")
        return parse(value)

    return wrapped


# --------------------------------------------------------------------------- items


def per_value(values: Sequence[Any], fn: Callable[[Any], Any]) -> list[Any]:
    """`fn` applied once per distinct value: exports repeat the same few of most fields.

    A dict rather than `pd.factorize`: as fast on 100,000 cells, and without the
    fixed cost that would dominate a folder of one-form files.
    """
    once = _memo(fn)
    return [once(value) for value in values]


def build_items(rows: Rows, opts: Options) -> Iterator[IntakeItem]:
    """Every record as a request or quarantined, in record order. Never raises on bad data."""
    n = len(rows)
    if not n:
        return
    empty = [None] * n

    def column(name: str, fn: Callable[[Any], Any]) -> list[Any]:
        values = rows.columns.get(name)
        return empty if values is None else per_value(values, fn)

    names = _text_cells(rows.columns["customer_name"], 200) if "customer_name" in rows.columns \
        else empty
    texts = rows.columns.get("reason_text") or empty
    reasons = _reasons(texts)
    parsed = {
        "id": column("source_id", _source_id),
        "when": column("received_at", _received(opts.dayfirst)),
        "category": column("reason_category", _category),
        "email": column("customer_email", _email),
        "phone": column("customer_phone", _phone(opts.region)),
        "handle": column("customer_handle", _handle),
        "platform": column("platform", _platform),
        "order": column("order_number", _typed(_order(opts.order_patterns), "order number")),
        "amount": column("requested_amount", _typed(_amount, "amount")),
        "amount_doubts": column("requested_amount", _amount_placeholder),
        "currency": column("currency", _typed(_currency, "currency")),
    }
    fallback = _file_time(rows.path)
    for i in range(n):
        fields = {k: v[i] for k, v in parsed.items()}
        fields["name"] = names[i]
        yield _item(rows, i, fields, reasons[i], texts[i], opts, fallback)


def _memo(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    done: dict[Any, Any] = {}

    def once(value: Any) -> Any:
        try:
            return done[value]
        except KeyError:
            result = done[value] = fn(value)
            return result

    return once


def _shown(rows: Rows, i: int) -> dict[str, str]:
    """A record's fields as displayable text: for its content hash and quarantine excerpt.

    Only records without an id of their own, or quarantined, need it: computed then.
    """
    return {name: _text_cell(200 if name == "customer_name" else 500)(rows.columns[name][i])
            if name in rows.columns else "" for name in _IDENTITY_FIELDS if name != "reason_text"}


def _file_time(path: Path) -> datetime:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return datetime.now(UTC)


def _item(rows: Rows, i: int, f: dict[str, Any], reason: Reason, raw_text: Any,
          opts: Options, fallback: datetime) -> IntakeItem:
    text, category, search, amount_possible = reason
    platform = f["platform"] or opts.platform
    shown = _shown(rows, i) if not f["id"] else None
    source_id = _row_source_id(f["id"], platform, text, shown)
    ref = f"{rows.path} {rows.refs[i]}"
    problems = [rows.problems[i]] if rows.problems[i] else []
    order, order_problem = f["order"] or (None, "")
    amount, amount_currency, amount_problem = f["amount"] or (None, None, "")
    currency, currency_problem = f["currency"] or (None, "")
    problems += [p for p in (order_problem, amount_problem, currency_problem) if p]
    if currency and amount_currency and currency != amount_currency:
        problems.append(f"the amount is in {amount_currency} but the currency field says "
                        f"{currency}")
    doubts: list[str] = []
    if not order and not order_problem and search:
        found = find_order_numbers(search, opts.order_patterns)
        order = found[0] if found else None
        doubts += order_doubts(found)  # the export's order field, when set, says which
    handle = f["handle"]
    reply_handle = f"{platform}:{handle}" if handle and platform else handle
    if not problems and not (order or f["email"] or f["phone"] or handle):
        means = "email, phone or handle" if "customer_handle" in rows.columns else "email or phone"
        shown = shown or _shown(rows, i)
        problems.append(f"no order number, {means}" + _contact_note(shown))
    if not problems and not text and not order:
        problems.append("nothing to act on: no text and no order number")
    if problems:
        shown = shown or _shown(rows, i)
        excerpt = " | ".join(str(v) for v in (text, *shown.values()) if v)
        if not excerpt and isinstance(raw_text, str):
            excerpt = raw_text
        return Quarantined(opts.channel, source_id, f"{rows.refs[i]} of {rows.path.name}: "
                           + "; ".join(problems),
                           clean_text(mask_secrets(excerpt[:SCAN_LIMIT]), EXCERPT_LIMIT), ref)
    if amount is None and amount_possible:
        found_amount = read_amount(search, opts.order_patterns)
        doubts += found_amount.doubts
        if found_amount.amount is not None:
            amount, amount_currency = found_amount.amount, found_amount.currency
    doubts += f["amount_doubts"] or []
    if amount is not None:
        currency = currency or amount_currency or opts.default_currency
    return RefundRequest(
        channel=opts.channel,
        source_id=source_id,
        received_at=f["when"] or fallback,
        reason_text=text,
        customer_email=f["email"],
        customer_name=f["name"] or None,
        customer_phone=f["phone"],
        order_number=order,
        requested_amount=amount,
        currency=currency,
        reason_category=f["category"] or category,
        # Social answers go back on the platform; the others by email, else phone.
        reply_to=(reply_handle or f["email"]) if opts.channel == "social" else (
            f["email"] or f["phone"] or reply_handle),
        source_ref=ref,
        customer_handle=reply_handle,
        doubts=tuple(dict.fromkeys(doubts)),
    )


def _row_source_id(own: str | None, platform: str | None, text: str,
                   shown: dict[str, Any] | None) -> str:
    """The export's own id (per platform for social), else a hash of what the record says."""
    if own:
        return f"{platform}:{own}" if platform else own
    assert shown is not None
    content = "\x1f".join([text, *(str(shown[k] or "") for k in _IDENTITY_FIELDS
                                   if k != "reason_text")])
    return "sha256:" + hashlib.sha256(content.encode("utf-8", "replace")).hexdigest()[:32]


def _contact_note(shown: dict[str, Any]) -> str:
    notes = [f"the {what} '{shown[name]}' is not valid"
             for name, what in (("customer_email", "email"), ("customer_phone", "phone"),
                                ("customer_handle", "handle")) if shown.get(name)]
    return f" ({'; '.join(notes)})" if notes else ""


def file_id(path: Path, data: bytes | None = None) -> str:
    if data is None:
        try:
            data = path.read_bytes()
        except OSError:
            data = b""
    return f"{path.name}#file#{hashlib.sha256(data).hexdigest()[:16]}"


def quarantine_file(channel: str, path: Path, reason: str, data: bytes | None = None
                    ) -> Quarantined:
    return Quarantined(channel, file_id(path, data), f"{path.name}: {reason}",
                       source_ref=str(path))
