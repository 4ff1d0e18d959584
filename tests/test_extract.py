from __future__ import annotations

import time
from decimal import Decimal

import pytest

from bots.intake.extract import (
    REASON_CATEGORIES,
    REASON_RULES,
    REDACTED,
    classify_reason,
    clean_text,
    find_amount,
    find_order_numbers,
    html_to_text,
    luhn_valid,
    mask_secrets,
    normalise_email,
    parse_amount,
)

D = Decimal
VISA = "4111 1111 1111 1111"  # Luhn-valid test card
VISA_COMPACT = "4111111111111111"
NOT_LUHN = "4111 1111 1111 1112"


# --------------------------------------------------------------------------- order numbers


@pytest.mark.parametrize(("text", "expected"), [
    ("Refund for ORD-100023 please", ["ORD-100023"]),
    ("ord123456", ["ORD-123456"]),
    ("order #ORD-100023", ["ORD-100023"]),
    ("Order no. ORD 100023", ["ORD-100023"]),
    ("ORD_100023", ["ORD-100023"]),
    ("order no. 100023", ["ORD-100023"]),
    ("Bestellung Nr. 654321 und ord-654321", ["ORD-654321"]),
    ("commande n° 222333", ["ORD-222333"]),
    ("ORD-000002 then ORD-000001 then ORD-000002", ["ORD-000002", "ORD-000001"]),
    ("ORD-1234567 is too long, ORD-12345 too short", []),
    ("XORD-123456 glued to a word", []),
    ("order 1234567890 is not six digits", []),
    ("call 0301234567, card 4111111111111111", []),
    ("", []),
])
def test_find_order_numbers(text: str, expected: list[str]) -> None:
    assert find_order_numbers(text) == expected


def test_find_order_numbers_custom_pattern() -> None:
    assert find_order_numbers("see inv 42-77 and INV4277", [r"(?i)\bINV\s?\d{4}\b"]) == [
        "INV-4277"]


# --------------------------------------------------------------------------- amounts


@pytest.mark.parametrize(("text", "expected"), [
    ("1.234,50 €", (D("1234.50"), "EUR")),
    ("€12,50", (D("12.50"), "EUR")),
    ("$1,234.50", (D("1234.50"), "USD")),
    ("EUR 12.00", (D("12.00"), "EUR")),
    ("12.00 GBP", (D("12.00"), "GBP")),
    ("£9.99", (D("9.99"), "GBP")),
    ("1 234,50 EUR", (D("1234.50"), "EUR")),
    ("1\u00a0234,50\u00a0€", (D("1234.50"), "EUR")),
    ("12", (D("12.00"), None)),
    ("12.5", (D("12.50"), None)),
    ("0,99 €", (D("0.99"), "EUR")),
    ("12,- €", (D("12.00"), "EUR")),
    ("eur 7", (D("7.00"), "EUR")),
    ("CHF 1'234.50", (D("1234.50"), "CHF")),
    ("1,234,567.00", None),  # absurd: over 1,000,000
    ("1000000", (D("1000000.00"), None)),
    ("1000000.01", None),
    ("-12.00", None),
    ("€-5", None),
    ("12.00-", None),
    ("(12.00)", None),
    ("0", None),
    ("0.001", None),
    ("NaN", None),
    ("inf", None),
    ("Infinity EUR", None),
    ("1e5", None),
    ("twelve", None),
    ("12 EUR USD", None),
    ("1.2.3", None),
    ("", None),
    ("9" * 500, None),
])
def test_parse_amount(text: str, expected: tuple[Decimal, str | None] | None) -> None:
    assert parse_amount(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("please refund 49.90 EUR", (D("49.90"), "EUR")),
    ("I want my €25 back", (D("25.00"), "EUR")),
    ("Ich möchte 19,99 € zurück", (D("19.99"), "EUR")),
    ("I paid 59.90 € and want 20 € back", (D("20.00"), "EUR")),
    ("Total was 80 EUR. Please refund me 30 EUR.", (D("30.00"), "EUR")),
    ("amount: 12.40", (D("12.40"), None)),
    ("The order cost €100. Refund: 40.", (D("40.00"), None)),
    ("please refund 49.90 asap", (D("49.90"), None)),
    ("please refund 2 shirts", None),  # a count, not money
    ("refund 3 of the 5 items", None),
    ("ORD-123456 please refund", None),  # order numbers are not money
    ("order 654321, refund please", None),
    ("delivered on 12.03.2026 at 10:30, refund", None),  # dates and times
    ("refund 2026-03-12", None),
    ("call me on +49 30 1234567 about the refund", None),  # phone numbers
    ("call 030 123 4567 for the refund", None),
    (f"my card {VISA}, refund", None),  # card numbers
    ("card **** **** **** 1111 refund", None),
    ("refund within 14 days please", None),  # days, not money
    ("try 12 times", None),  # "try" is not Turkish lira
    ("please refund 2,000,000 EUR", None),  # absurd
    ("please refund -5 EUR", None),  # a minus sign is never dropped: see test_unsure.py
    ("no numbers at all", None),
])
def test_find_amount(text: str, expected: tuple[Decimal, str | None] | None) -> None:
    assert find_amount(text) == expected


# --------------------------------------------------------------------------- reasons


@pytest.mark.parametrize(("text", "expected"), [
    ("The jacket arrived damaged, the zip is broken.", "damaged"),
    ("The TV stopped working after two days.", "damaged"),
    ("Parcel never arrived, not received", "not_received"),
    ("Where is my order?", "not_received"),
    ("Wrong size, please refund the whole order.", "wrong_item"),
    ("I would like to return my order, I don't need it anymore.", "changed_mind"),
    ("Customer changed her mind, returned unused", "changed_mind"),
    ("It arrived too late for the party", "late"),
    ("I was charged twice for the same order", "duplicate_charge"),
    ("Where is my refund??", "other"),
    ("Customer wants money back (clearance items)", "other"),
    ("", "other"),
    # the strongest match wins, whatever comes first
    ("It came late and it was broken", "damaged"),
    ("Not needed anymore and also charged twice", "duplicate_charge"),
    # on a tie, the first written wins
    ("broken, and the wrong colour", "damaged"),
    ("wrong colour, and broken", "wrong_item"),
    # German / French / Spanish
    ("Das Paket ist beschädigt angekommen", "damaged"),
    ("Paket nie angekommen", "not_received"),
    ("Falsche Größe geliefert", "wrong_item"),
    ("Zweimal abgebucht!", "duplicate_charge"),
    ("Colis jamais reçu", "not_received"),
    ("J'ai changé d'avis", "changed_mind"),
    ("El producto llegó dañado", "damaged"),
    ("Cobrado dos veces", "duplicate_charge"),
])
def test_classify_reason(text: str, expected: str) -> None:
    assert classify_reason(text) == expected
    assert expected in REASON_CATEGORIES


def test_reason_table_is_lower_case_and_known() -> None:
    for category, strength, pattern in REASON_RULES:
        assert category in REASON_CATEGORIES and strength > 0
        assert pattern == pattern.lower(), category  # matched against lower-cased text


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(("text", "expected"), [
    (f"card {VISA} thanks", "card **** **** **** 1111 thanks"),
    (f"card {VISA_COMPACT}.", "card **** **** **** 1111."),
    ("card 4111-1111-1111-1111", "card **** **** **** 1111"),
    ("amex 378282246310005", "amex **** **** **** 0005"),
    (f"ORD-123456 {VISA}", "ORD-123456 **** **** **** 1111"),
    (f"{VISA} and 5500 0000 0000 0004", "**** **** **** 1111 and **** **** **** 0004"),
    ("IBAN DE89 3704 0044 0532 0130 00 please", "IBAN DE** **** **** 3000 please"),
    ("iban GB82WEST12345698765432.", "iban GB** **** **** 5432."),
    ("password: hunter2 ok", f"password: {REDACTED} ok"),
    ("pwd=xyz", f"pwd={REDACTED}"),
    ("my password is s3cret!", f"my password is {REDACTED}"),
    ("CVV 123", f"CVV {REDACTED}"),
    ("cvc: 9876", f"cvc: {REDACTED}"),
    ("PIN 4321", f"PIN {REDACTED}"),
    # NAME=secret as configuration and URLs write it (only the third pattern reads these)
    ("DB_PASSWORD=hunter2 ok", f"DB_PASSWORD={REDACTED} ok"),
    ("see ?api_key=abc123def", f"see ?api_key={REDACTED}"),
    ("DB_SECRET = hunter22", f"DB_SECRET = {REDACTED}"),
    # untouched: non-Luhn runs, order numbers, phones, invalid IBANs
    (f"ref {NOT_LUHN}", f"ref {NOT_LUHN}"),
    ("ORD-123456", "ORD-123456"),
    ("call +49 30 12345678", "call +49 30 12345678"),
    ("order 1234567890123", "order 1234567890123"),
    ("DE00 1234 5678 9012 3456 78", "DE00 1234 5678 9012 3456 78"),
    ("I forgot my password reset link", "I forgot my password reset link"),
    ("", ""),
])
def test_mask_secrets(text: str, expected: str) -> None:
    assert mask_secrets(text) == expected
    assert mask_secrets(mask_secrets(text)) == expected  # idempotent


def test_luhn() -> None:
    assert luhn_valid(VISA_COMPACT) and not luhn_valid(NOT_LUHN.replace(" ", ""))


def test_mask_secrets_on_hostile_digit_runs() -> None:
    assert mask_secrets("1 " * 50_000).count("1") >= 10_000


@pytest.mark.perf
def test_mask_secrets_is_linear_on_hostile_digit_runs() -> None:
    start = time.perf_counter()
    out = mask_secrets("1 " * 50_000)
    assert time.perf_counter() - start < 2 and out.count("1") >= 10_000


# --------------------------------------------------------------------------- emails


@pytest.mark.parametrize(("addr", "expected"), [
    ("ada@example.org", "ada@example.org"),
    ("  ADA@Example.ORG ", "ada@example.org"),
    ('"Lovelace, Ada" <Ada@Example.org>', "ada@example.org"),
    ("<ada@example.org>", "ada@example.org"),
    ("mailto:ada@example.org", "ada@example.org"),
    ("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk"),
    ("user@xn--80ak6aa92e.com", "user@xn--80ak6aa92e.com"),
    ("not an email", None),
    ("ada@", None),
    ("@example.org", None),
    ("ada@example", None),
    ("ada@@example.org", None),
    ("a..b@example.org", None),
    ("ada@exa mple.org", None),
    ("x" * 65 + "@example.org", None),
    ("=HYPERLINK(\"http://x\",\"click\")", None),
    ("", None),
    (None, None),
])
def test_normalise_email(addr: str | None, expected: str | None) -> None:
    assert normalise_email(addr) == expected


# --------------------------------------------------------------------------- text


@pytest.mark.parametrize(("text", "expected"), [
    ("a\x00b\x07c", "abc"),
    ("keep\ttabs\nand lines", "keep\ttabs\nand lines"),
    ("crlf\r\nline\rend", "crlf\nline\nend"),
    ("too   many    spaces", "too many spaces"),
    ("para\n\n\n\n\nnext", "para\n\nnext"),
    ("  trailing  \n  leading", "trailing\nleading"),
    ("nbsp\u00a0and\u2009thin", "nbsp and thin"),
    ("bidi \u202eevil\u202c zero\u200bwidth", "bidi evil zerowidth"),
    ("cafe\u0301", "café"),  # NFC
    ("=HYPERLINK(\"http://x\",\"click\")", "=HYPERLINK(\"http://x\",\"click\")"),
    ("lone \ud800 surrogate", "lone surrogate"),
    ("", ""),
])
def test_clean_text(text: str, expected: str) -> None:
    assert clean_text(text) == expected


def test_clean_text_truncates_with_ellipsis() -> None:
    assert clean_text("abcdefghij", limit=5) == "abcd…"
    assert clean_text("abcde", limit=5) == "abcde"


def test_clean_text_huge_input_is_bounded() -> None:
    out = clean_text("word \x00" * 2_000_000)
    assert len(out) == 5000 and out.endswith("…")


@pytest.mark.perf
def test_clean_text_huge_input_is_fast() -> None:
    start = time.perf_counter()
    clean_text("word \x00" * 2_000_000)
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize(("html", "expected"), [
    ("<p>Hello</p><p>World</p>", "Hello\n\nWorld"),
    ("a<br>b<br/>c", "a\nb\nc"),
    ("<script>alert('x')</script>visible<style>p{}</style>", "visible"),
    ("<head><title>T</title></head><body>body</body>", "body"),
    ("Fish &amp; chips &euro;5 &lt;b&gt; &#8364;", "Fish & chips €5 <b> €"),
    ("<ul><li>one</li><li>two</li></ul>", "one\ntwo"),
    ("<table><tr><td>a</td><td>b</td></tr></table>", "a b"),
    ("<p>multiple    spaces\nand newlines</p>", "multiple spaces and newlines"),
    ("<pre>keep\n  this</pre>", "keep\n  this"),
    ("<div>unclosed <b>tags", "unclosed tags"),
    ("<script>never closed", ""),
    ("", ""),
])
def test_html_to_text(html: str, expected: str) -> None:
    assert html_to_text(html) == expected
