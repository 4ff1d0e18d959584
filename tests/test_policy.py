from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from paths import CONFIG

from bots.decide.policy import Claim, Policy, PolicyError, claim_from, decide, load_policy
from bots.models import ChargeFacts, LineItem, OrderFacts, Outcome

TODAY = date(2026, 11, 29)
D = Decimal


def order(*items: LineItem, delivered_days_ago: int | None = 5, status: str = "delivered",
          shipping: str = "4.90") -> OrderFacts:
    total = sum((i.total for i in items), D("0")) + D(shipping)
    return OrderFacts(
        order_number="ORD-100001", customer_name="Ada", email="ada@example.com", phone="",
        order_date=TODAY - timedelta(days=(delivered_days_ago or 0) + 3),
        delivery_date=TODAY - timedelta(days=delivered_days_ago)
        if delivered_days_ago is not None else None,
        status=status, items=items, shipping_fee=D(shipping), currency="EUR",
        payment_card="VISA **** 4242", total=total,
    )


def item(price: str, qty: int = 1, *, category: str = "apparel", final: bool = False,
         sku: str = "SKU-1") -> LineItem:
    return LineItem(sku, "Thing", category, D(price), qty, final)


def charge(o: OrderFacts, refunded: str = "0.00", currency: str = "EUR") -> ChargeFacts:
    return ChargeFacts("TX-1", o.order_number, o.total, currency, D(refunded))


def claim(*amounts: str, reason: str = "changed_mind", currency: str | None = None) -> Claim:
    return Claim(tuple(D(a) for a in amounts), currency, reason)


POLICY = Policy(final_sale_categories=["gift-cards"], category_window_days={"electronics": 14})


def test_eligible_order_is_refunded_without_shipping_for_changed_mind() -> None:
    o = order(item("40.00"), item("10.00", 2, sku="SKU-2"))
    d = decide(POLICY, claim(), o, charge(o), TODAY)
    assert d.outcome is Outcome.REFUND and d.amount == D("60.00")


def test_shipping_refunded_when_damaged() -> None:
    o = order(item("40.00"))
    d = decide(POLICY, claim(reason="damaged"), o, charge(o), TODAY)
    assert d.amount == D("44.90") and any("Shipping fee" in r for r in d.reasons)


def test_outside_window_rejected_with_reason() -> None:
    o = order(item("40.00"), delivered_days_ago=45)
    d = decide(POLICY, claim(), o, charge(o), TODAY)
    assert d.outcome is Outcome.REJECT and "outside the 30-day refund window" in d.reasons[0]


def test_category_window_overrides_default() -> None:
    o = order(item("40.00", category="electronics"), item("20.00", sku="SKU-2"),
              delivered_days_ago=20)
    d = decide(POLICY, claim(), o, charge(o), TODAY)
    assert d.outcome is Outcome.PARTIAL and d.amount == D("20.00")


def test_final_sale_item_excluded_partial() -> None:
    o = order(item("30.00", final=True), item("20.00", sku="SKU-2"))
    d = decide(POLICY, claim(), o, charge(o), TODAY)
    assert d.outcome is Outcome.PARTIAL and d.amount == D("20.00")
    assert any("final sale" in r for r in d.reasons)


def test_final_sale_category_from_policy() -> None:
    o = order(item("30.00", category="gift-cards"))
    d = decide(POLICY, claim(), o, charge(o), TODAY)
    assert d.outcome is Outcome.REJECT


def test_requested_amount_above_paid_is_capped() -> None:
    o = order(item("40.00"))
    d = decide(POLICY, claim("400.00"), o, charge(o), TODAY)
    assert d.amount == D("40.00") and any("capped" in r for r in d.reasons)


def test_requested_less_is_partial() -> None:
    o = order(item("40.00"))
    d = decide(POLICY, claim("15.00"), o, charge(o), TODAY)
    assert d.outcome is Outcome.PARTIAL and d.amount == D("15.00")


def test_never_more_than_remaining_on_charge() -> None:
    o = order(item("40.00"))
    d = decide(POLICY, claim(), o, charge(o, refunded="30.00"), TODAY)
    assert d.amount == D("14.90") and any("remains refundable" in r for r in d.reasons)


def test_fully_refunded_charge_rejected() -> None:
    o = order(item("40.00"))
    d = decide(POLICY, claim(), o, charge(o, refunded=str(o.total)), TODAY)
    assert d.outcome is Outcome.REJECT and "already refunded" in d.reasons[0]


def test_currency_mismatch_escalates_never_rejects_or_pays() -> None:
    """"$20" may be a misread of CAD: neither a rejection nor a payment in EUR (issue #12)."""
    o = order(item("40.00"))
    d = decide(POLICY, claim(currency="USD"), o, charge(o), TODAY)
    assert d.outcome is Outcome.ESCALATE and not d.pays and "USD" in d.reasons[0]


def test_above_auto_approve_limit_escalates() -> None:
    o = order(item("900.00"))
    d = decide(POLICY, claim(), o, charge(o), TODAY)
    assert d.outcome is Outcome.ESCALATE and d.amount == D("900.00")


def test_contacts_disagreeing_on_amount_escalate() -> None:
    o = order(item("40.00"))
    d = decide(POLICY, claim("10.00", "20.00"), o, charge(o), TODAY)
    assert d.outcome is Outcome.ESCALATE


def test_not_delivered_uses_transit_buffer() -> None:
    o = order(item("40.00"), delivered_days_ago=None, status="shipped")
    d = decide(POLICY, claim(), o, charge(o), TODAY)
    assert d.outcome is Outcome.REFUND and any("No delivery date" in r for r in d.reasons)


def test_cancelled_order_rejected() -> None:
    o = order(item("40.00"), status="cancelled")
    assert decide(POLICY, claim(), o, charge(o), TODAY).outcome is Outcome.REJECT


def test_claim_from_merges_contacts() -> None:
    c = claim_from([None, D("5.00")], [None, "EUR"], ["other", "damaged"])
    assert c == Claim((D("5.00"),), "EUR", "damaged")


def test_policy_file_shipped_is_valid() -> None:
    assert load_policy(CONFIG / "policy.yaml").refund_window_days == 30


def test_invalid_policy_says_where(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("refund_window_days: -3\nunknown_rule: 1\n")
    with pytest.raises(PolicyError) as err:
        load_policy(bad)
    assert "refund_window_days" in str(err.value) and "unknown_rule" in str(err.value)


def test_snapshot_round_trip() -> None:
    from bots.decide import snapshot

    o = order(item("30.00", final=True), item("20.00", sku="SKU-2"))
    c = charge(o, refunded="5.00")
    cl = claim("12.00", reason="damaged")
    d = decide(POLICY, cl, o, c, TODAY)
    assert snapshot.load(snapshot.dump(o, c, cl, d, TODAY)) == (o, c, cl, d, TODAY)


def test_restocking_fee_kept_unless_waived() -> None:
    pol = Policy(restocking_fee_percent=Decimal("10"))
    o = order(item("40.00"))
    d = decide(pol, claim(), o, charge(o), TODAY)
    assert d.outcome is Outcome.PARTIAL and d.amount == D("36.00")
    assert any("Restocking fee" in r for r in d.reasons)
    assert decide(pol, claim(reason="damaged"), o, charge(o), TODAY).amount == D("44.90")


def test_per_customer_limit_escalates_only_above_it() -> None:
    pol = Policy(customer_auto_approve_limit=D("100.00"))
    o = order(item("40.00"))
    assert decide(pol, claim(), o, charge(o), TODAY, D("50.00")).outcome is Outcome.REFUND
    d = decide(pol, claim(), o, charge(o), TODAY, D("70.00"))
    assert d.outcome is Outcome.ESCALATE and "per-customer limit" in d.reasons[-1]


# -- partial refunds by line item and quantity ----------------------------------------------

def _line(sku: str, name: str, price: str, qty: int = 1, final: bool = False) -> LineItem:
    return LineItem(sku, name, "home", D(price), qty, final)


CANDLES = _line("HO-3004", "Scented candle", "18.50", 3)
JACKET = LineItem("AP-1001", "Waterproof jacket", "apparel", D("89.95"), 1)
SWEATER = LineItem("AP-1002", "Merino wool sweater", "apparel", D("64.00"), 1)


def _asking(o: OrderFacts, text: str, *amounts: str, reason: str = "damaged") -> Claim:
    from bots.decide.line_items import items_asked

    return Claim(tuple(D(a) for a in amounts), None, reason, items_asked([text], o.items))


def test_only_the_named_line_is_refunded_and_shipping_kept() -> None:
    o = order(JACKET, SWEATER)
    d = decide(POLICY, _asking(o, "The jacket arrived damaged"), o, charge(o), TODAY)
    assert d.outcome is Outcome.PARTIAL and d.amount == D("89.95")
    assert any("'jacket'" in r for r in d.reasons)
    assert any("Shipping fee 4.90 kept: only part of the order" in r for r in d.reasons)


def test_naming_every_line_is_a_full_refund_with_shipping() -> None:
    o = order(JACKET, SWEATER)
    d = decide(POLICY, _asking(o, "the jacket and the sweater are torn"), o, charge(o), TODAY)
    assert d.outcome is Outcome.REFUND and d.amount == D("158.85")


def test_quantity_asked_is_refunded_per_unit() -> None:
    o = order(CANDLES)
    d = decide(POLICY, _asking(o, "Two of the three candles arrived cracked"), o, charge(o),
               TODAY)
    assert d.outcome is Outcome.PARTIAL and d.amount == D("37.00")
    assert any("2 of 3 x HO-3004 (Scented candle) asked for: 2 x 18.50 = 37.00" in r
               for r in d.reasons)
    whole = decide(POLICY, _asking(o, "the candles arrived cracked"), o, charge(o), TODAY)
    assert whole.outcome is Outcome.REFUND and whole.amount == D("60.40")  # 55.50 + shipping


def test_named_final_sale_line_alone_is_rejected() -> None:
    o = order(JACKET, _line("HO-9", "Clearance lamp", "30.00", final=True))
    d = decide(POLICY, _asking(o, "the lamp is broken"), o, charge(o), TODAY)
    assert d.outcome is Outcome.REJECT and "final sale" in d.reasons[-1]


def test_line_items_can_be_switched_off_and_shipping_on_partial_allowed() -> None:
    o = order(JACKET, SWEATER)
    cl = _asking(o, "The jacket arrived damaged")
    assert decide(POLICY.model_copy(update={"refund_by_line_item": False}), cl, o, charge(o),
                  TODAY).amount == D("158.85")
    generous = POLICY.model_copy(update={"refund_shipping_on_partial_return": True})
    assert decide(generous, cl, o, charge(o), TODAY).amount == D("94.85")


def test_a_count_several_lines_match_escalates() -> None:
    o = order(_line("MUG-1", "Blue mug", "9.00", 2), _line("MUG-2", "Red mug", "9.00", 2))
    d = decide(POLICY, _asking(o, "2 mugs arrived chipped"), o, charge(o), TODAY)
    assert d.outcome is Outcome.ESCALATE and "a human decides which and how many" in \
        d.reasons[-1]
    precise = decide(POLICY, _asking(o, "2 blue mugs arrived chipped"), o, charge(o), TODAY)
    assert precise.outcome is Outcome.PARTIAL and precise.amount == D("18.00")


def test_snapshot_keeps_the_lines_asked_for() -> None:
    from bots.decide import snapshot

    o = order(CANDLES, JACKET)
    cl = _asking(o, "2 candles broken")
    d = decide(POLICY, cl, o, charge(o), TODAY)
    assert snapshot.load(snapshot.dump(o, charge(o), cl, d, TODAY))[2] == cl
