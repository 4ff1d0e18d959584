"""Answer customers in their own language, with their locale's amounts and dates.

The notifier (`bots.notify`) asks this module three things for each contact: which
templates to use (the customer's detected language when `config/templates/<lang>/`
has them, else the configured default language, with a note saying so), how to write
an amount and a date for that language (Babel's CLDR data, shipped in its wheel), and
whether the channel wants the short form (chat, social, voice: a few lines) or the full
one (email, portal, phone call-backs, spreadsheets).

The customer's name is printed as they wrote it (accents, other scripts, right-to-left
names), with only the characters removed that could make the text lie about itself:
control characters and Unicode bidi overrides/isolates (a name with U+202E can show a
different text than it holds). The zero-width joiners that Arabic and Indic scripts
need are kept.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cache
from pathlib import Path

from babel import Locale
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal

DEFAULT_LANGUAGE = "en"
# The locale an amount and a date are written in, per language. A customer's region is
# rarely known for sure (a .de address may be Austrian), so one per language.
LOCALES = {"en": "en_GB", "de": "de_DE", "fr": "fr_FR", "es": "es_ES", "it": "it_IT",
           "nl": "nl_NL", "pt": "pt_PT"}
SHORT_CHANNELS = frozenset({"chat", "social", "voice"})
_LANGUAGE = re.compile(r"[a-z]{2}")
_KEEP_FORMAT = {"\u200c", "\u200d"}  # ZWNJ, ZWJ: part of how some scripts are written


@dataclass(frozen=True)
class LanguageChoice:
    """The language a message is written in, and why when it is not the customer's."""

    language: str
    wanted: str | None  # the customer's detected language (None: not detected)
    note: str = ""  # set when the customer's language has no templates
    folder: str | None = None  # the templates' subfolder; None: the default's (top folder)


def template_languages(folder: Path) -> set[str]:
    """Languages with their own templates: subfolders named by an ISO 639-1 code."""
    if not folder.is_dir():
        return set()
    return {p.name for p in folder.iterdir()
            if p.is_dir() and _LANGUAGE.fullmatch(p.name) and any(p.glob("*.txt.j2"))}


def choose_language(wanted: str | None, available: set[str], default: str) -> LanguageChoice:
    """The customer's language when templates exist for it, else `default` with a note."""
    if wanted is None or wanted == default:
        return LanguageChoice(default, wanted)
    if wanted in available:
        return LanguageChoice(wanted, wanted, folder=wanted)
    return LanguageChoice(default, wanted,
                          f"no '{wanted}' templates in the templates folder: answered in "
                          f"the default language '{default}'")


@cache
def locale_of(language: str) -> Locale:
    return Locale.parse(LOCALES.get(language, language))


def format_amount(amount: Decimal | None, currency: str | None, language: str
                  ) -> tuple[str, str]:
    """(the number, the number with its currency) as the customer's locale writes them.

    `("1.234,50", "1.234,50 €")` in German, `("1 234,50", "1 234,50 €")` in French;
    ("", "") when there is no amount. Without a currency only the number is given.
    """
    if amount is None:
        return "", ""
    locale = locale_of(language)
    number = format_decimal(amount, format="#,##0.00", locale=locale)
    if not currency:
        return number, number
    return number, format_currency(amount, currency, locale=locale)


def format_day(day: date, language: str) -> str:
    """A date written out the customer's way: "3 December 2026", "3. Dezember 2026"."""
    return format_date(day, format="long", locale=locale_of(language))


def is_short(channel: str) -> bool:
    """Chat, social and voice (SMS call-backs) get the short form; email the full one."""
    return channel in SHORT_CHANNELS


def plain_name(name: str | None) -> str | None:
    """The name as written, without control characters and bidi overrides; one line."""
    if not name:
        return None
    kept = "".join(ch if unicodedata.category(ch)[0] != "C" or ch in _KEEP_FORMAT else " "
                   for ch in name)
    text = " ".join(kept.split())
    return text or None
