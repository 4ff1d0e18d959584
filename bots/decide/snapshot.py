"""What the bot saw when it decided, stored with the case as JSON.

Stored so that a decision can be explained later, shown to a human reviewer, and
replayed under a changed policy (`policy simulate`) without opening the legacy UIs.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from bots.decide.line_items import ItemAsk
from bots.decide.policy import Claim
from bots.models import ChargeFacts, Decision, LineItem, OrderFacts, Outcome, PortalRefund


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__}")


def dump(order: OrderFacts, charge: ChargeFacts, claim: Claim, decision: Decision,
         today: date) -> str:
    return json.dumps({"order": asdict(order), "charge": asdict(charge), "claim": asdict(claim),
                       "decision": asdict(decision), "today": today}, default=_default)


def load(text: str) -> tuple[OrderFacts, ChargeFacts, Claim, Decision, date]:
    data: dict[str, Any] = json.loads(text)
    o, c, cl, d = data["order"], data["charge"], data["claim"], data["decision"]
    order = OrderFacts(
        **{**o, "order_date": date.fromisoformat(o["order_date"]),
           "delivery_date": date.fromisoformat(o["delivery_date"]) if o["delivery_date"] else None,
           "shipping_fee": Decimal(o["shipping_fee"]), "total": Decimal(o["total"]),
           "items": tuple(LineItem(**{**i, "unit_price": Decimal(i["unit_price"])})
                          for i in o["items"])})
    charge = ChargeFacts(
        **{**c, "amount": Decimal(c["amount"]), "refunded": Decimal(c["refunded"]),
           "refunds": tuple(PortalRefund(**{**r, "amount": Decimal(r["amount"]),
                                            "created_at": datetime.fromisoformat(r["created_at"])})
                            for r in c["refunds"])})
    claim = Claim(tuple(Decimal(a) for a in cl["amounts"]), cl["currency"], cl["reason_category"],
                  tuple(ItemAsk(**i) for i in cl.get("items", ())))  # older snapshots: none
    decision = Decision(Outcome(d["outcome"]), Decimal(d["amount"]), tuple(d["reasons"]))
    return order, charge, claim, decision, date.fromisoformat(data["today"])
