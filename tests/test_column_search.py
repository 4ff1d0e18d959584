"""Column searches (RE2 through Arrow) must answer exactly as Python's `re` does."""

from __future__ import annotations

import random
import re

import pytest
from fuzz import fuzz_texts

from bots.intake import extract
from bots.intake.column_search import Reach, TextColumn, column_pattern, without_boundaries


@pytest.mark.parametrize(("pattern", "reach"), [
    (r"never (?:arrived|came)|lost parcel", Reach.ANY),
    (r"besch[äa]digt|a.b|x{2,5}|[^a-z]q", Reach.ANY),
    (r"\bdoa\b", Reach.ASCII),  # RE2's \b is ASCII-only
    (r"\d{6}", Reach.ASCII),
    (r"[\w-]+", Reach.ASCII),
    (r"(?i)refund", Reach.ASCII),  # Python folds 'ſ' and the Kelvin sign, RE2 differently
    (r"a(?i:b)", Reach.ASCII),
    (r"a\s+b", Reach.NONE),  # Python's \s also takes \v and \x1c-\x1f
    (r"end$", Reach.NONE),  # Python's $ also matches before a final newline
    (r"(?<!\d)\d", Reach.NONE),  # RE2 has no lookbehind
    (r"(a)\1", Reach.NONE),
    (r"(?m)^a", Reach.NONE),
    (r"\u00e9t\u00e9", Reach.NONE),  # RE2 cannot read the escape: Python does the work
    (r"^refund", Reach.ANY),
])
def test_reach_is_read_from_the_pattern(pattern: str, reach: Reach) -> None:
    assert column_pattern(pattern).reach is reach


@pytest.mark.parametrize(("source", "expected"), [
    (r"\bdoa\b", "doa"),
    (r"\Bx", "x"),
    (r"[\b]x\b", r"[\b]x"),  # inside a class \b is a backspace
    (r"[]\b]y", r"[]\b]y"),
    (r"[^]\b]\bq", r"[^]\b]q"),
    (r"\\b", r"\\b"),  # an escaped backslash, then the letter b
])
def test_without_boundaries(source: str, expected: str) -> None:
    assert without_boundaries(source) == expected


TEXTS = [
    "the lamp is broken", "BROKEN", "never arrived, order ORD-123456", "", "x",
    "éany more", "né doa", "aDOA", "doa", "ÉTÉ doa.", "ﬁdoa", "l'article est endommagé",
    "\ud800 broken \udfff", "١٢٣٤٥٦ order", "１２３４５６", "end\n", "a\u000bb", "a b", "ab",
    "İstanbul refund", "ſtopped", "\u212a", "beſchädigt", "beschadigt", "kaputt\x00damaged",
    "x" * 5000 + " broken",
]
PATTERNS = [
    r"broken|damaged", r"\bdoa\b", r"\d{6}", r"(?i)refund", r"besch[äa]digt", r"a\s+b",
    r"end$", r"(?<!\d)\d{6}", r"never (?:arrived|came)", r"[^\x00-\x7f]", r"\w+", r"^x",
    r"(?i:\bstopped\b)|k",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_first_match_is_pythons(pattern: str) -> None:
    texts = TEXTS + fuzz_texts(400, seed=3)
    rx = re.compile(pattern)
    expected = [m.start() if (m := rx.search(t)) else -1 for t in texts]
    assert TextColumn(texts).first_match(column_pattern(pattern)).tolist() == expected


@pytest.mark.parametrize("pattern", PATTERNS)
def test_may_match_never_misses(pattern: str) -> None:
    texts = TEXTS + fuzz_texts(400, seed=4)
    rx = re.compile(pattern)
    maybe = TextColumn(texts).may_match(column_pattern(pattern)).tolist()
    for text, hit in zip(texts, maybe, strict=True):
        if rx.search(text):
            assert hit, text
        if text.isascii() and column_pattern(pattern).reach >= Reach.ASCII:
            assert hit == bool(rx.search(text)), text  # exact where RE2 answers


def _mixed_texts(n: int, seed: int) -> list[str]:
    """Fuzzed messages, with the case changes and scripts real inboxes hold."""
    rng = random.Random(seed)
    texts = fuzz_texts(n, seed) + TEXTS
    return [t.title() if rng.random() < 0.1 else t for t in texts]


def test_classify_reasons_is_classify_reason() -> None:
    texts = _mixed_texts(4000, seed=11)
    assert extract.classify_reasons(texts) == [extract.classify_reason(t) for t in texts]
    few = texts[:5]  # below the column size it is done one by one: the same answers
    assert extract.classify_reasons(few) == [extract.classify_reason(t) for t in few]


def test_mask_secrets_many_is_mask_secrets() -> None:
    texts = _mixed_texts(4000, seed=12) + [
        "card 4111 1111 1111 1111 please", "IBAN DE89370400440532013000", "my pwd=abc",
        "PASSWORT: geheim", "cvv 123", "CardNumber4111111111111111", "٤١١١١١١١١١١١١١١١"]
    assert extract.mask_secrets_many(texts) == [extract.mask_secrets(t) for t in texts]


def test_amounts_possible_never_rules_out_an_amount() -> None:
    import random as _random

    from bench_texts import bench_texts

    texts = _mixed_texts(4000, seed=13) + bench_texts(3000) + [
        "refund 25.50 please", "Refund: 40.", "I want EUR 12 back", "12,- EUR", "USD\x0b7",
        "amount of\t\t99", "paid $5", "5kr", "refund me 3 days ago", "order ORD-123456 refund"]
    _random.Random(3).shuffle(texts)
    possible = extract.amounts_possible(texts)
    for text, maybe in zip(texts, possible, strict=True):
        if not maybe:
            assert extract.find_amount(text) is None, text
    assert possible.count(False) > len(texts) // 5  # and it does rule many out
