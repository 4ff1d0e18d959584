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
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from html.parser import HTMLParser

from bots.models import money

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


def _order_spans(text: str, patterns: Sequence[str]) -> list[tuple[int, int, str]]:
    spans: list[tuple[int, int, str]] = []
    for rx in _compiled(tuple(patterns)):
        for m in rx.finditer(text):
            raw = m.group("id") if "id" in rx.groupindex and m.group("id") else m.group(0)
            spans.append((m.start(), m.end(), _canonical_order(raw)))
    spans.sort()
    return spans


def find_order_numbers(text: str, patterns: Sequence[str] = DEFAULT_ORDER_PATTERNS) -> list[str]:
    """Order numbers in order of appearance, each once, in canonical `ORD-123456` form.

    A pattern may name its order-number group `id` when it has to match context
    around the number (like the word "order" before bare digits).
    """
    seen: dict[str, None] = {}
    for _, _, number in _order_spans(text or "", patterns):
        seen.setdefault(number, None)
    return list(seen)


# --------------------------------------------------------------------------- amounts

MAX_AMOUNT = Decimal("1000000")

# Longest spelling first so that "US$" wins over "$".
_CURRENCY_SYMBOLS: dict[str, str | None] = {
    "US$": "USD", "C$": "CAD", "A$": "AUD", "R$": "BRL", "€": "EUR", "£": "GBP", "$": "USD",
    "¥": "JPY", "₹": "INR", "zł": "PLN", "Fr.": "CHF", "kr": None,
}
_CURRENCY_WORDS: dict[str, str] = {
    "euros": "EUR", "euro": "EUR", "dollars": "USD", "dollar": "USD", "pounds": "GBP",
    "pound": "GBP",
}
ISO_CURRENCIES = frozenset({
    "EUR", "USD", "GBP", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK", "HUF", "RON", "BGN", "ISK",
    "JPY", "CNY", "CAD", "AUD", "NZD", "INR", "BRL", "MXN", "ZAR", "TRY", "SGD", "HKD", "KRW",
    "ILS", "AED", "SAR",
})



def _currency_regex(iso_any_case: bool) -> str:
    """Currency tokens. In free text ISO codes must be upper case: "try 12" is not lira."""
    iso = "|".join(sorted(ISO_CURRENCIES))
    iso = iso if iso_any_case else f"(?-i:{iso})"
    return "|".join(
        [re.escape(s) for s in sorted(_CURRENCY_SYMBOLS, key=len, reverse=True)]
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
    for symbol, code in _CURRENCY_SYMBOLS.items():
        if token.lower() == symbol.lower():
            return code
    if token.lower() in _CURRENCY_WORDS:
        return _CURRENCY_WORDS[token.lower()]
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
    return value, currency_code(m["c1"] or m["c2"])


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
_SENTENCE_END = re.compile(r"[.!?;]\s|\n")
_MONEY_IN_TEXT = re.compile(
    rf"(?<![\w.,])(?:(?P<c1>{_CUR_IN_TEXT})\s?(?P<n1>{_NUM}){_NUM_TAIL}(?![\w.,]*\d)"
    rf"|(?P<n2>{_NUM}){_NUM_TAIL}\s?(?P<c2>{_CUR_IN_TEXT}))",
    re.IGNORECASE,
)
_KEYWORD_NUMBER = re.compile(
    rf"(?i)\b(?:refund|amount|betrag|montant|importe|reembolso|erstattung|remboursement)\b"
    rf"(?:\s+(?:of|me|for|von|de|du))?\s*[:=]?\s*(?P<n>{_NUM})(?![\d.,]*\d)"
    # A bare number is money only with cents ("refund 49.90") or at the end of a phrase
    # ("Refund: 40."); "refund 2 shirts" or "14 days" are counts.
    r"(?:(?<=[.,]\d)|(?<=[.,]\d\d)|(?=\s*(?:$|[^\w\s])))"
    r"(?!\s*(?:%|days?|weeks?|months?|years?|items?|pcs|pieces|x\b|tage|jours|d[ií]as|"
    r"jan|feb|m[aä]r|apr|ma[iy]|jun|jul|aug|sep|o[ck]t|nov|de[cz]))"
)


def _blank(text: str, rx: re.Pattern[str]) -> str:
    return rx.sub(lambda m: "_" * len(m.group(0)), text)


def _score(text: str, start: int, end: int, has_currency: bool) -> int:
    """Close context decides: "refund 20 EUR", "€25 back" ask; "paid 59.90 €" only reports."""
    before = _SENTENCE_END.split(text[max(0, start - 30):start])[-1]
    after = _SENTENCE_END.split(text[end:end + 15])[0]
    score = 2 if has_currency else 1
    if _REFUND_WORDS.search(before) or _REFUND_WORDS.search(after):
        score += 2
    if _PAID_WORDS.search(before[-15:]):
        score -= 1
    return score


def find_amount(text: str, order_patterns: Sequence[str] = DEFAULT_ORDER_PATTERNS
                ) -> tuple[Decimal, str | None] | None:
    """The refund amount a customer asks for in free text, or None when none is clear.

    Dates, phone, order and card numbers are blanked out first so that they can
    never be read as money. Amounts with a currency win over bare numbers after
    "refund"/"amount"; among those, one near a refund word wins over one near "paid".
    """
    if not text:
        return None
    work = text[:20_000]
    for start, end, _ in _order_spans(work, order_patterns):
        work = work[:start] + "_" * (end - start) + work[end:]
    for rx in _NOT_AMOUNTS:
        work = _blank(work, rx)
    best: tuple[int, int, tuple[Decimal, str | None]] | None = None
    for m in _MONEY_IN_TEXT.finditer(work):
        num, cur = (m["n1"], m["c1"]) if m["n1"] else (m["n2"], m["c2"])
        value = _valid_amount(_number_to_decimal(num))
        if value is not None:
            best = _better(best, _score(work, m.start(), m.end(), True), m.start(),
                           (value, currency_code(cur)))
    for m in _KEYWORD_NUMBER.finditer(work):
        value = _valid_amount(_number_to_decimal(m["n"]))
        if value is not None:
            best = _better(best, _score(work, m.start("n"), m.end("n"), False), m.start("n"),
                           (value, None))
    return best[2] if best else None


def _better(best: tuple[int, int, tuple[Decimal, str | None]] | None, score: int, pos: int,
            found: tuple[Decimal, str | None]) -> tuple[int, int, tuple[Decimal, str | None]]:
    """Highest score wins; on a tie, the one written first."""
    if best is None or score > best[0] or (score == best[0] and pos < best[1]):
        return (score, pos, found)
    return best


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

# Matched against lower-cased text: several times faster than re.IGNORECASE.
_REASON_RX = [(cat, strength, re.compile(rx)) for cat, strength, rx in REASON_RULES]


CLASSIFY_LIMIT = 20_000


def classify_reason(text: str) -> str:
    """The policy's reason category for a customer's words; `other` when nothing is clear.

    Only the first 20,000 characters count: people state their problem up front,
    and the pattern table is too costly to run over megabytes of pasted logs.
    """
    text = (text or "")[:CLASSIFY_LIMIT].lower()
    best: tuple[int, int, str] | None = None  # (-strength, position, category)
    for category, strength, rx in _REASON_RX:
        m = rx.search(text)
        if m and (best is None or (-strength, m.start()) < best[:2]):
            best = (-strength, m.start(), category)
    return best[2] if best else "other"


# --------------------------------------------------------------------------- secrets

REDACTED = "[redacted]"

_IBAN_CANDIDATE = re.compile(
    r"(?i)\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"
)
_DIGIT_RUN = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,}(?!\d)")
_CREDENTIALS = [
    # password: xyz / pwd=xyz / my password is xyz
    re.compile(r"(?i)(\b(?:password|passwort|passwd|pwd|kennwort|mot de passe|contrase[ñn]a|"
               r"passcode|passphrase)\b\s*(?:[:=]|\bis\b|\bwas\b|\bist\b|\best\b|\bes\b)\s*)"
               r"(\S+)"),
    # CVV 123 / PIN: 1234 / security code 123
    re.compile(r"(?i)(\b(?:cvv2?|cvc2?|cid|pin|security code|card code|otp|tan)\b\s*"
               r"(?:[:=#]|\bis\b|\bcode\b)?\s*)(\d{3,8})\b"),
]


_LUHN_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_valid(digits: str) -> bool:
    """The card-number checksum: it is what tells a card number from an order or phone number."""
    values = [ord(ch) - 48 for ch in reversed(digits)]
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
    parts = re.split(r"([ -])", m.group(0))  # digits, sep, digits, sep, ...
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
    text = _IBAN_CANDIDATE.sub(_mask_iban, text)
    text = _DIGIT_RUN.sub(_mask_card_run, text)
    for rx in _CREDENTIALS:
        text = rx.sub(lambda m: m.group(1) + REDACTED, text)
    return text


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
