"""Every threshold of the money rules at its limit, one unit inside and one unit outside.

A window is tested in days, a limit in cents, a count in ones, a score in points: the
off-by-one a reviewer would try (`>` for `>=`) must fail one of these. The processor's own
limits (retries, circuit breaker, in-flight grace, per-customer limit with pending
refunds) are at their edges in tests/test_processing.py; the queue's (lease expiry,
poison count) in tests/test_leases.py.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError
from test_policy import POLICY, TODAY, charge, claim, item, order
from test_signals import CONTACT, SETTINGS, ago, base, contact, fired

from bots.decide.line_items import ItemAsk
from bots.decide.policy import Claim, Policy, decide
from bots.decide.signals import (
    SignalSettings,
    assess,
    customer_window_start,
    store_window_start,
)
from bots.models import Outcome

D = Decimal
CENT = D("0.01")


# -- policy: windows, in days ----------------------------------------------------------------


@pytest.mark.parametrize(("days_ago", "refunded"), [(29, True), (30, True), (31, False)])
def test_the_refund_window_edge(days_ago: int, refunded: bool) -> None:
    o = order(item("40.00"), delivered_days_ago=days_ago)
    d = decide(POLICY, claim(), o, charge(o), TODAY)
    assert (d.outcome is Outcome.REFUND) is refunded
    if not refunded:
        assert d.outcome is Outcome.REJECT and "31 days ago" in " ".join(d.reasons)


@pytest.mark.parametrize(("days_ago", "refunded"), [(13, True), (14, True), (15, False)])
def test_a_category_window_edge(days_ago: int, refunded: bool) -> None:
    o = order(item("40.00", category="electronics"), delivered_days_ago=days_ago)
    assert (decide(POLICY, claim(), o, charge(o), TODAY).outcome is Outcome.REFUND) is refunded


@pytest.mark.parametrize(("ordered_days_ago", "refunded"), [(36, True), (37, True),
                                                             (38, False)])
def test_the_transit_buffer_edge(ordered_days_ago: int, refunded: bool) -> None:
    """No delivery date: delivered is assumed 7 days after the order, then 30 days count."""
    o = dataclasses.replace(order(item("40.00"), status="shipped"), delivery_date=None,
                            order_date=TODAY - timedelta(days=ordered_days_ago))
    d = decide(POLICY, claim(), o, charge(o), TODAY)
    assert (d.outcome is Outcome.REFUND) is refunded


def test_a_zero_day_window_refunds_on_the_delivery_day_only() -> None:
    pol = Policy(refund_window_days=0)
    today = order(item("40.00"), delivered_days_ago=0)
    yesterday = order(item("40.00"), delivered_days_ago=1)
    assert decide(pol, claim(), today, charge(today), TODAY).outcome is Outcome.REFUND
    assert decide(pol, claim(), yesterday, charge(yesterday), TODAY).outcome is Outcome.REJECT


# -- policy: limits, in cents ------------------------------------------------------------------


@pytest.mark.parametrize(("price", "outcome"), [("499.99", Outcome.REFUND),
                                                ("500.00", Outcome.REFUND),
                                                ("500.01", Outcome.ESCALATE)])
def test_the_auto_approve_limit_edge(price: str, outcome: Outcome) -> None:
    o = order(item(price), shipping="0.00")
    d = decide(POLICY, claim(), o, charge(o), TODAY)
    assert (d.outcome, d.amount) == (outcome, D(price))


@pytest.mark.parametrize(("already", "outcome"), [("59.99", Outcome.REFUND),
                                                  ("60.00", Outcome.REFUND),
                                                  ("60.01", Outcome.ESCALATE)])
def test_the_per_customer_limit_edge(already: str, outcome: Outcome) -> None:
    pol = Policy(customer_auto_approve_limit=D("100.00"))
    o = order(item("40.00"), shipping="0.00")
    d = decide(pol, claim(), o, charge(o), TODAY, D(already))
    assert d.outcome is outcome and d.amount == D("40.00")
    if outcome is Outcome.ESCALATE:
        assert d.reasons[-1].startswith(f"With {already} already refunded")


def test_without_a_per_customer_limit_history_does_not_matter() -> None:
    o = order(item("40.00"))
    assert decide(POLICY, claim(), o, charge(o), TODAY, D("1000000")).outcome is Outcome.REFUND


@pytest.mark.parametrize(("refunded", "outcome", "amount"), [
    ("40.00", Outcome.REJECT, "0.00"),  # nothing left
    ("39.99", Outcome.PARTIAL, "0.01"),  # one cent left: paid
    ("0.01", Outcome.PARTIAL, "39.99"),  # capped at what remains
    ("0.00", Outcome.REFUND, "40.00"),
])
def test_what_remains_on_the_charge_edge(refunded: str, outcome: Outcome, amount: str) -> None:
    o = order(item("40.00"), shipping="0.00")
    d = decide(POLICY, claim(), o, charge(o, refunded=refunded), TODAY)
    assert (d.outcome, d.amount) == (outcome, D(amount))
    capped = any("remains refundable" in r for r in d.reasons)
    assert capped is (outcome is Outcome.PARTIAL)


@pytest.mark.parametrize(("asked", "outcome", "amount", "note"), [
    ("39.99", Outcome.PARTIAL, "39.99", "less than the 40.00 eligible"),
    ("40.00", Outcome.REFUND, "40.00", None),
    ("40.01", Outcome.REFUND, "40.00", "capped at the 40.00 eligible"),
])
def test_the_amount_asked_edge(asked: str, outcome: Outcome, amount: str,
                               note: str | None) -> None:
    o = order(item("40.00"), shipping="0.00")
    d = decide(POLICY, claim(asked), o, charge(o), TODAY)
    assert (d.outcome, d.amount) == (outcome, D(amount))
    said = " ".join(d.reasons)
    assert (note in said) if note else ("Customer asked" not in said)


def test_two_contacts_asking_the_same_amount_are_one_claim() -> None:
    o = order(item("40.00"), shipping="0.00")
    same = decide(POLICY, claim("20.00", "20.00"), o, charge(o), TODAY)
    differ = decide(POLICY, claim("20.00", "20.01"), o, charge(o), TODAY)
    assert (same.outcome, same.amount) == (Outcome.PARTIAL, D("20.00"))
    assert differ.outcome is Outcome.ESCALATE and differ.amount == D("40.00")


@pytest.mark.parametrize(("percent", "amount"), [("0", "40.00"), ("10", "36.00"),
                                                 ("100", "0.00")])
def test_the_restocking_fee(percent: str, amount: str) -> None:
    pol = Policy(restocking_fee_percent=D(percent))
    o = order(item("40.00"), shipping="0.00")
    d = decide(pol, claim(), o, charge(o), TODAY)
    assert d.amount == D(amount) and d.amount >= 0
    if percent == "0":
        assert d.outcome is Outcome.REFUND and not any("Restocking" in r for r in d.reasons)
    else:
        assert not d.pays or d.outcome is Outcome.PARTIAL


@pytest.mark.parametrize(("field", "value"), [
    ("auto_approve_limit", "-0.01"), ("customer_auto_approve_limit", "-0.01"),
    ("customer_limit_days", 0), ("restocking_fee_percent", "100.01"),
    ("restocking_fee_percent", "-0.01"), ("refund_window_days", -1),
])
def test_policy_values_outside_their_range_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Policy.model_validate({field: value})


def test_policy_values_at_the_edge_of_their_range_load() -> None:
    pol = Policy.model_validate({"auto_approve_limit": "0", "customer_auto_approve_limit": "0",
                                 "customer_limit_days": 1, "restocking_fee_percent": "100",
                                 "refund_window_days": 0})
    assert pol.auto_approve_limit == 0 and pol.customer_limit_days == 1


# -- policy: counts of a line item -------------------------------------------------------------


@pytest.mark.parametrize(("count", "amount", "outcome"), [
    (1, "18.50", Outcome.PARTIAL), (2, "37.00", Outcome.PARTIAL),
    (3, "55.50", Outcome.REFUND), (4, "55.50", Outcome.REFUND),  # never more than bought
])
def test_the_count_asked_of_a_line(count: int, amount: str, outcome: Outcome) -> None:
    o = order(item("18.50", 3, sku="HO-3004"), shipping="0.00")
    c = Claim((), None, "damaged", (ItemAsk("HO-3004", count, f"{count} candles"),))
    d = decide(POLICY, c, o, charge(o), TODAY)
    assert (d.outcome, d.amount) == (outcome, D(amount))


# -- signals: windows ----------------------------------------------------------------------


@pytest.mark.parametrize(("older", "fires"), [(timedelta(0), True),
                                              (timedelta(seconds=1), False)])
def test_the_customer_velocity_window_edge(older: timedelta, fires: bool) -> None:
    at_start = customer_window_start(SETTINGS, base().now) - older
    ctx = base(customer_refunds=[(ago(1), D("5")), (at_start, D("5"))])
    assert ("customer_velocity" in fired(ctx)) is fires


def test_the_window_starts_are_the_settings_spans() -> None:
    now = base().now
    assert customer_window_start(SETTINGS, now) == now - timedelta(days=30)
    assert store_window_start(SETTINGS, now) == now - timedelta(hours=24)
    naive = now.replace(tzinfo=None)
    assert store_window_start(SETTINGS, naive) == now - timedelta(hours=24)


@pytest.mark.parametrize(("claimed_days_after_order", "fires"), [(0, True), (1, True),
                                                                  (2, False), (3, False)])
def test_the_early_claim_edge(claimed_days_after_order: int, fires: bool) -> None:
    o = dataclasses.replace(SETTINGS_ORDER, delivery_date=None, status="shipped")
    when = datetime.combine(o.order_date, CONTACT.received_at.timetz()) \
        + timedelta(days=claimed_days_after_order)
    ctx = base(order=o, contacts=contact(received_at=when))
    assert ("early_claim" in fired(ctx)) is fires


def test_an_early_claim_setting_of_zero_is_off() -> None:
    o = dataclasses.replace(SETTINGS_ORDER, delivery_date=None, status="shipped")
    when = datetime.combine(o.order_date, CONTACT.received_at.timetz())
    ctx = base(order=o, contacts=contact(received_at=when))
    assert "early_claim" not in fired(ctx, SETTINGS.model_copy(update={"early_claim_days": 0}))


def test_a_claim_the_day_before_delivery_is_early_on_the_day_it_is_not() -> None:
    delivered = SETTINGS_ORDER.delivery_date
    assert delivered is not None
    day = datetime.combine(delivered, CONTACT.received_at.timetz())
    assert "early_claim" in fired(base(contacts=contact(received_at=day - timedelta(days=1))))
    assert "early_claim" not in fired(base(contacts=contact(received_at=day)))


# -- signals: counts and ratios ----------------------------------------------------------------


@pytest.mark.parametrize(("earlier", "fires"), [(0, False), (1, False), (2, True)])
def test_the_customer_velocity_count_edge(earlier: int, fires: bool) -> None:
    ctx = base(customer_refunds=[(ago(1 + n), D("5")) for n in range(earlier)])
    assert ("customer_velocity" in fired(ctx)) is fires  # limit 2, this one included


@pytest.mark.parametrize(("in_window", "fires"), [(38, False), (39, False), (40, True)])
def test_the_store_velocity_count_edge(in_window: int, fires: bool) -> None:
    assert ("store_velocity" in fired(base(store_refunds_in_window=in_window))) is fires


@pytest.mark.parametrize(("orders", "earlier", "fires"), [
    (4, 1, False),  # 2/4 = 50 %: at the limit
    (4, 2, True),  # 3/4
    (6, 2, False),  # 3/6 = 50 %
    (5, 2, True),  # 3/5 = 60 %
    (3, 2, True),  # 3/3, at the minimum order count
    (2, 1, False),  # 2/2, too few orders to judge
])
def test_the_refund_ratio_edges(orders: int, earlier: int, fires: bool) -> None:
    ctx = base(customer_order_count=orders, customer_refunds=[(ago(90), D("5"))] * earlier)
    assert ("refund_ratio" in fired(ctx)) is fires


@pytest.mark.parametrize(("amount", "totals", "fires"), [
    ("299.99", 3, False), ("300.00", 3, False), ("300.01", 3, True),
    ("300.01", 2, False),  # too few orders to know what is usual
])
def test_the_amount_vs_usual_edges(amount: str, totals: int, fires: bool) -> None:
    history = [D("80.00"), D("100.00"), D("120.00")][:totals] if totals == 3 else \
        [D("100.00")] * totals
    ctx = base(amount=D(amount), customer_order_totals=history)
    assert ("amount_vs_usual" in fired(ctx)) is fires


# -- signals: the score ----------------------------------------------------------------------


@pytest.mark.parametrize(("threshold", "escalates"), [(39, True), (40, True), (41, False)])
def test_the_escalation_score_edge(threshold: int, escalates: bool) -> None:
    two_weak = base(amount=D("400.00"),  # amount vs usual 20 + early claim 20 = 40
                    contacts=contact(received_at=CONTACT.received_at.replace(month=11, day=2)))
    result = assess(SETTINGS.model_copy(update={"escalate_at_score": threshold}), two_weak)
    assert result.score == 40 and result.escalate is escalates


def test_a_signal_scored_at_the_threshold_escalates_alone() -> None:
    result = assess(SETTINGS, base(store_refunds_in_window=40))
    assert (result.score, result.escalate) == (50, True)
    quieter = SETTINGS.model_copy(update={"scores": SETTINGS.scores.model_copy(
        update={"store_velocity": 49})})
    assert assess(quieter, base(store_refunds_in_window=40)).escalate is False


@pytest.mark.parametrize(("field", "value"), [
    ("customer_velocity", 0), ("customer_window_days", 0), ("store_velocity", 0),
    ("store_window_hours", 0), ("max_refund_ratio", "0"), ("ratio_min_orders", 0),
    ("amount_vs_usual_factor", "0"), ("usual_min_orders", 0), ("early_claim_days", -1),
    ("escalate_at_score", 0),
])
def test_signal_settings_outside_their_range_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        SignalSettings.model_validate({field: value})


SETTINGS_ORDER = base().order


@pytest.mark.parametrize("asked", ["-5.00", "0.00", "-0.01"])
def test_an_amount_asked_that_is_not_positive_escalates(asked: str) -> None:
    o = order(item("40.00"), shipping="0.00")
    d = decide(POLICY, claim(asked), o, charge(o), TODAY)
    assert (d.outcome, d.amount) == (Outcome.ESCALATE, D("40.00"))
    assert d.reasons[-1] == f"The customer asks for {asked}, not a positive amount: a human " \
                            f"decides."


def test_one_cent_asked_is_paid() -> None:
    o = order(item("40.00"), shipping="0.00")
    d = decide(POLICY, claim("0.01"), o, charge(o), TODAY)
    assert (d.outcome, d.amount) == (Outcome.PARTIAL, CENT)


# -- the policy file and the merged claim --------------------------------------------------------


def test_policy_file_errors_name_the_file_and_every_field(tmp_path: Path) -> None:
    from bots.decide.policy import PolicyError, load_policy

    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError, match=r"^policy file not found: .*nope\.yaml$"):
        load_policy(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("refund_window_days: [30\n", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"broken\.yaml: not valid YAML: "):
        load_policy(broken)
    bad = tmp_path / "bad.yaml"
    bad.write_text("category_window_days: {electronics: soon}\nauto_approve_limit: -1\n"
                   "# Kommentar: Rückerstattung\n", encoding="utf-8")
    with pytest.raises(PolicyError) as err:
        load_policy(bad)
    assert str(err.value).startswith(f"{bad}: invalid policy:\n  ")
    lines = str(err.value).split("\n  ")[1:]
    assert [line.split(":")[0] for line in lines] == ["category_window_days.electronics",
                                                      "auto_approve_limit"]


def test_a_claim_merges_what_the_contacts_said() -> None:
    from bots.decide.policy import claim_from

    ask = (ItemAsk("SKU-1", 2, "two lamps"),)
    merged = claim_from([None, D("5.00"), D("7.00")], [None, "EUR", "USD"],
                        ["other", "", "damaged", "wrong_item"], ask)
    assert merged == Claim((D("5.00"), D("7.00")), "EUR", "damaged", ask)
    assert claim_from([None], [None], ["other", ""]) == Claim((), None, "other", ())


def test_the_reasons_an_agent_reads_name_the_lines_and_the_status() -> None:
    o = order(item("18.50", 3, sku="HO-3004"), item("10.00", sku="HO-3005"), shipping="0.00")
    one = Claim((), None, "damaged", (ItemAsk("HO-3004", 1, "a candle"),))
    two = Claim((), None, "damaged", (ItemAsk("HO-3004", None, "the candles"),
                                      ItemAsk("HO-3005", None, "the mug")))
    assert "The request names 'a candle': that line of the order only." in \
        decide(POLICY, one, o, charge(o), TODAY).reasons
    assert "The request names 'the candles', 'the mug': those lines of the order only." in \
        decide(POLICY, two, o, charge(o), TODAY).reasons
    held = order(item("40.00"), status="on hold")
    assert decide(POLICY, claim(), held, charge(held), TODAY).reasons == (
        "Order status is 'on hold': refunds need one of delivered, shipped.",)


@pytest.mark.parametrize(("shipping", "refunded"), [("0.00", False), ("0.50", True),
                                                    ("4.90", True)])
def test_shipping_is_refunded_only_when_there_is_some(shipping: str, refunded: bool) -> None:
    o = order(item("40.00"), shipping=shipping)
    d = decide(POLICY, claim(reason="damaged"), o, charge(o), TODAY)
    assert d.amount == D("40.00") + D(shipping)
    assert any(r.startswith("Shipping fee") for r in d.reasons) is refunded


def test_a_count_several_lines_match_escalates_with_the_proposal_and_the_lines() -> None:
    o = order(item("10.00", 2, sku="MUG-B"), item("12.00", 2, sku="MUG-R"), shipping="0.00")
    c = Claim((), None, "damaged", (ItemAsk("MUG-B", 2, "2 mugs", unsure=True),
                                    ItemAsk("MUG-R", 2, "two mugs", unsure=True)))
    d = decide(POLICY, c, o, charge(o), TODAY)
    assert (d.outcome, d.amount) == (Outcome.ESCALATE, D("44.00"))
    assert d.reasons[-1] == ("The customer gives a count for '2 mugs', which several order "
                             "lines match (MUG-B, MUG-R): a human decides which and how many.")


def test_the_last_reason_says_what_was_decided() -> None:
    o = order(item("40.00"), shipping="0.00")
    assert decide(POLICY, claim(), o, charge(o), TODAY).reasons[-1] == \
        "Approved full refund of 40.00 EUR."
    assert decide(POLICY, claim("15.00"), o, charge(o), TODAY).reasons[-1] == \
        "Approved partial refund of 15.00 EUR."
    assert decide(POLICY, claim("20.00", "10.00", "20.00"), o, charge(o), TODAY).reasons == (
        "The customer's contacts ask for different amounts (10.00, 20.00).",)
