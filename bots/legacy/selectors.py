"""The schema of `selectors/*.yaml`: what a deployment may say about its legacy UIs.

A deployment adapts these files, never the Python, so everything a real legacy UI
needs must be expressible here: what to read (text, an attribute, a regex's named
group, a value map), per-app formats (amounts, dates, the words that mean "no
date", CSV dialects), frames, steps (interstitial pages, a modal confirmation),
pagination, search field names, searches in several hops and derived values.

The schema is strict (`extra="forbid"`): a key the code does not read is an error,
so a file can never look configured while being ignored. Errors name the file,
the key and the problem. This module is pure (no Playwright): the page objects in
`bots/legacy/` apply it.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bots.errors import ConfigError
from bots.models import money

CSV_FIELDS = ("refund_id", "transaction_id", "order_number", "amount", "currency", "reason",
              "reference", "operator", "created_at")
VALUE_GROUP = "value"  # the named group a `pattern` extracts: (?P<value>...)


class SelectorFileError(ConfigError):
    """A selectors file is not valid: the message names the file, the key and the problem."""


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- one selector key ------------------------------------------------------------------------

class Sel(_M):
    """One thing to find on a page, and how to read it.

    In YAML: a CSS selector (`"#order-status"`), a list of them (the first is the
    selector, the others fallbacks tried in order), or a mapping with `css`,
    `fallbacks`, `attr`, `pattern`, `map` and `frame`.
    """

    css: str
    fallbacks: tuple[str, ...] = ()
    # The iframe(s) this one key lives in, outermost first, looked up inside the page's
    # own frame (`order.frame`): e.g. only the status, or only the refund form, framed.
    frame: tuple[str, ...] = ()
    attr: str | None = None  # read this attribute (title, value, href, data-*) instead of text
    pattern: str | None = None  # a regex whose named group `value` is the value
    map: dict[str, str] | None = None  # shown value -> the bots' value; unmapped is unreadable

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"css": data}
        if isinstance(data, list | tuple):
            if not data or not all(isinstance(x, str) for x in data):
                raise ValueError("a list of selectors must hold at least one CSS selector")
            return {"css": data[0], "fallbacks": tuple(data[1:])}
        return data

    @field_validator("frame", mode="before")
    @classmethod
    def _frame_path(cls, value: Any) -> Any:
        value = _frame(value)
        if isinstance(value, list | tuple) and not all(isinstance(x, str) and x.strip()
                                                       for x in value):
            raise ValueError("a frame is an iframe's CSS selector, or a list of them "
                             "(outermost first)")
        return value

    @field_validator("pattern")
    @classmethod
    def _named_group(cls, value: str | None) -> str | None:
        return _check_pattern(value)

    @property
    def candidates(self) -> tuple[str, ...]:
        return (self.css, *self.fallbacks)

    def extract(self, raw: str) -> str | None:
        """The value inside the raw text or attribute: pattern, then map; None if unreadable."""
        value = " ".join(raw.split())
        if self.pattern is not None:
            m = re.search(self.pattern, value)
            if m is None or m.group(VALUE_GROUP) is None:
                return None
            value = m.group(VALUE_GROUP).strip()
        if self.map is not None:
            hit = self.map.get(value)
            if hit is None:
                lowered = {k.lower(): v for k, v in self.map.items()}
                hit = lowered.get(value.lower())
            return hit
        return value


OptSel = Sel | None
Frame = tuple[str, ...]  # iframe selectors, outermost first


def _check_pattern(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        rx = re.compile(value)
    except re.error as exc:
        raise ValueError(f"pattern {value!r} is not a valid regex: {exc}") from exc
    if VALUE_GROUP not in rx.groupindex:
        raise ValueError(f"pattern {value!r} needs a named group (?P<{VALUE_GROUP}>...)")
    return value


def _frame(value: Any) -> Any:
    return (value,) if isinstance(value, str) else value


class _Framed(BaseModel):
    """A section where only the keys named in `FRAMED` may live in an iframe of their own.

    The others are looked up where the page is recognised (markers), on the login or
    search pages, or inside a table row (whose frame is its rows key's), so a frame on
    them would be silently ignored: it is refused, naming the key.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    FRAMED: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*")
    @classmethod
    def _frame_allowed(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, Sel) and value.frame and info.field_name not in cls.FRAMED:
            raise ValueError(
                "cannot have a frame of its own: page markers, login, interstitial, search "
                "and table-row keys are read where the page itself is (put a whole page's "
                "iframe in order.frame / transaction.frame, a table's on its rows key); "
                "keys that may: " + (", ".join(sorted(cls.FRAMED)) or "none in this section"))
        return value


# -- formats -----------------------------------------------------------------------------------

class AmountFormat(_M):
    """How an app prints amounts: `1,234.50`, `1.234,56 €`, `EUR 12.50`..."""

    thousands: str = ","
    decimal: str = "."
    symbol: tuple[str, ...] = ()  # currency symbols/codes printed with amounts ("€", "£")
    symbol_position: Literal["prefix", "suffix"] = "suffix"

    @field_validator("symbol", mode="before")
    @classmethod
    def _symbols(cls, value: Any) -> Any:
        if isinstance(value, str):
            return (value,) if value else ()
        return value

    @model_validator(mode="after")
    def _distinct(self) -> AmountFormat:
        if len(self.decimal) != 1 or len(self.thousands) > 1 or self.thousands == self.decimal:
            raise ValueError("decimal must be one character and differ from thousands "
                             "(one character or empty)")
        return self

    def parse(self, text: str) -> Decimal | None:
        """The amount, or None when the text is not an amount in exactly this format.

        Strict on purpose: "1.234,56" read with English separators is not 1.23.
        """
        s = text.replace("\u00a0", " ").strip()
        for symbol in sorted(self.symbol, key=len, reverse=True):
            if self.symbol_position == "prefix" and s.startswith(symbol):
                s = s[len(symbol):]
                break
            if self.symbol_position == "suffix" and s.endswith(symbol):
                s = s[: -len(symbol)]
                break
        s = s.replace(" ", "")
        t, d = re.escape(self.thousands), re.escape(self.decimal)
        whole = rf"\d{{1,3}}(?:{t}\d{{3}})+|\d+" if self.thousands else r"\d+"
        m = re.fullmatch(rf"(-)?({whole})(?:{d}(\d{{1,2}}))?", s)
        if m is None:
            return None
        digits = m.group(2).replace(self.thousands, "") if self.thousands else m.group(2)
        try:
            value = Decimal(f"{digits}.{m.group(3) or '0'}")
        except InvalidOperation:
            return None
        return money(-value if m.group(1) else value)

    def format_input(self, amount: Decimal) -> str:
        """How to type an amount into this app's forms: no thousands, no symbol."""
        return f"{money(amount):.2f}".replace(".", self.decimal)


class CsvFormat(_M):
    delimiter: str = ","
    encoding: str = "utf-8-sig"
    quotechar: str = '"'
    amount: AmountFormat | None = None  # None: as the pages print amounts
    datetime: str | None = None  # strptime codes; None: as the pages print them

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError as exc:
            raise ValueError(f"unknown encoding {value!r}") from exc
        return value


class Formats(_M):
    date: str = "%Y-%m-%d"
    datetime: str = "%Y-%m-%d %H:%M:%S"
    url_date: str = "%Y-%m-%d"  # dates put into URLs ({start}, {end})
    no_date: tuple[str, ...] = ("", "-", "\u2014", "n/a")  # shown when there is no date
    amount: AmountFormat = AmountFormat()
    yes: tuple[str, ...] = ("Yes",)  # a true flag (e.g. final sale)
    no: tuple[str, ...] = ("No",)
    csv: CsvFormat = CsvFormat()

    def parse_date(self, text: str) -> dt.date | None:
        """None only for a 'no date' word; ValueError when it is neither."""
        t = " ".join(text.split())
        if t.lower() in {w.lower() for w in self.no_date}:
            return None
        return dt.datetime.strptime(t, self.date).date()

    def parse_flag(self, text: str) -> bool | None:
        t = " ".join(text.split()).lower()
        if t in {w.lower() for w in self.yes}:
            return True
        if t in {w.lower() for w in self.no}:
            return False
        return None  # neither: unreadable, never False


# -- steps -------------------------------------------------------------------------------------

class Interstitial(_Framed):
    """A page that can stand between the bot and its work (news, terms, password notice)."""

    name: str
    detect: Sel
    click: Sel  # the button that gets past it


class Login(_Framed):
    path: str
    form: Sel  # present only on the login page: how the bot knows it was sent there
    username_field: Sel
    password_field: Sel
    submit: Sel
    error: Sel
    logged_in: Sel  # present on every page once logged in (a logout link, a user menu)


class Errors(_Framed):
    maintenance: OptSel = None
    server_error: OptSel = None  # a legacy error page, even one answered with HTTP 200


class _App(_M):
    recognise_ms: int = Field(5_000, ge=100)  # how long a page may take to show its markers
    formats: Formats = Formats()
    login: Login
    interstitials: tuple[Interstitial, ...] = ()
    errors: Errors = Errors()


# -- the order system --------------------------------------------------------------------------

class OrderSearch(_Framed):
    url: str  # {field} and {query}, URL-encoded
    field_values: dict[Literal["email", "phone"], str]  # the app's name for each kind
    results: Sel  # the results page, with hits
    no_results: Sel  # the results page, positively empty
    rows: Sel
    order_number: Sel  # in a row
    total: Sel  # in a row
    next_page: OptSel = None  # its `href` (attr), relative or absolute
    max_pages: int = Field(20, ge=1)


class CustomerHop(_Framed):
    """Orders found through the customer's page: search customers, open one, list orders."""

    kinds: tuple[Literal["email", "phone"], ...]  # which searches go this way
    url: str  # the customer search, with {query}
    results: Sel
    no_results: Sel
    rows: Sel
    link: Sel  # in a row: the customer page's address (attr: href)
    detail: Sel  # the customer page
    order_rows: Sel
    order_number: Sel  # in an order row
    total: Sel  # in an order row
    next_page: OptSel = None
    max_pages: int = Field(20, ge=1)


LINE_PAGE_KEYS = ("item_name", "category", "unit_price", "quantity", "final_sale")


class LinePage(_Framed):
    """A line's own page, linked from its order line, for what the order page does not show
    (the final-sale flag, the category...). Opened once per distinct link, read-only."""

    link: Sel  # in the order line: the line page's address (attr: href), relative or absolute
    frame: Frame = ()
    detail: Sel  # present on a line's page
    not_found: Sel  # the app's "no such line/item" page
    sku: OptSel = None  # when shown, checked against the order line's sku
    item_name: OptSel = None
    category: OptSel = None
    unit_price: OptSel = None
    quantity: OptSel = None
    final_sale: OptSel = None

    @field_validator("frame", mode="before")
    @classmethod
    def _one_frame(cls, value: Any) -> Any:
        return _frame(value)

    @model_validator(mode="after")
    def _reads_something(self) -> LinePage:
        if all(getattr(self, k) is None for k in LINE_PAGE_KEYS):
            raise ValueError("line_page reads none of " + ", ".join(LINE_PAGE_KEYS))
        return self


class OrderPage(_Framed):
    FRAMED = frozenset({"order_number", "customer_name", "customer_email", "customer_phone",
                        "order_date", "delivery_date", "status", "currency", "shipping_fee",
                        "total", "payment_method", "line_items", "notes", "note_text",
                        "note_submit"})

    url: str  # {order_number}
    frame: Frame = ()
    detail: Sel  # present on an order page
    not_found: Sel  # the app's "no such order" page
    order_number: Sel
    customer_name: Sel
    customer_email: Sel
    customer_phone: Sel
    order_date: Sel
    delivery_date: Sel  # a `formats.no_date` word when not delivered; missing is unknown
    status: Sel
    currency: Sel
    shipping_fee: Sel
    total: Sel
    payment_method: Sel
    line_items: Sel
    sku: Sel
    # item_name, category, quantity and final_sale: in the order line, or under line_page
    item_name: OptSel = None
    category: OptSel = None
    unit_price: OptSel = None  # one of unit_price (here or on line_page) / line_total
    line_total: OptSel = None  # unit price = line total / quantity when there is no unit price
    quantity: OptSel = None
    final_sale: OptSel = None  # a `formats.yes`/`no` word (or a `map` to yes/no); else unknown
    line_page: LinePage | None = None  # each line's own page, for what the order page lacks
    notes: Sel
    note_text: Sel
    note_submit: Sel

    @field_validator("frame", mode="before")
    @classmethod
    def _one_frame(cls, value: Any) -> Any:
        return _frame(value)

    @model_validator(mode="after")
    def _price(self) -> OrderPage:
        lp = self.line_page
        for key in ("item_name", "category", "quantity", "final_sale", "unit_price"):
            here, there = getattr(self, key), getattr(lp, key) if lp else None
            if here is not None and there is not None:
                raise ValueError(f"order.{key} is given in the order line and under "
                                 f"order.line_page: say once where it is read")
            if here is None and there is None and key != "unit_price":
                raise ValueError(f"order.{key}: Field required (in the order line, or under "
                                 f"order.line_page)")
        if self.unit_price is None and self.line_total is None and (
                lp is None or lp.unit_price is None):
            raise ValueError("order needs unit_price or line_total (unit price = total / qty)")
        if not self.notes.frame == self.note_text.frame == self.note_submit.frame:
            raise ValueError("notes, note_text and note_submit must be in the same frame "
                             "(the note is checked where it was saved)")
        return self


class OrdersSelectors(_App):
    search: OrderSearch
    customer_search: CustomerHop | None = None
    order: OrderPage


# -- the payment portal ------------------------------------------------------------------------

class ChargeSearch(_Framed):
    url: str  # {order_number}
    results: Sel
    no_results: Sel
    rows: Sel
    txn_id: Sel  # in a row
    order_number: Sel  # in a row: checked against the order asked for


class TransactionPage(_Framed):
    FRAMED = frozenset({"txn_id", "order_number", "amount", "currency", "refunded",
                        "remaining", "history_rows"})

    url: str  # {transaction_id}
    frame: Frame = ()
    detail: Sel
    not_found: Sel
    txn_id: Sel
    order_number: Sel
    amount: Sel
    currency: Sel
    refunded: Sel
    remaining: OptSel = None  # when shown, checked: amount - refunded
    history_rows: Sel
    refund_id: Sel
    refund_amount: Sel
    refund_reason: Sel
    refund_reference: Sel
    refund_operator: Sel
    refund_created: Sel

    @field_validator("frame", mode="before")
    @classmethod
    def _one_frame(cls, value: Any) -> Any:
        return _frame(value)


class Confirm(_Framed):
    """What stands between the submit click and the refund: a dialog and/or an HTML modal."""

    FRAMED = frozenset({"modal", "modal_confirm"})

    dialog_text: str | None = None  # the window.confirm() text to accept; another is refused
    modal: OptSel = None  # an HTML modal to wait for...
    modal_confirm: OptSel = None  # ...and the button in it that confirms

    @model_validator(mode="after")
    def _pair(self) -> Confirm:
        if (self.modal is None) != (self.modal_confirm is None):
            raise ValueError("modal and modal_confirm go together")
        return self


class RefundForm(_Framed):
    # A form in a frame of its own answers as the whole page (target="_top"): the
    # confirmation is read on the page, not in the form's frame.
    FRAMED = frozenset({"amount", "reason", "reference", "submit"})

    amount: Sel
    reason: Sel  # a <select>
    reference: Sel
    reference_max_length: int = Field(ge=8)  # the idempotency key must fit, whole
    submit: Sel
    confirm: Confirm = Confirm()
    error: Sel  # the portal's refusal shown on the form
    reason_map: dict[str, str]  # the bots' reason categories -> the portal's option values

    @model_validator(mode="after")
    def _other(self) -> RefundForm:
        if "other" not in self.reason_map:
            raise ValueError("reason_map needs an `other` entry (used for unmapped reasons)")
        return self


class Confirmation(_Framed):
    """Where the refund number appears after the submit."""

    FRAMED = frozenset({"amount", "reference"})

    refund_number: Sel  # on the page the submit lands on (a pattern reads it from a flash text)
    url_pattern: str | None = None  # the number in the landing URL (path or query), if there
    amount: OptSel = None  # when shown, checked against what was submitted
    reference: OptSel = None  # when shown, checked against the key

    @field_validator("url_pattern")
    @classmethod
    def _named_group(cls, value: str | None) -> str | None:
        return _check_pattern(value)


class RefundsExport(_M):
    url: str  # the CSV export with {start} {end} (formats.url_date), fetched with the session
    csv_columns: dict[str, str]  # every one of CSV_FIELDS -> the export's column header

    @field_validator("csv_columns")
    @classmethod
    def _every_field(cls, value: dict[str, str]) -> dict[str, str]:
        unknown, missing = set(value) - set(CSV_FIELDS), set(CSV_FIELDS) - set(value)
        if unknown or missing:
            raise ValueError(f"needs exactly {', '.join(CSV_FIELDS)}"
                             + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else "")
                             + (f"; missing: {', '.join(sorted(missing))}" if missing else ""))
        return value


class PaymentsSelectors(_App):
    search: ChargeSearch
    transaction: TransactionPage
    refund_form: RefundForm
    confirmation: Confirmation
    refunds: RefundsExport


# -- loading -----------------------------------------------------------------------------------

def _describe(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-")) or "(top)"
        lines.append(f"{source}: {key}: {err['msg']}")
    return "\n".join(lines)


def load_selectors(path: Path, kind: type[_App]) -> Any:
    """Read and validate one selectors file; SelectorFileError says what is wrong where."""
    source = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise SelectorFileError(f"{source}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise SelectorFileError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SelectorFileError(f"{source}: (top): expected a mapping of sections")
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        raise SelectorFileError(_describe(exc, source)) from None


def load_orders(path: Path) -> OrdersSelectors:
    sel: OrdersSelectors = load_selectors(path, OrdersSelectors)
    return sel


def load_payments(path: Path) -> PaymentsSelectors:
    sel: PaymentsSelectors = load_selectors(path, PaymentsSelectors)
    return sel
