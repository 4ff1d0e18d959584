"""Which of an order's lines a customer's words are about, and how many of each.

"The jacket arrived damaged" on an order of a jacket and a sweater asks for the
jacket; "two of the three candles are cracked" for two candles. The order's lines
come from the order system, so this runs at decision time, on the stored texts
of every contact of the case. It only ever narrows a refund: when the words name
no line, or say "the whole order", the whole order is asked for, as before.

Pure logic. A line is named by its SKU or by the head noun of its product name
("Waterproof *jacket*", "Rain *boots*", singular or plural). When several lines
share the head ("Blue mug", "Red mug"), a qualifying word just before it ("the
blue mug") picks the line; without one, "the mugs" means all of them. The count
comes from the few words before the name ("2 candles", "two of the three blue
mugs"), never more than was bought.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from bots.models import LineItem


@dataclass(frozen=True)
class ItemAsk:
    """One order line the customer asks a refund for."""

    sku: str
    quantity: int | None  # None: as many as were bought (no count given)
    said: str  # the customer's words that named it, for the explanation
    # A count was given for words several lines share ("2 mugs" with a blue and a red
    # mug line): which lines and how many is for a human to say.
    unsure: bool = False


# Words in product names that say nothing about which product it is.
_STOPWORDS = frozenset({
    "and", "the", "with", "for", "pcs", "pack", "piece", "item", "size", "new", "edition",
    "inch", "one", "two", "three",
})
# Head nouns customers also use about the refund itself ("to my card", "the box"): they
# name a line only together with one of its qualifying words ("the gift card").
_GENERIC = frozenset({
    "card", "set", "kit", "box", "order", "product", "package", "parcel", "bundle", "item",
    "thing", "money", "refund", "payment", "account", "machine",
})
_WHOLE_ORDER = re.compile(
    r"\b(?:(?:whole|entire|complete|full) (?:order|parcel|package|delivery|thing)|"
    r"everything|all (?:the |of the |my )?(?:items|products|things|of it)|"
    r"(?:ganze|gesamte|komplette) (?:bestellung|lieferung|paket)|"
    r"(?:toute la|la totalit[ée] de la) commande|tout le colis|"
    r"todo el pedido|el pedido (?:completo|entero))\b"
)
_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "ein": 1, "eine": 1, "einen": 1, "zwei": 2, "drei": 3,
    "vier": 4, "fünf": 5, "un": 1, "une": 1, "deux": 2, "trois": 3, "quatre": 4, "cinq": 5,
    "uno": 1, "una": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5,
}
_NUM = r"(?:\d{1,3}|" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + r")"
# A count right before a product name: "2 candles", "2x candle", "two of the three
# candles", "2 of my blue mugs", "zwei der Kerzen". At most two words (colours, sizes)
# between the count and the name, which follows the match.
_COUNT_BEFORE = re.compile(
    rf"(?<![\w.,/-])(?P<n>{_NUM})\s*(?:x\s*|pcs?\.?\s+|pieces?\s+(?:of\s+)?)?"
    rf"(?:(?:of|von|der|de|des|du)\s+(?:the\s+|my\s+|your\s+|les\s+|mes\s+|los\s+|las\s+)?"
    rf"(?:{_NUM}\s+)?)?(?:[^\W\d]+\s+){{0,2}}$"
)
# "I ordered 3 candles": the quantity bought, not the quantity asked back.
_BOUGHT = re.compile(r"\b(?:ordered|bought|purchased|got|received|bestellt|gekauft|"
                     r"command[ée]e?s?|achet[ée]e?s?|compr[ée]|ped[ií])\s*$")
_HYPHEN_PREFIX = re.compile(r"[^\W\d_]+-$")
_LOOKBACK = 40  # characters before a name searched for its count
_QUALIFIER_WORDS = 3  # a qualifying word counts this many words before the head at most


@dataclass(frozen=True)
class _Name:
    """How a product name is recognised: its head noun and the words that qualify it."""

    sku: str
    head: str
    qualifiers: frozenset[str]


def items_asked(texts: Sequence[str], items: Sequence[LineItem]) -> tuple[ItemAsk, ...]:
    """The lines the texts ask for, in order-line order; () for the whole order."""
    asks: dict[str, ItemAsk] = {}
    for text in texts:
        low = _fold(text or "")
        if _WHOLE_ORDER.search(low):
            return ()
        for ask in _asks_in(low, items):
            asks[ask.sku] = _merge(asks.get(ask.sku), ask)
    return tuple(asks[i.sku] for i in items if i.sku in asks)


def _merge(old: ItemAsk | None, new: ItemAsk) -> ItemAsk:
    """A count given anywhere beats a bare mention; of two counts, the larger."""
    if old is None or (old.quantity is None and new.quantity is not None):
        return new
    if new.quantity is not None and old.quantity is not None and new.quantity > old.quantity:
        return new
    if old.quantity is None and new.unsure and not old.unsure:
        return new
    return old


def _asks_in(low: str, items: Sequence[LineItem]) -> list[ItemAsk]:
    mentions: dict[str, list[tuple[int, int]]] = {}  # sku -> spans of the words naming it
    shared: set[tuple[int, int]] = set()  # spans that name several lines at once
    for item in items:
        for m in re.finditer(rf"(?<![\w-]){re.escape(item.sku.lower())}(?![\w-])", low):
            mentions.setdefault(item.sku, []).append(m.span())
    names = [n for n in map(_name_of, items) if n is not None]
    for head in dict.fromkeys(n.head for n in names):
        lines = [n for n in names if n.head == head]
        for m in re.finditer(_word_pattern(head), low):
            before = _words_before(low, m.start())
            precise = [(n, at) for n in lines if (at := _qualifier_at(before, n)) is not None]
            if precise:  # "the blue mug": the line whose name has "blue"
                for n, at in precise:
                    mentions.setdefault(n.sku, []).append((at, m.end()))
            elif head not in _GENERIC:  # "the mugs": every line named so
                for n in lines:
                    mentions.setdefault(n.sku, []).append(m.span())
                if len(lines) > 1:
                    shared.add(m.span())
    quantities = {i.sku: i.quantity for i in items}
    asks = []
    for sku, spans in mentions.items():
        counted = [(count, span in shared) for span in spans
                   if (count := _count_before(low, span[0])) is not None and count > 0]
        counts = [n for n, is_shared in counted if not is_shared and n <= quantities[sku]]
        start, end = min(spans)
        asks.append(ItemAsk(sku, max(counts) if counts else None, low[start:end],
                            unsure=not counts and any(is_shared for _, is_shared in counted)))
    return asks


def _name_of(item: LineItem) -> _Name | None:
    words = [_singular(w) for w in re.findall(r"[^\W\d_]+", _fold(item.name))
             if len(w) >= 3 and w not in _STOPWORDS]
    if not words:
        return None
    return _Name(item.sku, words[-1], frozenset(words[:-1]))


def _singular(word: str) -> str:
    """Plural names ("Rain boots") and plural mentions ("boots") meet at the singular."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        return word[:-1]
    return word


def _word_pattern(word: str) -> str:
    """The word, singular or plural, as a whole word."""
    plural = rf"{re.escape(word[:-1])}ies|" if word.endswith("y") else ""
    return rf"(?<![^\W_])(?:{plural}{re.escape(word)}(?:e?s)?)(?![^\W_])"


def _words_before(low: str, end: int) -> list[tuple[int, str]]:
    """The last few words before `end`, each with where it starts."""
    offset = max(0, end - 60)
    found = [(offset + m.start(), _singular(m.group()))
             for m in re.finditer(r"[^\W\d_]+", low[offset:end])]
    return found[-_QUALIFIER_WORDS:]


def _qualifier_at(before: list[tuple[int, str]], name: _Name) -> int | None:
    """Where the first of `name`'s qualifying words stands just before its head, if any."""
    return next((at for at, word in before if word in name.qualifiers), None)


def _count_before(low: str, start: int) -> int | None:
    """The count the customer put before a name; not what they say they bought."""
    window = _HYPHEN_PREFIX.sub("", low[max(0, start - _LOOKBACK):start])  # "1 t-|shirt"
    m = _COUNT_BEFORE.search(window)
    if not m or _BOUGHT.search(window[:m.start()]):
        return None
    n = m["n"]
    return int(n) if n.isdigit() else _NUMBER_WORDS[n]


def _fold(text: str) -> str:
    """Lower case, with typographic apostrophes and hyphens made plain."""
    text = unicodedata.normalize("NFC", text).lower()
    return text.replace("\u2019", "'").replace("\u2010", "-").replace("\u2011", "-")
