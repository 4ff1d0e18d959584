"""Pure text extraction shared by every intake channel.

Customers write order numbers, amounts and reasons in whatever form they like,
in several languages and number formats. These functions turn that free text
into the canonical values a `RefundRequest` holds, and make sure no card number
or password ever travels further than the intake layer. No I/O here: everything
is table-driven and tested on strings.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from html.parser import HTMLParser
from types import ModuleType
from typing import NamedTuple, cast

import numpy as np
import phonenumbers

from bots.intake.column_search import ColumnPattern, TextColumn, column_pattern
from bots.models import money

# --------------------------------------------------------------------------- gates

# A regex pass costs ~50 ns a character even when it finds nothing, and most
# customer messages hold no date, phone, card or password. Before each costly pass a
# cheap test (substrings, a digit count, a literal alternation) checks a *necessary*
# condition for it to match, and where every match must start at a known word, only
# those places are tried. A pass is skipped only when it cannot match, so results
# are exactly those of running every pass: tests/test_hostile.py compares both ways
# on fuzzed text. `GATES = False` runs every pass.
GATES = True
_DIGITS = "0123456789"
_ANY_DIGIT = re.compile(r"\d")


def _fold(text: str) -> str:
    """Lower case, as `re.IGNORECASE` compares ASCII letters ('ı', 'ſ' and 'İ' too)."""
    low = text.lower()
    if not low.isascii():
        low = low.replace("i\u0307", "i").replace("\u0131", "i").replace("\u017f", "s")
    return low


def _aligned_fold(text: str) -> str | None:
    """`_fold` keeping every character at its place (to find where matches can start).

    None when the text holds 'İ', whose lower case is two characters.
    """
    if text.isascii():
        return text.lower()
    if "\u0130" in text:
        return None
    return text.lower().replace("\u0131", "i").replace("\u017f", "s")




def _digit_count(text: str) -> int:
    """How many characters `\\d` matches (any Unicode decimal digit)."""
    if text.isascii():
        return sum(map(text.count, _DIGITS))
    return len(_ANY_DIGIT.findall(text))


def _has(text: str, needles: Sequence[str]) -> bool:
    return any(map(text.__contains__, needles))  # no Python-level loop: ~40 ns a needle


def _occurrences(haystack: str, needles: Sequence[str]) -> set[int]:
    found: set[int] = set()
    for needle in filter(haystack.__contains__, needles):  # most are absent: skip in C
        at = haystack.find(needle)
        while at >= 0:
            found.add(at)
            at = haystack.find(needle, at + 1)
    return found


def _finditer(rx: re.Pattern[str], text: str, starts: set[int] | None) -> Iterator[re.Match[str]]:
    """`rx.finditer(text)`, trying only `starts` when every match must begin at one of them.

    `rx.match(text, pos)` sees the text before `pos` (for `\\b` and lookbehinds), so
    this finds exactly the matches finditer finds, without a regex step per character.
    """
    if starts is None or not GATES:
        yield from rx.finditer(text)
        return
    end = 0
    for pos in sorted(starts):
        if pos < end:
            continue
        m = rx.match(text, pos)
        if m:
            yield m
            end = max(m.end(), pos + 1)


def required_literals(pattern: str) -> tuple[str, ...] | None:
    """Substrings one of which every match of `pattern` contains; None if none are known.

    Read from the parsed pattern (as RE2's prefilter does): a run of literal
    characters is required; a group requires what its body requires; an
    alternation requires one of its branches' sets; optional parts, classes and
    lookarounds require nothing. Only for case-sensitive patterns without inline flags.
    """
    try:
        # re's own parser: private on purpose (the only exact reading of Python's syntax),
        # and absent from typeshed, hence the ignores.
        from re import _constants as sre_c  # type: ignore[attr-defined]
        from re import _parser as sre_p  # type: ignore[attr-defined]

        parsed = sre_p.parse(pattern)
        if parsed.state.flags & (re.IGNORECASE | re.VERBOSE):
            return None
        found = _literals(list(parsed), sre_c)
    except Exception:  # a Python whose regex internals differ: no gate, same results
        return None
    return tuple(sorted(found)) if found else None


_MAX_SPELLINGS = 16  # a literal run expands through small classes ([äa]) up to this many

# A parsed pattern as re's parser gives it: (opcode, argument) nodes, the argument's shape
# set by the opcode. Only the shapes read below are spelled out; `_Nodes` is a
# `re._parser.SubPattern` (indexable, sized) or a list of its nodes.
_Node = tuple[object, object]
_Nodes = Sequence[_Node]
_Group = tuple[int | None, int, int, _Nodes]  # SUBPATTERN: group, add flags, del flags, body
_Branch = tuple[None, list[_Nodes]]  # BRANCH: the alternatives
_Repeat = tuple[int, int, _Nodes]  # MAX_REPEAT, MIN_REPEAT: min, max, body
_In = list[_Node]  # IN: the class members, (LITERAL, code point) and others


def _literals(items: _Nodes, c: ModuleType) -> frozenset[str] | None:
    best: frozenset[str] | None = None

    def consider(cands: frozenset[str] | set[str] | None) -> None:
        nonlocal best
        if cands and "" not in cands and (
                best is None or (min(map(len, cands)), -len(cands))
                > (min(map(len, best)), -len(best))):
            best = frozenset(cands)

    run: set[str] = {""}  # the spellings of the literal text matched so far
    for op, av in items:
        chars = _small_class(op, av, c)
        if chars is not None and len(run) * len(chars) <= _MAX_SPELLINGS:
            run = {r + ch for r in run for ch in chars}
            continue
        consider(run)
        run = {""}
        if op is c.SUBPATTERN:
            _group, add_flags, del_flags, body = cast(_Group, av)
            if add_flags or del_flags:
                raise ValueError("inline flags")
            consider(_literals(list(body), c))
        elif op is c.BRANCH:
            branches = [_literals(list(b), c) for b in cast(_Branch, av)[1]]
            known = [b for b in branches if b]
            if len(known) == len(branches):  # every branch requires something
                consider(frozenset[str]().union(*known))
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT) and cast(_Repeat, av)[0] >= 1:
            consider(_literals(list(cast(_Repeat, av)[2]), c))
    consider(run)
    return best


def _small_class(op: object, av: object, c: ModuleType) -> list[str] | None:
    """The spellings of one literal character, a small class ([eé]) or an optional one ('?)."""
    if op is c.LITERAL:
        return [chr(cast(int, av))]
    if op is c.IN:
        members = cast(_In, av)
        if len(members) <= 4 and all(o is c.LITERAL for o, _ in members):
            return [chr(cast(int, v)) for _, v in members]
    if op is c.MAX_REPEAT:
        low, high, body = cast(_Repeat, av)
        if low == 0 and high == 1 and len(body) == 1:
            inner = _small_class(*body[0], c)
            return None if inner is None else ["", *inner]
    return None


# --------------------------------------------------------------------------- normalising

# Format characters (Unicode category Cf: zero-width spaces and joiners, bidi controls,
# soft hyphens, tag characters): invisible, they only serve to hide a number from a
# reader or a pattern ("ORD-12\u200b3456", a card split by U+2060).
_FORMAT_CHARS = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f]"
)
# Letters of other scripts that look like the Latin ones order numbers and currency
# codes are written in ("ОRD" with a Cyrillic О): read as the Latin letter they show.
_HOMOGLYPHS = str.maketrans({
    **dict(zip("АВЕКМНОРСТХУаеорсхуіјѕԁһӏ", "ABEKMHOPCTXYaeopcxyijsdhl", strict=True)),
    **dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧοικνρτυχ", "ABEZHIKMNOPTYXoikvptux", strict=True)),
})
_DASHES = str.maketrans(dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63", "-"))


class _AsciiDigits(dict[int, int]):
    """A `str.translate` table: any decimal digit (Arabic-Indic, Devanagari...) to ASCII."""

    def __missing__(self, cp: int) -> int:
        value = unicodedata.decimal(chr(cp), None)
        self[cp] = found = cp if value is None else 48 + value
        return found


_ASCII_DIGITS = _AsciiDigits()
_FOREIGN_DIGIT_OR_DASH = re.compile("[\u2010-\u2015\u2212\ufe63]|(?![0-9])\\d")


def normalise_text(text: str) -> str:
    """Text as a person reads it: NFKC, no format characters, ASCII digits and dashes.

    NFKC turns full-width digits and letters, non-breaking and thin spaces into their
    plain forms; the rest maps every script's decimal digits and every dash to ASCII.
    Masking runs on this form, so a card written with NBSP or zero-width characters
    between its digits is still a card. ASCII text is returned as it is.
    """
    if not text or text.isascii():
        return text or ""
    text = _FORMAT_CHARS.sub("", unicodedata.normalize("NFKC", text))
    if text.isascii() or not _FOREIGN_DIGIT_OR_DASH.search(text):
        return text  # accents and other letters only: nothing more to map
    return text.translate(_ASCII_DIGITS).translate(_DASHES)


def normalise_for_reading(text: str) -> str:
    """`normalise_text`, plus homoglyphs read as the Latin letters they imitate.

    Only for reading order numbers, amounts and currencies: never stored or shown.
    """
    if not text or text.isascii():
        return text or ""
    return normalise_text(text).translate(_HOMOGLYPHS)


# --------------------------------------------------------------------------- order numbers

ORDER_PREFIX = "ORD"

DEFAULT_ORDER_PATTERNS: list[str] = [
    # ORD-123456, ord123456, ORD 123456, ORD_123456
    r"(?i)\bORD[-_ ]?\d{6}\b",
    # "order no. 123456", "order #123456", "Bestellung Nr. 123456", "commande n° 123456":
    # bare digits only count right after the word "order" (in any of a few languages).
    r"(?i)\b(?:order|bestellung|bestellnummer|commande|pedido)\b[^\w\n]{0,3}"
    r"(?:(?:number|num[eé]ro|nummer|n[uú]mero|no|nr|n°|n)\b[^\w\n]{0,3})?(?P<id>\d{6})\b",
]


@lru_cache(maxsize=64)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns)


_PREFIX_DIGITS = re.compile(r"([A-Z]+)[\s\-_#:.]*(\d+)")


def _canonical_order(raw: str) -> str:
    """`ord 123456` and `123456` both become `ORD-123456`: one spelling per order in the queue."""
    token = raw.strip().upper()
    m = _PREFIX_DIGITS.fullmatch(token)
    if m:
        return f"{m[1]}-{m[2]}"
    if token.isdigit():
        return f"{ORDER_PREFIX}-{token}"
    return token


_DEFAULT_ORDER_TUPLE = tuple(DEFAULT_ORDER_PATTERNS)
# Per default pattern, the words every match starts with (in any case).
_DEFAULT_ORDER_NEEDLES = (("ord",), ("order", "bestell", "commande", "pedido"))


def _order_spans(text: str, patterns: Sequence[str]) -> tuple[tuple[int, int, str], ...]:
    return _order_spans_of(text, tuple(patterns), GATES)


@lru_cache(maxsize=64)
def _order_spans_of(text: str, key: tuple[str, ...], gates: bool
                    ) -> tuple[tuple[int, int, str], ...]:
    """Cached: intake asks for a message's order numbers, then its amount (which blanks them)."""
    spans: list[tuple[int, int, str]] = []
    gated = gates and key == _DEFAULT_ORDER_TUPLE
    folded = _fold(text) if gated else ""
    aligned = _aligned_fold(text) if gated else None
    for i, rx in enumerate(_compiled(key)):
        starts = None
        if gated:
            if not _has(folded, _DEFAULT_ORDER_NEEDLES[i]):
                continue
            if aligned is not None:
                starts = _occurrences(aligned, _DEFAULT_ORDER_NEEDLES[i])
        for m in _finditer(rx, text, starts):
            raw = m.group("id") if "id" in rx.groupindex and m.group("id") else m.group(0)
            spans.append((m.start(), m.end(), _canonical_order(raw)))
    spans.sort()
    return tuple(spans)


def find_order_numbers(text: str, patterns: Sequence[str] = DEFAULT_ORDER_PATTERNS) -> list[str]:
    """Order numbers in order of appearance, each once, in canonical `ORD-123456` form.

    A pattern may name its order-number group `id` when it has to match context
    around the number (like the word "order" before bare digits).
    """
    seen: dict[str, None] = {}
    for _, _, number in _order_spans(normalise_for_reading(text or ""), patterns):
        seen.setdefault(number, None)
    return list(seen)


# --------------------------------------------------------------------------- amounts

MAX_AMOUNT = Decimal("1000000")

# Longest spelling first so that "US$" wins over "$".
# A symbol mapped to None names a currency the bot cannot tell ("kr": SEK, NOK, DKK or
# ISK?): an amount written with it is never read as the order's currency, it escalates.
_CURRENCY_SYMBOLS: dict[str, str | None] = {
    "US$": "USD", "C$": "CAD", "A$": "AUD", "R$": "BRL", "€": "EUR", "£": "GBP", "$": "USD",
    "¥": "JPY", "₹": "INR", "zł": "PLN", "Fr.": "CHF", "kr": None,
    # Dollars of other countries, as Canadians, Australians... write them: never USD.
    "CA$": "CAD", "$ CA": "CAD", "$CA": "CAD", "AU$": "AUD", "NZ$": "NZD", "HK$": "HKD",
    "S$": "SGD", "MX$": "MXN", "₺": "TRY", "₩": "KRW", "₪": "ILS",
    "₽": None, "฿": None, "₫": None, "₴": None, "₦": None, "₱": None, "₸": None, "₼": None,
}
# Words for money that name no currency the bot can map: "30 bucks" is a claim in some
# currency, not "no amount" (which would refund the whole order).
UNMAPPED_CURRENCY_WORDS = (
    "bucks", "buck", "quid", "kronor", "kroner", "krona", "krone", "kronen", "francs",
    "franc", "pesos", "peso", "rupees", "rupee", "dinars", "dinar", "dirhams", "dirham",
    "yuan", "rmb", "zloty", "zlotys", "forint", "forints", "rubles", "roubles", "ruble",
    "rouble", "lira", "liras", "baht", "ringgit", "shekels", "shekel", "reais", "kr.",
)
_CURRENCY_WORDS: dict[str, str] = {
    "euros": "EUR", "euro": "EUR", "dollars": "USD", "dollar": "USD", "pounds": "GBP",
    "pound": "GBP",
}
ISO_CURRENCIES = frozenset({
    "EUR", "USD", "GBP", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK", "HUF", "RON", "BGN", "ISK",
    "JPY", "CNY", "CAD", "AUD", "NZD", "INR", "BRL", "MXN", "ZAR", "TRY", "SGD", "HKD", "KRW",
    "ILS", "AED", "SAR",
})



_ISO_SORTED = tuple(sorted(ISO_CURRENCIES))
_SYMBOL_CODES: dict[str, str | None] = {}
for _symbol, _code in _CURRENCY_SYMBOLS.items():
    _SYMBOL_CODES.setdefault(_symbol.lower(), _code)  # the first spelling wins, as written


def _symbol_regex(symbol: str) -> str:
    """A symbol that starts or ends with a letter ("kr", "CA$", "$ CA") is not part of a word."""
    before = r"(?<![A-Za-z])" if symbol[0].isalpha() else ""
    after = r"(?![A-Za-z])" if symbol[-1].isalpha() else ""
    return before + re.escape(symbol) + after


def _currency_regex(iso_any_case: bool) -> str:
    """Currency tokens. In free text ISO codes must be upper case: "try 12" is not lira."""
    iso = "|".join(sorted(ISO_CURRENCIES))
    iso = iso if iso_any_case else f"(?-i:{iso})"
    return "|".join(
        [_symbol_regex(s) for s in sorted(_CURRENCY_SYMBOLS, key=len, reverse=True)]
        + [rf"(?<![A-Za-z])(?:{w})(?![A-Za-z])" for w in sorted(_CURRENCY_WORDS, key=len,
                                                                 reverse=True)]
        + [rf"(?<![A-Za-z])(?:{iso})(?![A-Za-z])"]
    )


_CUR = _currency_regex(iso_any_case=True)
_CUR_IN_TEXT = _currency_regex(iso_any_case=False)
_GROUP_SEP = r"[.,'’\u00a0\u202f\u2009 ]"
# 1.234.567,89 | 1,234.50 | 1 234,50 | 12,50 | 12 | 12,-
_NUM = rf"\d{{1,3}}(?:{_GROUP_SEP}\d{{3}})+(?:[.,]\d{{1,2}})?|\d+(?:[.,]\d{{1,3}})?"
_NUM_TAIL = r"(?:[.,]-)?"

_AMOUNT_FULL = re.compile(
    rf"(?P<s1>[-−+]?)\s*(?P<c1>{_CUR})?\s*(?P<s2>[-−+]?)\s*"
    rf"(?P<n>{_NUM}){_NUM_TAIL}\s*(?P<c2>{_CUR})?\s*(?P<s3>-?)",
    re.IGNORECASE,
)


def currency_code(token: str | None) -> str | None:
    """ISO code for "€", "eur", "euros", "EUR"...; None when unknown or ambiguous ("kr")."""
    if not token:
        return None
    token = token.strip()
    if not token:
        return None
    low = token.lower()
    if low in _SYMBOL_CODES:
        return _SYMBOL_CODES[low]
    if low in _CURRENCY_WORDS:
        return _CURRENCY_WORDS[low]
    up = token.upper()
    return up if up in ISO_CURRENCIES else None


def _number_to_decimal(num: str) -> Decimal | None:
    """Decide which separator is the decimal one, the way a human reader would."""
    digits = re.sub(r"['’\u00a0\u202f\u2009 ]", "", num)
    dots, commas = digits.count("."), digits.count(",")
    if dots and commas:
        dec = "." if digits.rfind(".") > digits.rfind(",") else ","
        grp = "," if dec == "." else "."
        if digits.count(dec) > 1:
            return None
        digits = digits.replace(grp, "").replace(dec, ".")
    elif dots + commas == 1:
        sep = "." if dots else ","
        whole, frac = digits.split(sep)
        # "1.234" / "1,234" is a thousands separator unless the whole part is 0.
        digits = whole + frac if len(frac) == 3 and whole.strip("0") else f"{whole}.{frac}"
    elif dots + commas > 1:
        sep = "." if dots else ","
        parts = digits.split(sep)
        if any(len(p) != 3 for p in parts[1:]):
            return None
        digits = "".join(parts)
    try:
        return Decimal(digits)
    except InvalidOperation:
        return None


def _valid_amount(value: Decimal | None) -> Decimal | None:
    if value is None or not value.is_finite() or value <= 0 or value > MAX_AMOUNT:
        return None
    rounded = money(value)
    return rounded if rounded > 0 else None


def parse_amount(text: str) -> tuple[Decimal, str | None] | None:
    """One amount as a person typed it in a form or a cell, with its currency if stated.

    Anything that is not clearly one positive, plausible amount is None: a refund
    bot must never guess a sign or a magnitude.
    """
    if not text or len(text) > 64:
        return None
    m = _AMOUNT_FULL.fullmatch(text.strip())
    if not m or m["s3"] or "-" in (m["s1"] + m["s2"]) or "−" in (m["s1"] + m["s2"]):
        return None
    if m["c1"] and m["c2"] and currency_code(m["c1"]) != currency_code(m["c2"]):
        return None
    value = _valid_amount(_number_to_decimal(m["n"]))
    if value is None:
        return None
    token = m["c1"] or m["c2"]
    code = currency_code(token)
    if token and code is None:
        return None  # "30 kr": a currency it names but cannot map is never the order's
    return value, code


# Things in free text that look like numbers but are never the amount asked for.
_NOT_AMOUNTS = [
    re.compile(r"\b\d{4}-\d{1,2}-\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2})?)?\b"),  # ISO dates
    re.compile(r"\b\d{1,2}[./-]\d{1,2}[./-]\d{2,4}\b"),  # 28.11.2026, 28/11/26
    re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\b"),  # times
    re.compile(r"\*{2,}(?:[\s-]?\*{2,})*[\s-]?\d{4}\b"),  # masked cards / IBANs
    re.compile(r"(?<![\w.,])(?:\+|00)\d{1,3}(?:[\s\-./()]*\d){6,14}"),  # +49 30 1234567
    re.compile(r"(?<![\w.,])\(?0\d{1,4}\)?[\s\-/]\d{2,}(?:[\s\-/]\d{2,})*"),  # 030 / 123 456
    re.compile(r"(?<![\w.,])\d(?:[\s-]?\d){6,}(?![\d.,])"),  # long digit runs: cards, phones
    re.compile(r"(?i)\b(?:tel|phone|mobile|fax|handy|t[eé]l[eé]fono|t[eé]l[eé]phone)\b"
               r"[^\d\n]{0,5}[\d\s\-/+().]{5,}"),
]
_REFUND_WORDS = re.compile(
    r"(?i)refund|\bback\b|reimburs|\breturn|erstatt|zurück|rembours|devol|reembols"
)
_PAID_WORDS = re.compile(r"(?i)\bpaid\b|charged|\bcost|price|\btotal\b|bought|spent|bezahlt|"
                         r"pay[eé]|pagu[eé]|\bpreis")
# Words one of which each of the two patterns above needs (see GATES).
_REFUND_NEEDLES = ("refund", "back", "reimburs", "return", "erstatt", "zurück", "rembours",
                   "devol", "reembols")
_PAID_NEEDLES = ("paid", "charged", "cost", "price", "total", "bought", "spent", "bezahlt",
                 "pay", "pagu", "preis")
_SENTENCE_END = re.compile(r"[.!?;]\s|\n")
_MONEY_IN_TEXT = re.compile(
    rf"(?<![\w.,])(?:(?P<c1>{_CUR_IN_TEXT})\s?(?P<n1>{_NUM}){_NUM_TAIL}(?![\w.,]*\d)"
    rf"|(?P<n2>{_NUM}){_NUM_TAIL}\s?(?P<c2>{_CUR_IN_TEXT}))",
    re.IGNORECASE,
)
# Where a money match can start: a currency token, or a number (with the same lookbehind).
_NUMBER_START = re.compile(r"(?<![\w.,])\d")
# The words an amount asked for follows ("refund 49.90", "Betrag: 20", "montant de 15").
_AMOUNT_WORD = "(?:refund|amount|betrag|montant|importe|reembolso|erstattung|remboursement)"
_KEYWORD_NUMBER = re.compile(
    rf"(?i)\b{_AMOUNT_WORD}\b"
    rf"(?:\s+(?:of|me|for|von|de|du))?\s*[:=]?\s*(?P<n>{_NUM})(?![\d.,]*\d)"
    # A bare number is money only with cents ("refund 49.90") or at the end of a phrase
    # ("Refund: 40."); "refund 2 shirts" or "14 days" are counts.
    r"(?:(?<=[.,]\d)|(?<=[.,]\d\d)|(?=\s*(?:$|[^\w\s])))"
    r"(?!\s*(?:%|days?|weeks?|months?|years?|items?|pcs|pieces|x\b|tage|jours|d[ií]as|"
    r"jan|feb|m[aä]r|apr|ma[iy]|jun|jul|aug|sep|o[ck]t|nov|de[cz]))"
)


def _blank(text: str, rx: re.Pattern[str]) -> str:
    return rx.sub(lambda m: "_" * len(m.group(0)), text)


# Per `_NOT_AMOUNTS` pattern: (digits it needs at least, substrings one of which it
# needs in the text, substrings one of which it needs in the folded text).
_NOT_AMOUNT_GATES: list[tuple[int, tuple[str, ...], tuple[str, ...]]] = [
    (6, ("-",), ()),  # ISO dates
    (4, (".", "/", "-"), ()),  # 28.11.2026
    (3, (":",), ()),  # times
    (4, ("**",), ()),  # masked cards
    (7, ("+", "00"), ()),  # +49 30 1234567
    (3, tuple(f"0{d}" for d in _DIGITS), ()),  # 030 / 123 456
    (7, (), ()),  # long digit runs
    (0, (), ("tel", "phone", "mobile", "fax", "handy", "fono")),  # "tel: 030 ..."
]
_AMOUNT_KEYWORDS = ("refund", "amount", "betrag", "montant", "importe", "reembolso",
                    "erstattung", "remboursement")
_CURRENCY_NEEDLES = ("$", "€", "£", "¥", "₹", "zł", "fr.", "kr", "euro", "dollar", "pound")
# Every spelling a currency token can start a money match with (lower case; ISO codes apart).
_CURRENCY_STARTS = (*(s.lower() for s in _CURRENCY_SYMBOLS), *_CURRENCY_WORDS)


# What `_KEYWORD_NUMBER` needs from its keyword to its number, without the boundaries.
_KEYWORD_HEAD = re.compile(
    rf"(?i){_AMOUNT_WORD}"
    r"(?:\s+(?:of|me|for|von|de|du))?\s*[:=]?\s*\d"
)


def _keyword_possible(work: str, low: str) -> bool:
    """Some amount keyword is followed by a number (`low`: `work` through `_aligned_fold`).

    Blanking never adds a digit, a space, ":" or "=": no head here, no match later.
    """
    return any(_KEYWORD_HEAD.match(work, q) for q in _occurrences(low, _AMOUNT_KEYWORDS))


def _money_possible(work: str, low: str) -> bool:
    """Some currency token touches a number, as `_MONEY_IN_TEXT` needs (`low` as above).

    "EUR 12", "€ 12": token, an optional space, a digit. "12 EUR", "12,- €": a digit,
    an optional ",-", an optional space, the token.
    """
    n = len(work)
    for haystack, needles in ((low, _CURRENCY_STARTS), (work, _ISO_SORTED)):
        for needle in filter(haystack.__contains__, needles):
            q = haystack.find(needle)
            while q >= 0:
                j = q + len(needle)
                if j < n and work[j].isspace():
                    j += 1
                if j < n and work[j].isdecimal():  # what `\\d` matches
                    return True
                i = q - 1
                if i >= 0 and work[i].isspace():
                    i -= 1
                if i >= 1 and work[i] == "-" and work[i - 1] in ".,":
                    i -= 2
                if i >= 0 and work[i].isdecimal():
                    return True
                q = haystack.find(needle, q + 1)
    return False


def _alternation(words: Sequence[str]) -> re.Pattern[str]:
    """Finds any of `words` (a literal alternation: cheaper than one `in` test per word)."""
    return re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)))


_CURRENCY_WORD_GATE = _alternation(_CURRENCY_NEEDLES)
_ISO_GATE = _alternation(_ISO_SORTED)


def _may_name_currency(work: str, folded: str) -> bool:
    """A currency token could be in `work` (symbols and words in any case, ISO codes upper)."""
    return bool(_CURRENCY_WORD_GATE.search(folded) or _ISO_GATE.search(work))


def _score(text: str, start: int, end: int, has_currency: bool) -> int:
    """Close context decides: "refund 20 EUR", "€25 back" ask; "paid 59.90 €" only reports."""
    before = _SENTENCE_END.split(text[max(0, start - 30):start])[-1]
    after = _SENTENCE_END.split(text[end:end + 15])[0]
    score = 2 if has_currency else 1
    near = _fold(before + " " + after) if GATES else ""
    if (not GATES or _has(near, _REFUND_NEEDLES)) and (
            _REFUND_WORDS.search(before) or _REFUND_WORDS.search(after)):
        score += 2
    if (not GATES or _has(near, _PAID_NEEDLES)) and _PAID_WORDS.search(before[-15:]):
        score -= 1
    return score


Candidate = tuple[int, int, tuple[Decimal, str | None]]  # (score, place, (amount, currency))


def find_amount(text: str, order_patterns: Sequence[str] = DEFAULT_ORDER_PATTERNS
                ) -> tuple[Decimal, str | None] | None:
    """The refund amount a customer asks for in free text, or None when none is clear.

    Dates, phone, order and card numbers are blanked out first so that they can
    never be read as money. Amounts with a currency win over bare numbers after
    "refund"/"amount"; among those, one near a refund word wins over one near "paid".
    Which one that is may still be unclear: `choice_doubts` says when.
    """
    best = _best(_candidates(text, order_patterns).found)
    return best[2] if best else None


def _best(candidates: Sequence[Candidate]) -> Candidate | None:
    """Highest score, then the first written (see `_better`)."""
    best: Candidate | None = None
    for candidate in candidates:
        best = _better(best, *candidate)
    return best


class _Reading(NamedTuple):
    """What `_candidates` read: the amounts, and the text they were read in."""

    work: str
    found: list[Candidate]
    # `work` has its order numbers, dates, times, phone and card numbers blanked, as
    # `amount_doubts` reads it (False: no amount could be there, so nothing was blanked).
    blanked: bool


def _candidates(text: str, order_patterns: Sequence[str]) -> _Reading:
    """Every amount `text` may be asking for, scored; and the text they were read in."""
    if not text:
        return _Reading("", [], False)
    work = normalise_for_reading(text[:20_000])
    digits = _digit_count(work)
    folded = _fold(work)
    money = not GATES or _may_name_currency(work, folded)
    keyword = not GATES or _has(folded, _AMOUNT_KEYWORDS)
    aligned = _aligned_fold(work) if GATES else None
    if digits and aligned is not None:
        money = money and _money_possible(work, aligned)
        keyword = keyword and _keyword_possible(work, aligned)
    if GATES and (not digits or not (money or keyword)):
        return _Reading(work, [], False)  # every candidate is a number next to a currency
                                          # or a keyword
    spans = _order_spans(work, order_patterns)
    for start, end, _ in spans:
        work = work[:start] + "_" * (end - start) + work[end:]
    if spans and GATES:
        digits = _digit_count(work)
    # Blanking only ever removes digits and separators: a gate read before a pass holds.
    for rx, (need_digits, needles, words) in zip(_NOT_AMOUNTS, _NOT_AMOUNT_GATES, strict=True):
        if GATES and (digits < need_digits or (needles and not _has(work, needles))
                      or (words and not _has(folded, words))):
            continue
        work = _blank(work, rx)
    found: list[Candidate] = []
    # Blanking writes "_" over whole matches: `aligned` still places every other character.
    starts = (_occurrences(aligned, _CURRENCY_STARTS) | _occurrences(work, _ISO_SORTED)
              | {m.start() for m in _NUMBER_START.finditer(work)}) \
        if aligned is not None and money else None
    signed = _signed_starts(work)
    for m in _finditer(_MONEY_IN_TEXT, work, starts) if money else ():
        num, cur = (m["n1"], m["c1"]) if m["n1"] else (m["n2"], m["c2"])
        value = _valid_amount(_number_to_decimal(num))
        if value is not None and m.start() not in signed and m.start(
                "n1" if m["n1"] else "n2") not in signed:
            found.append((_score(work, m.start(), m.end(), True), m.start(),
                          (value, currency_code(cur))))
    starts = _occurrences(aligned, _AMOUNT_KEYWORDS) if aligned is not None and keyword \
        else None
    for m in _finditer(_KEYWORD_NUMBER, work, starts) if keyword else ():
        value = _valid_amount(_number_to_decimal(m["n"]))
        if value is not None and m.start("n") not in signed:
            found.append((_score(work, m.start("n"), m.end("n"), False), m.start("n"),
                          (value, None)))
    return _Reading(work, found, True)


def amounts_possible(texts: Sequence[str]) -> list[bool]:
    """Per text, False only where `find_amount` certainly finds nothing (a column search).

    Most messages ask for "a refund" without a figure: every amount `find_amount`
    reads is a number touching a currency token or following an amount keyword, and
    `_AMOUNT_GATE` (checked over the whole column at once) needs one of those.
    """
    if len(texts) < COLUMN_MIN:
        return [True] * len(texts)
    return TextColumn([t or "" for t in texts]).may_match(_AMOUNT_GATE).tolist()


def _amount_gate() -> ColumnPattern:
    space = r"[\t\n\x0b\x0c\r\x1c-\x1f ]"  # what \s is in ASCII text (RE2's \s is not)
    ascii_tokens = [re.escape(t.lower()) for t in (*_CURRENCY_SYMBOLS, *_CURRENCY_WORDS)
                    if t.isascii()]
    token = rf"(?i:{'|'.join(sorted(ascii_tokens, key=len, reverse=True))})|(?:" \
        + "|".join(_ISO_SORTED) + ")"
    keyword = "|".join(_AMOUNT_KEYWORDS)
    # What `amount_doubts` reads too: money words it cannot map, any ISO-looking code
    # next to a number, a minus sign after an amount keyword.
    words = "|".join(re.escape(w) for w in UNMAPPED_CURRENCY_WORDS)
    codes = "|".join(sorted(unsupported_currency_codes()))
    return column_pattern(
        rf"(?:{token}){space}?\d|\d(?:[.,]-)?{space}?(?:{token})|"
        rf"\d{space}?(?i:{words})|\d{space}?(?:{codes})|(?:{codes}){space}?\d|"
        rf"(?i:{keyword})(?:{space}+(?i:of|me|for|von|de|du))?{space}*[:=]?{space}*-?\d")


def _better(best: Candidate | None, score: int, pos: int,
            found: tuple[Decimal, str | None]) -> Candidate:
    """Highest score wins; on a tie, the one written first."""
    if best is None or score > best[0] or (score == best[0] and pos < best[1]):
        return (score, pos, found)
    return best


# --------------------------------------------------------------------------- doubts

_MINUS = "-\u2212"  # after `normalise_text` every dash is "-"; U+2212 in ASCII-free text too
_SIGN_BEFORE = re.compile(rf"[{_MINUS}](?=\s?(?:{_CUR_IN_TEXT})?\s?\d)", re.IGNORECASE)
_SIGN_AFTER_CURRENCY = re.compile(rf"(?:{_CUR_IN_TEXT})\s?[{_MINUS}](?=\d)", re.IGNORECASE)
_SIGN_AFTER_KEYWORD = re.compile(
    rf"(?i)\b{_AMOUNT_WORD}\b"
    rf"(?:\s+(?:of|me|for|von|de|du))?\s*[:=]?\s*[{_MINUS}](?=\d)")


def _signed_starts(work: str) -> set[int]:
    """Where a number or a currency token stands right after a minus sign ("-5 EUR", "€-5").

    Such money is never read as its absolute value: `find_amount` skips it and
    `amount_doubts` says why. A minus after a letter or digit ("ORD-1", "10-20") is a
    hyphen, not a sign.
    """
    if "-" not in work and "\u2212" not in work:
        return set()
    found: set[int] = set()
    for m in _SIGN_BEFORE.finditer(work):
        before = work[m.start() - 1] if m.start() else " "
        if not (before.isalnum() or before in ".,_"):
            # the money after the sign starts at its currency token or its number, with
            # a space or two in between ("- €5", "-  5"): every place up to the digit
            digit = m.end()
            while not work[digit].isdecimal():  # the lookahead saw a digit ahead
                digit += 1
            found.update(range(m.end(), digit + 1))
    for rx in (_SIGN_AFTER_CURRENCY, _SIGN_AFTER_KEYWORD):
        for m in rx.finditer(work):
            found.add(m.end())
            found.add(m.start())
    return found


_MONEY_TOKENS = re.compile(
    rf"(?<![\w.,])(?:(?P<c1>{_CUR_IN_TEXT})\s?(?P<n1>{_NUM}){_NUM_TAIL}(?:\s?(?P<c3>{_CUR_IN_TEXT}))?"
    rf"|(?P<n2>{_NUM}){_NUM_TAIL}\s?(?P<c2>{_CUR_IN_TEXT}))",
    re.IGNORECASE,
)
_UNMAPPED_WORD = re.compile(
    rf"(?<![\w.,])(?P<n>{_NUM})\s?(?P<w>"
    + "|".join(re.escape(w) for w in sorted(UNMAPPED_CURRENCY_WORDS, key=len, reverse=True))
    + r")(?![A-Za-z])",
    re.IGNORECASE,
)
_CODE_NEAR_NUMBER = re.compile(
    rf"(?<![\w.,])(?:(?P<n1>{_NUM})\s?(?P<c1>[A-Z]{{3}})|(?P<c2>[A-Z]{{3}})\s?(?P<n2>{_NUM}))"
    r"(?![A-Za-z])")

# Two amounts joined as a range or an alternative ("10-20 EUR", "between €10 and €20",
# "10 or 20 euros", "zwischen 10 und 20 €"): the customer has not said which one. At least
# one currency token inside the match makes it money, not a count or a reference.
_RANGE_JOIN = r"\s*(?:-|to|or|bis|oder|à|a|ou|o|und|and|et|y)\s*"
_ONE = rf"(?:(?:{_CUR_IN_TEXT})\s?)?(?:{_NUM}){_NUM_TAIL}(?:\s?(?:{_CUR_IN_TEXT}))?"
_AMOUNT_RANGE = re.compile(
    rf"(?<![\w.,])(?:between|zwischen|entre|tra|from|von|de)?\s*(?P<a>{_ONE}){_RANGE_JOIN}"
    rf"(?P<b>{_ONE})(?![\w.,]*\d)",
    re.IGNORECASE,
)
# Two amounts of a range are two digits with no digit between them, and the join between
# them holds "-" or a letter of a joining word ("12.50 EUR" alone is one number, not two).
# The first run cannot hold the dash or letter it looks for: no backtracking over long texts.
_RANGE_GATE = re.compile(r"\d[^\d\-A-Za-z\u00e0\u00c0]*[-A-Za-z\u00e0\u00c0]\D*\d")


def _range_possible(work: str) -> bool:
    """Whether `_AMOUNT_RANGE` can match (see GATES): two numbers joined as a range."""
    return not GATES or _RANGE_GATE.search(work) is not None


_RANGE_CONNECTIVE = re.compile(r"(?i)^(?:between|zwischen|entre|tra|from|von|de)\b")
_CUR_TOKEN = re.compile(rf"(?:{_CUR_IN_TEXT})", re.IGNORECASE)
_ASK_BEFORE = re.compile(
    rf"(?i)\b{_AMOUNT_WORD}\b"
    r"(?:\s+(?:of|me|for|von|de|du))?\s*[:=]?\s*$")


# With a currency token (see `_doubts_possible`), a necessary condition for any doubt above
# (see GATES): a minus sign before a number or after a currency or keyword; three decimals;
# a money word or an upper-case code touching a number.
_DOUBT_GATE = re.compile(
    rf"[{_MINUS}]\s?\S{{0,4}}\s?\d|\d[.,]\d{{3}}|(?-i:[A-Z]{{3}})\s?\d|\d\s?(?-i:[A-Z]{{3}})|"
    rf"\d\s?(?i:{'|'.join(re.escape(w) for w in UNMAPPED_CURRENCY_WORDS)})(?![A-Za-z])",
    re.IGNORECASE,
)


def _all_iso_codes() -> frozenset[str]:
    import pycountry  # the ISO 4217 list: a code we do not handle is still a currency

    return frozenset(c.alpha_3 for c in pycountry.currencies)


@lru_cache(maxsize=1)
def unsupported_currency_codes() -> frozenset[str]:
    """ISO 4217 codes the bot does not map: an amount in one of them is for a human."""
    return _all_iso_codes() - ISO_CURRENCIES - {"XXX", "XTS"}


def amount_doubts(text: str, order_patterns: Sequence[str] = DEFAULT_ORDER_PATTERNS
                  ) -> list[str]:
    """What about the money in `text` the bot cannot read for sure, in plain words.

    Each doubt escalates the request: a minus sign before an amount, an amount finer
    than a cent, a currency named that the bot cannot map ("30 kr", "30 bucks", an ISO
    code it does not handle) and two currencies on one amount ("$20 CAD"). Dates, phone,
    order and card numbers are blanked first, as in `find_amount`.
    """
    if not text:
        return []
    work = normalise_for_reading(text[:20_000])
    if not _doubts_possible(work):
        return []
    for start, end, _ in _order_spans(work, order_patterns):
        work = work[:start] + "_" * (end - start) + work[end:]
    for rx in _NOT_AMOUNTS:
        work = _blank(work, rx)
    return _doubts_in(work)


def _doubts_possible(work: str) -> bool:
    """A sign, a fine fraction, a money word or a currency code near a number (see GATES).

    Blanking only ever removes digits and signs: what it leaves cannot pass where the
    text before it did not.
    """
    if not GATES:
        return True
    if not _digit_count(work):
        return False
    # A currency token anywhere, looked for as plain text (as `_candidates` finds where
    # money starts): the token's regex costs more than every doubt's pattern together.
    return (_has(_fold(work), _CURRENCY_STARTS) or _has(work, _ISO_SORTED)
            or _DOUBT_GATE.search(work) is not None)


def _doubts_in(work: str) -> list[str]:
    """`amount_doubts` of a text already normalised and blanked (see `_candidates`)."""
    doubts: list[str] = []

    def add(doubt: str) -> None:
        if doubt not in doubts:
            doubts.append(doubt)

    if _signed_starts(work):
        signs: dict[int, tuple[int, int]] = {}  # the minus sign's place -> what to show
        for m in _SIGN_BEFORE.finditer(work):
            before = work[m.start() - 1] if m.start() else " "
            if not (before.isalnum() or before in ".,_"):
                signs.setdefault(m.start(), (m.start(), m.end() + 12))
        for rx in (_SIGN_AFTER_CURRENCY, _SIGN_AFTER_KEYWORD):
            for m in rx.finditer(work):
                signs[m.end() - 1] = (m.start(), m.end() + 8)
        for at in sorted(signs):
            shown = _around(work, *signs[at])
            add(f"the amount '{shown}' has a minus sign: a refund is never negative")
    for m in _MONEY_TOKENS.finditer(work):
        num = m["n1"] or m["n2"]
        tokens = [t for t in (m["c1"], m["c2"], m["c3"]) if t]
        shown = _around(work, m.start(), m.end())
        codes = {currency_code(t) for t in tokens}
        if None in codes:
            add(f"'{shown}' names a currency the bot cannot tell ({', '.join(tokens)})")
        elif len(codes) > 1:
            add(f"'{shown}' names two currencies ({', '.join(sorted(c or '' for c in codes))})")
        value = _number_to_decimal(num)
        if value is not None and value.is_finite() and value > 0 and value != money(value):
            add(f"the amount '{shown}' is finer than a cent")
    for m in _KEYWORD_NUMBER.finditer(work):
        value = _number_to_decimal(m["n"])
        if value is not None and value.is_finite() and value > 0 and value != money(value):
            add(f"the amount '{_around(work, m.start(), m.end())}' is finer than a cent")
    # The search is the dearest of these, and most messages name one number: see
    # `_RANGE_GATE`.
    for m in _AMOUNT_RANGE.finditer(work) if _range_possible(work) else ():
        if _is_range(m):
            add(f"'{_around(work, m.start(), m.end())}' names two amounts and the bot cannot "
                f"tell which one is asked for")
    for m in _UNMAPPED_WORD.finditer(work):
        add(f"'{_around(work, m.start(), m.end())}' names no currency the bot can map")
    if any(ch.isupper() for ch in work):
        unsupported = unsupported_currency_codes()
        for m in _CODE_NEAR_NUMBER.finditer(work):
            code = m["c1"] or m["c2"]
            if code in unsupported:
                add(f"'{_around(work, m.start(), m.end())}' is in {code}, a currency the bot "
                    f"does not handle")
    return doubts


# Words that make a number in the text not the claim itself: a share of something, a sum
# with something else, a balance. With them, the bot does not know the amount asked for.
_SHARE_OF = re.compile(
    r"(?i)\b(?:half|a third|one third|two thirds|a quarter|three quarters|die h[äa]lfte|"
    r"la moiti[ée]|la mitad|met[àa])\b|\b\d{1,3}\s?%\s*(?:of|von|de|del|du)\b")
_SUM_WITH = re.compile(
    r"(?i)\b(?:plus|\+|and|with|incl(?:uding|\.)?|zzgl\.?|inkl\.?|und|et|y)\s+(?:the\s+)?"
    r"(?:shipping|postage|delivery(?: fee| costs?)?|versand(?:kosten)?|porto|frais de port|"
    r"livraison|env[íi]o|gastos de env[íi]o)\b|"
    r"\b(?:still (?:owed|owe|owing|outstanding|due|open)|the (?:difference|rest|remainder|"
    r"balance)|noch offen|restbetrag|reste d[ûu]|lo que (?:queda|falta))\b")


def _is_range(m: re.Match[str]) -> bool:
    """A range of money, not "order 2 and 20 EUR" nor "10 - 20" with no money in sight.

    "and"/"und"/"et"/"y" join a range only after "between"/"zwischen"/"entre"; a bare
    "-" or "to" needs a currency token on either side or a refund word right before
    ("refund 10-20"). Two numbers that are the same
    amount ("20 EUR or 20 EUR") are not a doubt.
    """
    joined = m.group(0)[m.end("a") - m.start():m.start("b") - m.start()].strip().lower()
    if joined in {"and", "und", "et", "y"} and not _RANGE_CONNECTIVE.match(m.group(0).strip()):
        return False
    asked = _ASK_BEFORE.search(m.string[max(0, m.start() - 40):m.start()])
    if not (_CUR_TOKEN.search(m["a"]) or _CUR_TOKEN.search(m["b"]) or asked):
        return False
    first = _number_to_decimal(_CUR_TOKEN.sub("", m["a"]).strip().rstrip(".,-"))
    second = _number_to_decimal(_CUR_TOKEN.sub("", m["b"]).strip().rstrip(".,-"))
    return first is not None and second is not None and first != second


def relative_amount_doubts(text: str, has_amount: bool) -> list[str]:
    """A claim the bot cannot turn into one amount: "half of it", "€20 plus shipping".

    A share ("half", "30% of") is never the whole order; a sum or a balance ("plus
    shipping", "still owed") makes a number written next to it not the claim.
    """
    if not text:
        return []
    work = normalise_for_reading(text[:20_000])
    if m := _SHARE_OF.search(work):
        return [f"the customer asks for '{_around(work, m.start(), m.end() + 12)}': a share "
                "the bot does not compute"]
    if has_amount and (m := _SUM_WITH.search(work)):
        return [f"the amount comes with '{_around(work, m.start(), m.end())}': the number "
                "written is not the whole claim"]
    return []


def _around(work: str, start: int, end: int) -> str:
    return " ".join(work[start:end].split())[:40]


@dataclass(frozen=True)
class AmountRead:
    """The amount asked for in free text, and what about it is not sure (see `amount_doubts`)."""

    amount: Decimal | None
    currency: str | None
    doubts: tuple[str, ...] = ()


def read_amount(text: str, order_patterns: Sequence[str] = DEFAULT_ORDER_PATTERNS
                ) -> AmountRead:
    """`find_amount` with its doubts: what intake adapters store on a request."""
    reading = _candidates(text, order_patterns)
    best = _best(reading.found)
    # The doubts read the same blanked text the amounts were read in: blanking it again
    # was a third of intake's parsing time (and most texts pass the doubts' gate only
    # before their order number is blanked: "ORD-1234" has a minus before a digit).
    if reading.blanked:
        money = _doubts_in(reading.work) if _doubts_possible(reading.work) else []
    else:
        money = amount_doubts(text, order_patterns)
    doubts = (*money, *_choice_doubts(reading.work, reading.found, best))
    return AmountRead(best[2][0] if best else None, best[2][1] if best else None,
                      tuple(dict.fromkeys(doubts)))


# A refund word and then a bare number ("refund 12 please"): not read as money on its own
# ("refund 2 shirts" is a count), but next to a price paid it may be the amount asked.
_BARE_ASK = re.compile(
    r"(?i)\b(?:refund|erstatt\w*|rembours\w*|reembols\w*|back)\b(?:\s+(?:of|me|for|von|de|du))?"
    r"\s*[:=]?\s*(?P<n>\d+(?:[.,]\d{1,2})?)\b")


def choice_doubts(text: str, order_patterns: Sequence[str] = DEFAULT_ORDER_PATTERNS
                  ) -> list[str]:
    """Several amounts that could each be the claim, and nothing says which."""
    reading = _candidates(text, order_patterns)
    return _choice_doubts(reading.work, reading.found, _best(reading.found))


def _choice_doubts(work: str, candidates: Sequence[Candidate], best: Candidate | None
                   ) -> list[str]:
    """Why the amount `find_amount` picked may not be the one asked for.

    Two different amounts with the same best score ("I paid 30 EUR, 20 EUR back please":
    each stands near "back" and "paid"), or a price paid picked while a refund word is
    followed by another number ("Refund 12 please, I paid 30 EUR"): the first written is
    not a reason to pay it.
    """
    if best is None:
        return []
    tied = sorted({c[2][0] for c in candidates if c[0] == best[0]})
    if len(tied) > 1:
        shown = ", ".join(f"{a:.2f}" for a in tied[:4])
        return [f"the message names {len(tied)} amounts ({shown}) that could each be the one "
                f"asked for, and the bot cannot tell which"]
    before = _SENTENCE_END.split(work[max(0, best[1] - 30):best[1]])[-1]
    if _PAID_WORDS.search(before[-15:]):
        for m in _BARE_ASK.finditer(work):
            value = _number_to_decimal(m["n"])
            if value is not None and value > 0 and value != best[2][0]:
                return [f"{best[2][0]:.2f} is what the customer paid; "
                        f"'{_around(work, m.start(), m.end())}' may be the amount asked for"]
    return []


def order_doubts(orders: Sequence[str]) -> list[str]:
    """One message that names several orders without saying which: a human picks."""
    if len(orders) < 2:
        return []
    shown = ", ".join(orders[:5]) + (" ..." if len(orders) > 5 else "")
    return [f"the message names {len(orders)} orders ({shown}) and the bot cannot tell which "
            f"one to refund"]


# --------------------------------------------------------------------------- reasons

REASON_CATEGORIES = (
    "damaged", "not_received", "wrong_item", "changed_mind", "late", "duplicate_charge", "other",
)

# (category, strength, lower-case pattern). The strongest match wins; on a tie, the one
# written first.
# Strength says how unambiguous the wording is: "charged twice" can only mean one thing,
# "don't need it anymore" is often said alongside a more specific complaint.
REASON_RULES: list[tuple[str, int, str]] = [
    ("duplicate_charge", 4, r"charged (?:me )?twice|double[- ]?charged?|duplicate[d]? "
                            r"(?:charge|payment|transaction|debit)|billed twice|paid twice|"
                            r"two (?:identical )?charges|charged two times|"
                            r"zweimal (?:abgebucht|belastet|berechnet)|doppelt "
                            r"(?:abgebucht|belastet|bezahlt|berechnet)|doppelbuchung|"
                            r"d[ée]bit[ée] deux fois|double (?:pr[ée]l[eè]vement|paiement)|"
                            r"cobrad[oa] dos veces|cargo duplicado|doble cargo|cobro duplicado"),
    ("not_received", 3, r"never (?:arrived|came|got|received|delivered|showed up)|"
                        r"(?:not|n[o']t|never) (?:yet )?(?:been )?(?:received|delivered|arrived)|"
                        r"didn'?t (?:receive|get|arrive)|did not (?:receive|get|arrive)|"
                        r"haven'?t (?:yet )?(?:received|got)|has(?:n'?t| not) arrived|"
                        r"lost (?:in (?:the )?(?:post|mail|transit)|parcel|package)|"
                        r"(?:parcel|package|order|delivery) (?:is |was )?(?:missing|lost)|"
                        r"missing (?:parcel|package|order|delivery)|"
                        r"where is my (?:order|parcel|package|delivery)|"
                        r"nicht (?:angekommen|erhalten|geliefert|zugestellt)|nie angekommen|"
                        r"(?:jamais|pas|non) (?:re[çc]u|livr[ée]|arriv[ée])|"
                        r"no (?:he )?recibido|nunca (?:lleg[oó]|recib[ií])|"
                        r"no (?:ha )?lleg(?:[oó]|ado)"),
    ("damaged", 3, r"damaged|broken|cracked|defective|faulty|stopped working|"
                   r"(?:does not|doesn'?t|did not|didn'?t|not) (?:work|working|turn on|switch on)|"
                   r"dead on arrival|\bdoa\b|\btorn\b|ripped|scratched|shattered|smashed|"
                   r"leak(?:ing|s|ed)|dented|besch[äa]digt|kaputt|defekt|zerbrochen|"
                   r"funktioniert nicht|endommag[ée]|cass[ée]|ab[iî]m[ée]|d[ée]fectueux|"
                   r"ne fonctionne pas|da[ñn]ad[oa]|\brot[oa]\b|defectuos[oa]|no funciona"),
    ("wrong_item", 3, r"wrong (?:item|size|colou?r|product|model|article|order|thing|one|book|"
                      r"version|parcel|package)|not what i (?:ordered|bought)|"
                      r"(?:incorrect|different) (?:item|product|size|colou?r|article)|"
                      r"sent (?:me )?the wrong|(?:doesn'?t|does not) (?:fit|match)|"
                      r"falsche[rsn]? (?:artikel|gr[öo](?:ß|ss)e|farbe|ware|produkt)|"
                      r"falsch geliefert|mauvais(?:e)? (?:article|produit|taille|couleur)|"
                      r"pas le bon|art[ií]culo (?:equivocado|incorrecto)|"
                      r"(?:talla|producto|color) (?:equivocad[oa]|incorrect[oa])"),
    ("late", 2, r"(?:arrived|came|delivered) (?:too )?late|too late|late delivery|"
                r"delivery (?:was |is )?(?:late|delayed)|delayed|took (?:too long|weeks)|"
                r"versp[äa]tet|zu sp[äa]t|en retard|retras(?:ad)?o|lleg[oó] tarde"),
    ("changed_mind", 2, r"changed? (?:my|her|his|their|our) minds?|change of mind|"
                        r"no longer (?:need|want|required)|(?:don'?t|do not|didn'?t|did not) "
                        r"(?:need|want|like|love) (?:it|them|this|the)|not needed|unwanted|"
                        r"returned unused|\banymore\b|\bany more\b|"
                        r"gef[äa]llt (?:mir )?nicht|nicht mehr (?:brauche|ben[öo]tige)|widerruf|"
                        r"chang[ée] d'avis|plus besoin|ne (?:me )?pla[iî]t pas|"
                        r"cambi[ée] de (?:opini[oó]n|idea)|ya no (?:lo |la )?(?:necesito|quiero)"),
]


def _literal_gate(pattern: str) -> re.Pattern[str] | None:
    """A plain alternation of the words a rule cannot match without (None: none known).

    It matches exactly when one of those words is in the text, and a literal
    alternation is searched 2-5x faster than the rule itself.
    """
    words = required_literals(pattern)
    return _alternation(words) if words else None


# Matched against lower-cased text: several times faster than re.IGNORECASE. Each rule
# is only searched when its gate finds one of the words it needs (GATES).
_REASON_RX = [(cat, strength, re.compile(rx), _literal_gate(rx))
              for cat, strength, rx in REASON_RULES]


CLASSIFY_LIMIT = 20_000


def classify_reason(text: str) -> str:
    """The policy's reason category for a customer's words; `other` when nothing is clear.

    Only the first 20,000 characters count: people state their problem up front,
    and the pattern table is too costly to run over megabytes of pasted logs.
    """
    text = (text or "")[:CLASSIFY_LIMIT].lower()
    best: tuple[int, int, str] | None = None  # (-strength, position, category)
    for category, strength, rx, gate in _REASON_RX:
        if GATES and gate is not None and not gate.search(text):
            continue
        m = rx.search(text)
        if m and (best is None or (-strength, m.start()) < best[:2]):
            best = (-strength, m.start(), category)
    return best[2] if best else "other"


# Below this many texts, the per-call cost of a column search outweighs what it saves.
COLUMN_MIN = 16


def classify_reasons(texts: Sequence[str]) -> list[str]:
    """`classify_reason` of each text, searched a whole column at a time.

    An export's messages all go through the same rules: one RE2 pass per rule over
    the column (see `bots.intake.column_search`) costs less than one backtracking search per
    message and rule. The result is exactly that of `classify_reason`.
    """
    if len(texts) < COLUMN_MIN:
        return [classify_reason(t) for t in texts]
    column = TextColumn([(t or "")[:CLASSIFY_LIMIT].lower() for t in texts])
    # Rank every rule's first match as classify_reason does: strength, then position.
    scores = np.stack([np.where(at >= 0, strength * _POSITIONS - at, -1) for strength, at in
                       ((s, column.first_match(p)) for _, s, p in _REASON_COLUMNS)])
    best = scores.argmax(axis=0)  # the first of equal scores: rule order breaks full ties
    found = scores.max(axis=0) >= 0
    return [_REASON_COLUMNS[b][0] if hit else "other"
            for b, hit in zip(best.tolist(), found.tolist(), strict=True)]


_POSITIONS = CLASSIFY_LIMIT + 1  # a stronger rule outranks any position
_REASON_COLUMNS = [(cat, strength, column_pattern(rx)) for cat, strength, rx in REASON_RULES]


# --------------------------------------------------------------------------- secrets

REDACTED = "[redacted]"

_IBAN_CANDIDATE = re.compile(
    r"(?i)\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"
)
# Cards are written with any separator between digit groups: spaces, dashes, dots,
# underscores, slashes, line breaks (after `normalise_text`, NBSPs are spaces).
_CARD_SEP = r"[ \t\-._/\r\n]"
_DIGIT_RUN = re.compile(rf"(?<!\d)\d(?:{_CARD_SEP}{{0,3}}\d){{12,}}(?!\d)")
_CARD_SPLIT = re.compile(rf"({_CARD_SEP}+)")
_CREDENTIALS = [
    # password: xyz / pwd=xyz / my password is xyz
    re.compile(r"(?i)(\b(?:password|passwort|passwd|pwd|kennwort|mot de passe|contrase[ñn]a|"
               r"passcode|passphrase)\b\s*(?:[:=]|\bis\b|\bwas\b|\bist\b|\best\b|\bes\b)\s*)"
               r"(\S+)"),
    # CVV 123 / PIN: 1234 / security code 123, in en/de/fr/es/it/nl, with or without a colon
    re.compile(r"(?i)(\b(?:cvv2?|cvc2?|cvn|csc|cid|pin|security code|card code|"
               r"card verification (?:code|value|number)|otp|tan|"
               r"pr[üu]fziffer|pr[üu]fnummer|kartenpr[üu]f(?:nummer|ziffer)|sicherheitscode|"
               r"cryptogramme(?: visuel)?|code (?:de s[ée]curit[ée]|cvv|cvc|secret)|"
               r"c[óo]digo (?:de seguridad|cvv|cvc)|codice (?:di sicurezza|di verifica|cvv|cvc)|"
               r"beveiligingscode|(?:kaart)?verificatiecode|controlecode)\b"
               r"(?:[-\s]?code)?\s*(?:[:=#]|\bis\b|\bist\b|\best\b|\bes\b|\bè|\bcode\b)?"
               r"\s*[:=]?\s*)(\d{3,8})\b"),
    # NAME=secret as configuration, URLs and logs write it: DB_PASSWORD=..., ?token=...
    re.compile(r"(?i)(\b[\w.-]*(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|"
               r"access[_-]?key|private[_-]?key|auth|credential)[\w.-]*\s*=\s*)([^\s\"']+)"),
]


_CREDENTIAL_GATES = [
    (0, ("pass", "pwd", "kennwort", "contrase")),
    (3, ("cvv", "cvc", "cvn", "csc", "cid", "pin", "security code", "card code",
         "card verification", "otp", "tan", "prüf", "pruf", "sicherheitscode", "cryptogramme",
         "code de s", "code cvv", "code cvc", "code secret", "digo", "codice",
         "beveiligingscode", "verificatiecode", "controlecode")),
    (0, ("pass", "pwd", "secret", "token", "key", "auth", "credential")),
]

_LUHN_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_valid(digits: str) -> bool:
    """The card-number checksum: it is what tells a card number from an order or phone number."""
    # int() also reads the other scripts' digits `\d` matches ("４１１１..."): ord() - 48 would not.
    values = [ord(ch) - 48 for ch in reversed(digits)] if digits.isascii() else [
        int(ch) for ch in reversed(digits)]
    return (sum(values[0::2]) + sum(_LUHN_DOUBLED[d] for d in values[1::2])) % 10 == 0


def _iban_valid(iban: str) -> bool:
    if not 15 <= len(iban) <= 34:
        return False
    moved = iban[4:] + iban[:4]
    try:
        return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1
    except ValueError:
        return False


def _mask_iban(m: re.Match[str]) -> str:
    raw = m.group(0)
    compact = raw.replace(" ", "").upper()
    # The candidate may have swallowed a following word: try shorter prefixes too.
    for cut in range(len(compact), 14, -1):
        if _iban_valid(compact[:cut]):
            used = _prefix_covering(raw, cut)
            return f"{compact[:2]}** **** **** {compact[cut - 4:cut]}" + raw[used:]
    return raw


def _prefix_covering(raw: str, n_chars: int) -> int:
    """Length of the prefix of `raw` that holds its first `n_chars` non-space characters."""
    seen = 0
    for i, ch in enumerate(raw):
        if ch != " ":
            seen += 1
            if seen == n_chars:
                return i + 1
    return len(raw)


def _mask_card_run(m: re.Match[str]) -> str:
    """Mask each Luhn-valid 13-19 digit stretch of a digit run, leaving the rest as written.

    A run can hold more than a card ("ORD-123456 4111 1111 1111 1111"), so windows of
    whole digit groups are tried; at most 19 digits each, which keeps this linear.
    """
    parts = _CARD_SPLIT.split(m.group(0))  # digits, sep, digits, sep, ...
    chunks = parts[0::2]
    out: list[str] = []
    i = 0
    while i < len(chunks):
        j = _card_window(chunks, i)
        if j is None:
            out.append(chunks[i] + (parts[2 * i + 1] if 2 * i + 1 < len(parts) else ""))
            i += 1
            continue
        digits = "".join(chunks[i:j])
        out.append(f"**** **** **** {digits[-4:]}" + (parts[2 * j - 1] if j < len(chunks) else ""))
        i = j
    return "".join(out)


def _card_window(chunks: list[str], i: int) -> int | None:
    """End of the longest card-number window starting at chunk `i`, if any.

    Cards are written in groups of three or more digits; groups of one or two
    digits are someone's list or a phone number, and skipping them keeps hostile
    input like "1 1 1 1 ..." cheap.
    """
    best, total = None, 0
    for j in range(i, len(chunks)):
        if len(chunks[j]) < 3:
            break
        total += len(chunks[j])
        if total > 19:
            break
        if total >= 13 and luhn_valid("".join(chunks[i:j + 1])):
            best = j + 1
    return best


def mask_secrets(text: str) -> str:
    """Hide card numbers, IBANs and credentials before customer text is stored anywhere.

    Only Luhn-valid card-length runs are masked, so order numbers and phone numbers
    stay readable for the humans who handle the case.
    """
    if not text:
        return text or ""
    # NBSPs, full-width or other scripts' digits and zero-width characters inside a card
    # number must not hide it: mask the text as a person reads it.
    text = normalise_text(text)
    # Gates (see GATES): an IBAN has 2+ digits, a card 13+, a credential its keyword.
    digits = _digit_count(text) if GATES else 99
    if digits >= 2:
        text = _IBAN_CANDIDATE.sub(_mask_iban, text)
    if digits >= 13:
        # Again until nothing changes: a window that took the head of the next card, or the
        # four digits a mask keeps, can leave (or form) a new Luhn-valid run beside it.
        for _ in range(4):
            masked = _DIGIT_RUN.sub(_mask_card_run, text)
            if masked == text:
                break
            text = masked
    folded = _fold(text) if GATES else ""
    for i, (rx, (need_digits, words)) in enumerate(zip(_CREDENTIALS, _CREDENTIAL_GATES,
                                                         strict=True)):
        if i == 2 and GATES and "=" not in text:
            continue
        if not GATES or (digits >= need_digits and _has(folded, words)):
            text = rx.sub(lambda m: m.group(1) + REDACTED, text)
    return text


_NUMBER_TAIL = re.compile(r"[\d\s-]+")


def cut_text(text: str, limit: int) -> str:
    """The first `limit` characters, never ending in half a card number.

    Masking cannot recognise half a card, so a trailing run of digits, spaces and
    dashes goes with the cut. The run is matched at the start of the reversed text:
    a search anchored at the end is quadratic on a long run of digits followed by a
    letter (seconds for 50,000).
    """
    if len(text) <= limit:
        return text
    head = text[:limit]
    tail = _NUMBER_TAIL.match(head[::-1])
    return head[:len(head) - tail.end()] if tail else head


def mask_secrets_many(texts: Sequence[str]) -> list[str]:
    """`mask_secrets` of each text; a column search first sets aside those with nothing to mask.

    Most messages hold no card, IBAN or credential: `_SECRET_GATE` (which every
    secret matches) is checked over the whole column in one call, and only the
    texts it matches, or cannot rule out, are masked one by one.
    """
    if len(texts) < COLUMN_MIN:
        return [mask_secrets(t) for t in texts]
    maybe = TextColumn([t or "" for t in texts]).may_match(_SECRET_GATE)
    # The gate reads ASCII: text in other scripts is normalised and masked one by one.
    return [mask_secrets(t) if hit or not (t or "").isascii() else (t or "")
            for t, hit in zip(texts, maybe, strict=True)]


# A necessary condition for `mask_secrets` to change a text: a 13+ digit run (cards), the
# head of an IBAN, or a credential keyword (the words `_CREDENTIAL_GATES` test for).
_SECRET_GATE = column_pattern(
    r"\d(?:[ \t\-._/\r\n]{0,3}\d){12,}|(?i:\b[a-z]{2}\d{2}(?: ?[a-z0-9]{4}){2})|(?i:"
    + "|".join(re.escape(w) for _, words in _CREDENTIAL_GATES for w in words if w.isascii())
    + ")"
)


_AMOUNT_GATE = _amount_gate()


# --------------------------------------------------------------------------- phones

# What a phone number may look like as typed or exported: digits and the usual
# separators, an optional "tel:" prefix and an extension. Anything else (letters,
# formulas) is refused before phonenumbers sees it: it reads "1-800-FLOWERS" as digits.
_PHONE_SHAPE = re.compile(
    r"(?i)(?:tel:)?\s*\+?[\d\s().\-/\u00a0\u2010-\u2015]{5,40}"
    r"(?:\s*(?:ext\.?|x|#)\s*\d{1,6})?"
)
PHONE_REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)


def normalise_phone(text: str | None, region: str | None = None) -> str | None:
    """One spelling per phone number (E.164, `+442079460123`), or None if it is not one.

    National numbers (`020 7946 0123`) need the `region` they were dialled in
    (ISO 3166 code, "GB"); international ones (`+44 ...`, `0044 ...`) do not. Only
    numbers valid in their country's numbering plan count: a caller id of
    "anonymous", a truncated number or an order number is None, never a guess.
    """
    if not text:
        return None
    text = text.strip()
    if not text or len(text) > 60:
        return None
    return _normalise_phone(text, region.upper() if region else None)


@lru_cache(maxsize=65_536)
def _normalise_phone(text: str, region: str | None) -> str | None:
    """Cached: a call log repeats its callers, and parsing costs ~50 µs a number."""
    if not _PHONE_SHAPE.fullmatch(text):
        return None
    compact = text[4:].lstrip() if text[:4].lower() == "tel:" else text
    if region is None and compact.startswith("00"):
        compact = "+" + compact[2:]  # the international prefix most of the world dials
    try:
        number = phonenumbers.parse(compact, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# --------------------------------------------------------------------------- emails & text

_EMAIL_RE = re.compile(
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})"
)


def normalise_email(addr: str | None) -> str | None:
    """One spelling per address (`Ada <ADA@x.org>` -> `ada@x.org`), or None if it is not one."""
    if not addr:
        return None
    text = addr.strip()
    if "<" in text:
        inner = text[text.rfind("<") + 1:]
        text = inner.split(">", 1)[0] if ">" in inner else inner
    text = text.strip().strip("'\"").strip().lower()
    if text.startswith("mailto:"):
        text = text[len("mailto:"):]
    if len(text) > 254 or len(text.split("@", 1)[0]) > 64:
        return None
    return text if _EMAIL_RE.fullmatch(text) else None


_SPACES = re.compile(r"[ \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
# Control characters (not \t \n), lone surrogates, zero-width and bidi-override characters:
# invisible, they only ever serve to confuse a human reader or break storage.
_INVISIBLE = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u200b\u200e\u200f\u202a-\u202e"
    r"\u2060-\u2064\u2066-\u2069\ufeff\ufff9-\ufffb]"
)


_LINE_BREAKS = re.compile(r"[\v\f\u0085\u2028]")
_SPACE_AT_BREAK = re.compile(r"[ \t]*\n[ ]*")
_BLANK_LINES = re.compile(r"\n{3,}")


def clean_text(text: str, limit: int = 5000) -> str:
    """Text fit to store and show: visible characters, tidy whitespace, bounded length."""
    if not text:
        return ""
    if len(text) <= limit and text.isascii() and text.isprintable() and text == text.strip() \
            and "  " not in text:
        return text  # already clean: the common case for short spreadsheet cells
    truncated = len(text) > max(limit * 4, 100_000)
    text = text[: max(limit * 4, 100_000)]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _LINE_BREAKS.sub("\n", text).replace("\u2029", "\n\n")
    text = _INVISIBLE.sub("", text)
    text = unicodedata.normalize("NFC", text)
    text = _SPACES.sub(" ", text)
    text = _SPACE_AT_BREAK.sub("\n", text)
    text = _BLANK_LINES.sub("\n\n", text).strip()
    if len(text) > limit or truncated:
        text = text[: max(limit - 1, 0)].rstrip() + "…"
    return text


# Tags that end a line, and those that also leave a blank line (a paragraph).
_LINE_TAGS = frozenset({
    "address", "article", "aside", "dd", "div", "dl", "dt", "footer", "form", "header", "li",
    "main", "nav", "section", "tbody", "thead", "tfoot", "tr",
})
_PARAGRAPH_TAGS = frozenset({
    "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "ol", "p", "pre", "table", "ul",
})
_SKIP_TAGS = frozenset({
    "script", "style", "head", "title", "template", "noscript", "svg", "object", "iframe",
})


class _TextExtractor(HTMLParser):
    """Collects visible text; block boundaries become one pending break, not one per tag."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.pending = 0  # newlines owed before the next text: 1 line end, 2 paragraph
        self.skip = 0
        self.pre = 0

    def _block(self, tag: str) -> None:
        if tag in _PARAGRAPH_TAGS:
            self.pending = 2
        elif tag in _LINE_TAGS:
            self.pending = max(self.pending, 1)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skip += 1
        elif tag == "br":
            self._emit("\n")
        elif tag in ("td", "th"):
            self._emit(" ")
        else:
            self.pre += tag == "pre"
            self._block(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self._emit("\n")
        elif tag not in _SKIP_TAGS:
            self._block(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        else:
            self.pre = max(0, self.pre - (tag == "pre"))
            self._block(tag)

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
            if self.pending or not self.parts or self.parts[-1].endswith("\n"):
                data = data.lstrip()
        if data:
            self._emit(data)

    def _emit(self, text: str) -> None:
        if self.pending and self.parts:
            self.parts.append("\n" * self.pending)
        self.pending = 0
        self.parts.append(text)


def html_to_text(html: str) -> str:
    """What a person would read in an HTML-only email: no scripts or styles, paragraphs kept."""
    parser = _TextExtractor()
    try:
        parser.feed(html or "")
        parser.close()
    except Exception:  # malformed markup must still yield its readable text
        pass
    text = re.sub(r"[ \t]+\n", "\n", "".join(parser.parts))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n ")


def check_order_patterns(patterns: list[str] | None) -> list[str] | None:
    """Settings validation shared by every source that takes `order_patterns`."""
    for pattern in patterns or []:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"order pattern {pattern!r} is not a valid regex: {exc}") from exc
    return patterns
