"""The chaos rounds' checks fail on what they must catch (a harness that cannot fail proves
nothing): a double refund, a wrong amount, a refund nobody asked for, a missing one."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from random import Random

from paths import CONFIG

from bots.decide.policy import load_policy
from bots.sandbox.data import build_dataset
from bots.tools.chaos_data import expected_refunds, small_refund_requests
from bots.tools.chaos_verify import money_problems
from bots.tools.demo import DEMO_SEED


def refund(order: str, amount: str) -> dict[str, str]:
    return {"order_number": order, "amount": amount}


def test_money_problems_name_doubles_wrong_amounts_strangers_and_misses() -> None:
    expected = {"ORD-1": Decimal("10.00"), "ORD-2": Decimal("20.00"), "ORD-3": Decimal("5.00")}
    got = [refund("ORD-1", "10.00"), refund("ORD-1", "10.00"), refund("ORD-2", "19.99"),
           refund("ORD-9", "1.00")]
    assert money_problems(expected, got) == [
        "ORD-1 refunded 2 times (10.00, 10.00)", "ORD-9 refunded but not eligible",
        "ORD-2 refunded 19.99, expected 20.00", "ORD-3 not refunded"]
    assert money_problems(expected, [refund(o, f"{a}") for o, a in expected.items()]) == []


def test_small_refunds_are_duplicates_the_portal_would_accept() -> None:
    ds = build_dataset(seed=DEMO_SEED, today=date.today())
    policy = load_policy(CONFIG / "policy.yaml")
    reqs = small_refund_requests(ds, policy, 30, Random(5), per_customer=3)
    assert len(reqs) >= 10
    expected = expected_refunds(ds, reqs, policy)
    for r in reqs:
        charge = ds.charge_for(r.order_number or "")
        assert charge is not None
        assert expected[r.order_number or ""] == Decimal(r.amount or "0")
        assert 2 * Decimal(r.amount or "0") < charge.amount  # a second one would fit
    per_customer: dict[str, Decimal] = {}
    for r in reqs:
        per_customer[r.email] = per_customer.get(r.email, Decimal(0)) + Decimal(r.amount or "0")
    limit = policy.customer_auto_approve_limit
    assert limit is not None and max(per_customer.values()) <= limit / 2
