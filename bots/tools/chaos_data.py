"""What the chaos rounds ask for, and what a careful agent would pay for it.

The expectations are computed from the sandbox's seeded data and the policy file alone,
never with the bot's code, so a bot that decides wrongly cannot agree with itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from random import Random
from typing import TYPE_CHECKING

from bots.decide.policy import Policy
from bots.intake.extract import classify_reason
from bots.tools.demo import DemoRequest

if TYPE_CHECKING:  # imported where used: the sandbox is only needed to run the rounds
    from bots.sandbox.data import Dataset, Order


def expected_refunds(ds: Dataset, reqs: Sequence[DemoRequest],
                     policy: Policy) -> dict[str, Decimal]:
    """What a careful agent refunds for the demo requests, computed without the bot's code."""
    orders = {o.order_number: o for o in ds.orders}
    out: dict[str, Decimal] = {}
    for r in reqs:
        if r.expect not in ("refunded", "partial"):
            continue
        if r.order_number is None:
            raise ValueError(f"demo request expected to be {r.expect} names no order: {r}")
        o = orders[r.order_number]
        back = r.returns or {i.sku: i.quantity for i in o.items}
        amount = sum((i.unit_price * min(back[i.sku], i.quantity) for i in o.items
                      if i.sku in back and not i.final_sale
                      and i.category not in policy.final_sale_categories), Decimal("0"))
        whole = all(back.get(i.sku, 0) >= i.quantity for i in o.items)
        if classify_reason(r.reason) in policy.refund_shipping_for and (
                whole or policy.refund_shipping_on_partial_return):
            amount += o.shipping_fee
        if r.amount:
            amount = min(amount, Decimal(r.amount))
        already = sum((x.amount for x in ds.refunds if x.order_number == o.order_number),
                      Decimal("0"))
        out[o.order_number] = min(amount, o.total - already)
    return out


# Requests the chaos rounds add to the demo's: each asks for well under half its charge, so
# the portal's balance check would accept a second identical refund. Only the bot's own
# exactly-once logic stands between such a request and a double payment.
SMALL_SHARE = (Decimal("0.15"), Decimal("0.40"))  # of the order's refundable items
SMALL_REASONS = ("I changed my mind about part of this order, please refund {amount} {cur}.",
                 "Please refund {amount} {cur}, the price dropped the week after I ordered.",
                 "Goodwill refund of {amount} {cur} as agreed with your colleague, thanks.")


@dataclass(frozen=True)
class SmallRefund(DemoRequest):
    currency: str = "EUR"  # the order's: a form in another currency would be escalated


def small_refund_requests(ds: Dataset, policy: Policy, n: int, rng: Random, *,
                          avoid: Iterable[str] = (), per_customer: int = 1
                          ) -> list[SmallRefund]:
    """Up to `n` portal requests for clearly refundable orders, each asking a small amount.

    Chosen from the seeded data without the bot's code: delivered at least 2 days ago and
    2 days inside the refund window of every item (no early claim, no edge of a window),
    charged in full and never refunded, nothing on final sale, none of `avoid`'s customers,
    at most `per_customer` orders per customer (more than one only with the fraud signals
    off: their velocity rule would escalate) and together at most half the per-customer
    limit, so no rule can turn one into an escalation. The amount is 15-40 % of the items,
    in the order's currency: the refund a careful agent issues is exactly that amount.
    """
    taken = {e.lower() for e in avoid}
    asked: dict[str, list[Decimal]] = {}
    cap = (policy.customer_auto_approve_limit / 2 if policy.customer_auto_approve_limit
           is not None else None)
    scenario_orders = set(ds.scenarios.values())
    refunded = {r.order_number for r in ds.refunds}
    out: list[SmallRefund] = []
    for o in rng.sample(ds.orders, len(ds.orders)):
        customer = ds.customer(o.customer_id)
        charge = ds.charge_for(o.order_number)
        if (len(out) >= n or o.order_number in scenario_orders or o.order_number in refunded
                or customer.email.lower() in taken
                or len(asked.get(customer.email.lower(), ())) >= per_customer
                or charge is None or charge.amount != o.total
                or o.status != "delivered" or o.delivery_date is None
                or not 2 <= (ds.today - o.delivery_date).days <= _window(policy, o) - 2
                or (ds.today - o.order_date).days < 3
                or any(i.final_sale or i.category in policy.final_sale_categories
                       for i in o.items)):
            continue
        share = Decimal(rng.randint(int(SMALL_SHARE[0] * 100), int(SMALL_SHARE[1] * 100))) / 100
        amount = (o.items_total * share).quantize(Decimal("0.01"))
        before = asked.setdefault(customer.email.lower(), [])
        if amount < 1 or amount * 2 >= charge.amount or amount > policy.auto_approve_limit or (
                cap is not None and sum(before) + amount > cap):
            continue
        before.append(amount)
        text = rng.choice(SMALL_REASONS).format(amount=f"{amount:.2f}", cur=o.currency)
        out.append(SmallRefund("portal", o.order_number, customer.email, customer.name, text,
                               amount=f"{amount:.2f}", expect="partial", currency=o.currency))
    return out


def _window(policy: Policy, order: Order) -> int:
    """The shortest refund window among the order's items (days from delivery)."""
    return min(policy.category_window_days.get(i.category, policy.refund_window_days)
               for i in order.items)


def write_portal_forms(folder: Path, reqs: Sequence[SmallRefund], now: datetime,
                       prefix: str = "chaos") -> None:
    """The requests as self-service portal forms, one JSON file each, ids `<prefix>-N`."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(reqs):
        form = {"submission_id": f"{prefix}-{i + 1:04d}",
                "submitted_at": (now - timedelta(minutes=5 + i)).isoformat(),
                "customer": {"name": r.name, "email": r.email},
                "order": {"number": r.order_number}, "reason": "customer_request",
                "message": r.reason,
                "refund": {"amount": r.amount, "currency": r.currency}}
        (folder / f"{prefix}-{i + 1:04d}.json").write_text(json.dumps(form), encoding="utf-8")
