"""Properties of money, checked by Hypothesis on inputs nobody would think to write down.

- a decided amount is never negative and never above what remains refundable on the
  charge; a paid one never above the auto-approve limit nor above what the customer asked;
- a human approval pays at most what the human approved and what remains, never less
  than zero;
- an amount read from customer text is never zero or negative;
- masking never leaves a Luhn-valid card-number run of 13-19 digits (contiguous, or in
  groups of three or more digits separated by a space or a dash, as cards are written);
- reconciliation pairs each portal refund with at most one ledger entry and gives the
  same rows whatever order either side was listed in; a one-cent difference is never
  matched.
"""

from __future__ import annotations

import random
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bots.decide.line_items import ItemAsk
from bots.decide.policy import Claim, Policy, decide
from bots.intake.extract import find_amount, luhn_valid, mask_secrets
from bots.models import CENT, ChargeFacts, LineItem, OrderFacts, Outcome, PortalRefund, money
from bots.reports.reconcile import LedgerEntry, ReconStatus, reconcile

D = Decimal
TODAY = date(2026, 11, 29)
# How many examples is the profile's (tests/conftest.py: "default" 200, "mutation" 30).
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

cents = st.integers(min_value=1, max_value=300_000).map(lambda c: D(c) / 100)
any_cents = st.integers(min_value=-10_000, max_value=300_000).map(lambda c: D(c) / 100)


# -- the policy --------------------------------------------------------------------------------


@st.composite
def cases(draw: st.DrawFn) -> tuple[Policy, Claim, OrderFacts, ChargeFacts, Decimal]:
    n = draw(st.integers(1, 4))
    items = tuple(
        LineItem(f"SKU-{i}", f"Thing {i}", draw(st.sampled_from(["home", "electronics",
                                                                  "gift-cards"])),
                 draw(cents), draw(st.integers(1, 4)), draw(st.booleans()))
        for i in range(n))
    shipping = draw(st.sampled_from([D("0.00"), D("4.90"), D("19.99")]))
    delivered = draw(st.one_of(st.none(), st.integers(0, 60)))
    total = money(sum((i.total for i in items), D("0")) + shipping)
    order = OrderFacts(
        "ORD-1", "Ada", "ada@example.com", "", TODAY - timedelta(days=(delivered or 0) + 3),
        TODAY - timedelta(days=delivered) if delivered is not None else None,
        draw(st.sampled_from(["delivered", "shipped", "delivered", "cancelled"])), items,
        shipping, "EUR", "**** 4242", total)
    refunded = draw(st.integers(0, int(total * 100))) / D(100)
    charge = ChargeFacts("TX-1", "ORD-1", total, "EUR", money(refunded))
    asks = tuple(ItemAsk(i.sku, draw(st.one_of(st.none(), st.integers(1, 5))), i.name,
                         draw(st.booleans()))
                 for i in items if draw(st.booleans()))
    claim = Claim(tuple(draw(st.lists(any_cents, max_size=3))),
                  draw(st.sampled_from([None, "EUR"])),
                  draw(st.sampled_from(["damaged", "changed_mind", "other", "not_received"])),
                  asks)
    policy = Policy(
        auto_approve_limit=draw(cents), restocking_fee_percent=D(draw(st.integers(0, 100))),
        customer_auto_approve_limit=draw(st.one_of(st.none(), cents)),
        category_window_days={"electronics": 14}, final_sale_categories=["gift-cards"],
        refund_by_line_item=draw(st.booleans()),
        refund_shipping_on_partial_return=draw(st.booleans()))
    already = draw(st.integers(0, 200_000)) / D(100)
    return policy, claim, order, charge, already


@PROPERTY
@given(cases())
def test_a_decided_amount_is_never_negative_nor_above_what_remains(
        case: tuple[Policy, Claim, OrderFacts, ChargeFacts, Decimal]) -> None:
    policy, claim, order, charge, already = case
    d = decide(policy, claim, order, charge, TODAY, already)
    assert d.amount >= 0
    assert d.amount <= max(charge.remaining, D("0.00"))
    assert d.amount == money(d.amount)  # whole cents
    if d.outcome is Outcome.REJECT:
        assert d.amount == 0
    if d.pays:
        assert d.amount <= policy.auto_approve_limit
        if policy.customer_auto_approve_limit is not None:
            assert already + d.amount <= policy.customer_auto_approve_limit
        if claim.amounts:
            assert d.amount <= claim.amounts[0]


@PROPERTY
@given(approved=st.one_of(st.none(), any_cents), total=cents, refunded_part=st.floats(0, 1),
       partial=st.booleans())
def test_a_human_approval_pays_at_most_what_was_approved_and_remains(
        approved: Decimal | None, total: Decimal, refunded_part: float, partial: bool) -> None:
    from bots.work.processing import Processor

    refunded = money(total * D(str(refunded_part)))
    charge = ChargeFacts("TX-1", "ORD-1", total, "EUR", refunded)
    order = OrderFacts("ORD-1", "Ada", "a@example.com", "", TODAY, TODAY, "delivered", (),
                       D("0.00"), "EUR", "", total)
    case = SimpleNamespace(human_agent="ana", human_comment="", approved_amount=approved,
                           human_decision="partial" if partial else "approve")
    d = Processor._human(None, case, order, charge)  # type: ignore[arg-type]
    assert d.amount >= 0
    if d.pays:
        assert approved is not None
        assert d.amount <= approved and d.amount <= charge.remaining
        assert d.amount == min(approved, charge.remaining)
    else:
        assert d.amount == 0
        assert approved is None or min(approved, charge.remaining) <= 0


# -- amounts read from text ----------------------------------------------------------------------


@PROPERTY
@given(st.text(alphabet=st.sampled_from(list("0123456789-−.,' €$EURrefund amount:")),
               max_size=40))
def test_an_amount_read_from_text_is_never_zero_or_negative(text: str) -> None:
    found = find_amount(text)
    if found is not None:
        assert found[0] > 0 and found[0] == money(found[0])


# -- masking -------------------------------------------------------------------------------------


def _luhn_complete(body: str) -> str:
    """`body` plus the check digit that makes it Luhn-valid."""
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    length = draw(st.integers(13, 19))
    body = draw(st.text(alphabet="0123456789", min_size=length - 1, max_size=length - 1))
    number = _luhn_complete(draw(st.sampled_from("3456")) + body[1:])
    sep = draw(st.sampled_from(["", " ", "-"]))
    if not sep:
        return number
    groups = draw(st.sampled_from([[4, 4, 4, 4, 3], [4, 6, 5], [4, 4, 4, 4], [3, 3, 3, 4],
                                   [5, 5, 5, 4]]))
    parts, at = [], 0
    for size in groups:
        if at >= len(number):
            break
        parts.append(number[at:at + size])
        at += size
    if at < len(number):
        parts[-1] += number[at:]
    if len(parts[-1]) < 3:  # written in groups of three or more digits
        parts[-2:] = [parts[-2] + parts[-1]]
    return sep.join(parts)


_CARD_SHAPED = re.compile(r"(?<!\d)\d{3,}(?:[ -]\d{3,})*(?!\d)")


def card_runs_left(text: str) -> list[str]:
    """Luhn-valid 13-19 digit runs: contiguous, or consecutive 3+ digit groups in a run."""
    found = []
    for m in _CARD_SHAPED.finditer(text):
        groups = re.split(r"[ -]", m.group(0))
        for i in range(len(groups)):
            digits = ""
            for group in groups[i:]:
                digits += group
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and luhn_valid(digits):
                    found.append(digits)
    return found


filler = st.lists(st.sampled_from([*"abc XYZ:/#.,\n", "card ", "nr ", "ORD-", "12", "7"]),
                  max_size=6).map("".join)


@PROPERTY
@given(st.lists(st.tuples(filler, card_numbers()), min_size=1, max_size=4), filler)
def test_masking_leaves_no_card_number(parts: list[tuple[str, str]], tail: str) -> None:
    text = "".join(f"{before} {card} " for before, card in parts) + tail
    masked = mask_secrets(text)
    assert card_runs_left(masked) == [], (text, masked)


@PROPERTY
@given(st.text(alphabet=st.sampled_from(list("0123456789 -x")), max_size=60))
def test_masking_digit_soup_leaves_no_card_shaped_run(text: str) -> None:
    assert card_runs_left(mask_secrets(text)) == []


def test_masking_two_cards_two_spaces_apart() -> None:
    # a window took the head of the second card and left its tail readable: masked again
    masked = mask_secrets(" 3000000000007  4226 0000 00007 ")
    assert card_runs_left(masked) == [], masked


def test_masking_a_card_followed_by_digit_groups() -> None:
    masked = mask_secrets("card 4111 1111 1111 1111 000 000 004")
    assert card_runs_left(masked) == [], masked


# -- reconciliation -----------------------------------------------------------------------------


refs = st.sampled_from(["C000001-aa", "C000002-bb", "C000003-cc", "", "note C000001-aa"])
numbers = st.sampled_from([None, "RF-1", "RF-2", "RF-3"])
amounts = st.sampled_from([D("10.00"), D("10.01"), D("9.99"), D("25.50")])


@st.composite
def ledgers(draw: st.DrawFn) -> list[LedgerEntry]:
    return [LedgerEntry(draw(st.sampled_from(["C-000001", "C-000002", "C-000003"])),
                        draw(st.sampled_from(["ORD-1", "ORD-2"])), draw(refs), draw(amounts),
                        draw(st.sampled_from(["confirmed", "pending", "absent"])),
                        draw(numbers))
            for _ in range(draw(st.integers(0, 6)))]


@st.composite
def portals(draw: st.DrawFn) -> list[PortalRefund]:
    """A portal listing: refund ids are unique, but a paginated listing may repeat a row."""
    ids = draw(st.lists(st.sampled_from(["RF-1", "RF-2", "RF-3", "RF-4"]), unique=True))
    listing = [PortalRefund(i, draw(amounts), "damaged", draw(refs), "bot",
                            datetime(2026, 11, 28, tzinfo=UTC),
                            draw(st.sampled_from(["ORD-1", "ORD-2", ""])), "EUR") for i in ids]
    return listing + draw(st.lists(st.sampled_from(listing), max_size=2)) if listing else []


@PROPERTY
@given(ledgers(), portals(), st.randoms(use_true_random=False))
def test_reconciliation_pairs_each_portal_refund_once_whatever_the_order(
        ledger: list[LedgerEntry], portal: list[PortalRefund], rnd: random.Random) -> None:
    rows = reconcile(ledger, portal)
    shuffled_ledger, shuffled_portal = ledger[:], portal[:]
    rnd.shuffle(shuffled_ledger)
    rnd.shuffle(shuffled_portal)
    assert reconcile(shuffled_ledger, shuffled_portal) == rows
    # every portal refund is in exactly one row: paired with one ledger entry, or alone
    shown = sorted(r.portal_refund_id for r in rows if r.portal_refund_id is not None)
    assert shown == sorted({p.refund_id for p in portal})
    # every ledger entry is in at most one row, besides the rows of refunds that pay its
    # case a second time (those name the entry they duplicate)
    assert len([r for r in rows if r.ledger_amount is not None
                and r.status is not ReconStatus.DUPLICATE]) <= len(ledger)
    for row in rows:
        if row.status is ReconStatus.MATCHED:
            assert row.ledger_amount == row.portal_amount
            assert row.ledger_refund_number == row.portal_refund_id


@PROPERTY
@given(amount=cents, delta=st.sampled_from([CENT, -CENT]), by_number=st.booleans())
def test_a_one_cent_difference_is_never_matched(amount: Decimal, delta: Decimal,
                                                by_number: bool) -> None:
    assume(amount + delta > 0)
    entry = LedgerEntry("C-000001", "ORD-1", "C000001-aa", amount, "confirmed", "RF-1")
    refund = PortalRefund("RF-1", amount + delta, "damaged",
                          "C000001-aa" if by_number else "x", "bot",
                          datetime(2026, 11, 28, tzinfo=UTC), "ORD-1", "EUR")
    [row] = reconcile([entry], [refund])
    assert row.status is ReconStatus.AMOUNT_MISMATCH
    assert f"difference {delta:+}" in row.note
    [same] = reconcile([entry], [PortalRefund(refund.refund_id, amount, refund.reason,
                                              refund.reference, refund.operator,
                                              refund.created_at, "ORD-1", "EUR")])
    assert same.status is ReconStatus.MATCHED
