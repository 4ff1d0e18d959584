"""Which order lines, and how many, a customer's words ask for."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bots.decide.line_items import ItemAsk, items_asked
from bots.models import LineItem

D = Decimal
ORDER = (
    LineItem("AP-1001", "Waterproof jacket", "apparel", D("89.95"), 1),
    LineItem("AP-1002", "Merino wool sweater", "apparel", D("64.00"), 1),
    LineItem("HO-3004", "Scented candle", "home", D("18.50"), 3),
    LineItem("MUG-1", "Blue mug", "home", D("9.00"), 2),
    LineItem("MUG-2", "Red mug", "home", D("9.00"), 2),
    LineItem("GC-5025", "Gift card 25", "gift-cards", D("25.00"), 1),
    LineItem("AP-1007", "Rain boots", "apparel", D("54.00"), 1),
    LineItem("AP-1005", "Cotton T-shirt (3-pack)", "apparel", D("24.99"), 2),
)


def asked(*texts: str) -> dict[str, int | None]:
    return {a.sku: a.quantity for a in items_asked(texts, ORDER)}


@pytest.mark.parametrize(("text", "expected"), [
    # one line by its head noun, singular or plural, any case
    ("The jacket arrived damaged, the zip is broken.", {"AP-1001": None}),
    ("Both JACKETS are torn", {"AP-1001": None}),
    ("the boot on the left leaks", {"AP-1007": None}),
    ("My rain boots leak", {"AP-1007": None}),
    ("t-shirts shrank", {"AP-1005": None}),
    ("the sweater is fine but the jacket is torn", {"AP-1001": None, "AP-1002": None}),
    # by SKU
    ("AP-1002 wrong size", {"AP-1002": None}),
    # counts: digits, words, "N of the M", "Nx", adjectives between
    ("Two of the three candles arrived cracked", {"HO-3004": 2}),
    ("2x candle broken", {"HO-3004": 2}),
    ("2 scented candles broken", {"HO-3004": 2}),
    ("one of my red mugs is chipped", {"MUG-2": 1}),
    ("1 t-shirt has a hole", {"AP-1005": 1}),
    # a qualifying word picks one of the lines that share a head noun
    ("the blue mug is chipped", {"MUG-1": None}),
    ("the mugs are chipped", {"MUG-1": None, "MUG-2": None}),
    # what was bought is not what is asked back; more than bought is not a count
    ("I ordered 3 candles and 2 arrived broken", {"HO-3004": None}),
    ("I want 5 candles refunded", {"HO-3004": None}),
    # generic words name nothing alone; with a qualifier they do
    ("please refund to my card", {}),
    ("the gift card code did not work", {"GC-5025": None}),
    # nothing named, or the whole order: every line (no narrowing)
    ("Please refund me.", {}),
    ("Wrong size, please refund the whole order. The jacket is too big.", {}),
    ("everything arrived broken, the candles too", {}),
    ("Size 42 sneakers", {}),  # not in this order
])
def test_items_asked(text: str, expected: dict[str, int | None]) -> None:
    assert asked(text) == expected


def test_a_count_for_words_several_lines_share_is_unsure() -> None:
    asks = items_asked(["2 mugs are chipped"], ORDER)
    assert {a.sku for a in asks} == {"MUG-1", "MUG-2"} and all(a.unsure for a in asks)
    assert not any(a.unsure for a in items_asked(["2 blue mugs are chipped"], ORDER))


def test_contacts_are_merged_a_count_beats_a_bare_mention() -> None:
    assert asked("the candles are cracked", "Two of the candles cracked") == {"HO-3004": 2}
    assert asked("Two candles cracked", "the candles!") == {"HO-3004": 2}
    assert asked("the jacket", "and the sweater") == {"AP-1001": None, "AP-1002": None}
    assert asked("the jacket", "actually, the entire order") == {}


def test_lines_come_back_in_order_line_order_with_the_words_that_named_them() -> None:
    asks = items_asked(["the boots, and also the jacket"], ORDER)
    assert asks == (ItemAsk("AP-1001", None, "jacket"), ItemAsk("AP-1007", None, "boots"))


def test_hostile_text_and_names_never_break_it() -> None:
    from fuzz import fuzz_texts

    odd = (*ORDER, LineItem("X(1)+", "(((", "home", D("1.00"), 1),
           LineItem("Y.*", "", "home", D("1.00"), 1),
           LineItem("Z-9", "Ñandú Überjacke 3000", "home", D("1.00"), 999))
    texts = [*fuzz_texts(300, seed=21), "jacket " * 2000, "2 " * 3000 + "candles",
             "x(1)+ and y.* and z-9 and überjacke", "\x00jacket\ud800"]
    for text in texts:
        asks = items_asked([text], odd)
        assert {a.sku for a in asks} <= {i.sku for i in odd}
        assert all(a.quantity is None or 0 < a.quantity <= 999 for a in asks)
    assert {a.sku for a in items_asked(["x(1)+ and y.* and überjacke"], odd)} == {
        "X(1)+", "Y.*", "Z-9"}
