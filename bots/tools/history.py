"""A generated history for the demo: N days of finished cases, so dashboards have a past.

`refund-bots demo --history 90` adds, to the demo's queue, 90 days of refund requests
on every channel with a weekly rhythm (busy Mondays, quiet Sundays) and a slow trend,
each one worked as the bot would have: claimed, decided (refunded, partial, rejected),
some escalated and decided by a person hours later, a few failing first, some answered
and then written to again (a follow-up case). Order numbers start at ORD-700000, apart
from the sandbox's orders, and every case is finished: nothing here is ever worked again.

Seeded: the same seed gives the same history relative to `today`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from bots.decide import snapshot
from bots.decide.policy import Claim
from bots.models import ChargeFacts, Decision, LineItem, OrderFacts, Outcome
from bots.queue import AuditRow, Case, CaseState, Queue, RequestRow, RunRow
from bots.runs import new_run_id

FIRST_ORDER = 700_000
WEEKDAY = (1.35, 1.15, 1.0, 1.0, 0.9, 0.6, 0.5)  # Monday first
CHANNELS = {"email": 0.34, "chat": 0.2, "portal": 0.2, "spreadsheet": 0.1, "phone": 0.1,
            "social": 0.06}
REASONS = {"damaged": 0.24, "changed_mind": 0.24, "not_received": 0.15, "wrong_item": 0.14,
           "late": 0.1, "duplicate_charge": 0.05, "other": 0.08}
CATEGORIES = {"apparel": ("AP", 25, 90), "electronics": ("EL", 40, 900),
              "home": ("HO", 10, 120), "beauty": ("BE", 8, 60)}
ESCALATION_REASONS = (
    "Above the auto-approve limit of 500.00: a human decides.",
    "The request comes from another address than the order's: a human decides.",
    "Refund velocity: 3 refunds for this customer in 30 days.",
    "The contacts of this case disagree on the amount.",
)
BOT = "bot@history:0:history"


@dataclass(frozen=True)
class HistoryStats:
    days: int
    cases: int
    requests: int
    followups: int


def generate_history(queue: Queue, days: int, *, today: date | None = None,
                     seed: int = 16, per_day: float = 18.0) -> HistoryStats:
    """Add `days` days (ending yesterday) of finished cases to the queue."""
    rng = random.Random(seed)
    today = today or date.today()
    cases = requests = followups = 0
    order_no = FIRST_ORDER
    with queue.session() as s:
        for back in range(days, 0, -1):
            day = today - timedelta(days=back)
            trend = 1.0 + 0.25 * (days - back) / max(days, 1)
            n = _poisson(rng, per_day * WEEKDAY[day.weekday()] * trend)
            for _ in range(n):
                order_no += 1
                made = _case(rng, day, f"ORD-{order_no}")
                s.add(made.case)
                s.flush()
                for r in made.requests:
                    r.case_id = made.case.id
                    s.add(r)
                for a in made.audit:
                    a.case_id = made.case.id
                    s.add(a)
                cases += 1
                requests += len(made.requests)
                if made.case.state == CaseState.DONE and rng.random() < 0.05:
                    followups += 1
                    _follow_up(s, rng, made.case, made.closed_at, today)
            _runs(s, rng, day)
    return HistoryStats(days, cases, requests, followups)


@dataclass
class _Made:
    case: Case
    requests: list[RequestRow]
    audit: list[AuditRow]
    closed_at: datetime


def _case(rng: random.Random, day: date, order_number: str) -> _Made:
    received = datetime.combine(day, time(7), tzinfo=UTC) + timedelta(
        minutes=rng.randint(0, 14 * 60))
    channel = _pick(rng, CHANNELS)
    reason = _pick(rng, REASONS)
    n = rng.randint(1000, 9999)
    email = f"customer{n}@example.com"
    order, charge = _order(rng, order_number, day, email)
    ask = order.total
    roll = rng.random()
    escalate = roll < 0.1
    outcome = "escalated" if escalate else (
        "refunded" if roll < 0.55 else "partial" if roll < 0.7 else "rejected")
    case = Case(case_key=f"order:{order_number}", order_number=order_number,
                customer_email=email, customer_name=f"Customer {n}", requested_amount=ask,
                currency="EUR", created_at=received)
    reqs = [RequestRow(channel=channel, source_id=f"history:{order_number}", received_at=received,
                       customer_email=email, customer_name=f"Customer {n}",
                       order_number=order_number, requested_amount=ask, currency="EUR",
                       reason_category=reason, reason_text=f"({reason.replace('_', ' ')}) "
                       "refund please", created_at=received)]
    picked = received + timedelta(minutes=rng.randint(1, 20))
    worked = picked + timedelta(seconds=rng.randint(4, 40))
    trail = [_audit(received, None, CaseState.QUEUED, "case_opened", "first contact"),
             _audit(picked, CaseState.QUEUED, CaseState.PROCESSING, "claimed", "")]
    if rng.random() < 0.05:  # a system error first, retried
        trail.append(_audit(worked, CaseState.PROCESSING, CaseState.QUEUED, "retry_scheduled",
                            "in 4.0s after: AppUnavailable: HTTP 502"))
        worked += timedelta(minutes=rng.randint(1, 15))
    amount = ask if outcome == "refunded" else (
        (ask * Decimal("0.5")).quantize(Decimal("0.01")) if outcome == "partial"
        else Decimal("0.00"))
    reason_text = {"refunded": "Within the refund window.", "partial":
                   "Only the damaged line is refunded.", "rejected":
                   "Outside the 30-day refund window."}.get(outcome, "")
    if escalate:
        why = rng.choice(ESCALATION_REASONS)
        trail.append(_audit(worked, CaseState.PROCESSING, CaseState.ESCALATED, "escalated", why))
        decided = worked + timedelta(minutes=rng.randint(30, 40 * 60))
        approve = rng.random() < 0.7
        trail.append(_audit(decided, CaseState.ESCALATED,
                            CaseState.QUEUED if approve else CaseState.DONE, "human_decision",
                            ("approve by demo.agent" if approve else "reject by demo.agent: "
                             "not eligible"), actor="demo.agent"))
        case.human_decision, case.human_agent = ("approve" if approve else "reject",
                                                 "demo.agent")
        worked = decided + timedelta(minutes=rng.randint(1, 20)) if approve else decided
        outcome = "refunded" if approve else "rejected"
        amount = ask if approve else Decimal("0.00")
        reason_text = "Approved by demo.agent." if approve else "Rejected by demo.agent."
    if not (escalate and outcome == "rejected"):
        trail.append(_audit(worked, CaseState.PROCESSING, CaseState.DONE, outcome, reason_text))
    decision = Decision(Outcome.REFUND if outcome == "refunded" else Outcome.PARTIAL
                        if outcome == "partial" else Outcome.REJECT, amount, (reason_text,))
    claim = Claim((ask,), "EUR", reason)
    case.state, case.outcome, case.reason = CaseState.DONE, outcome, reason_text
    case.approved_amount = amount
    case.decision = snapshot.dump(order, charge, claim, decision, day)
    case.refund_number = f"RF-H{order_number[4:]}" if amount > 0 else None
    case.updated_at = worked
    return _Made(case, reqs, trail, worked)


def _order(rng: random.Random, order_number: str, day: date,
           email: str) -> tuple[OrderFacts, ChargeFacts]:
    items = []
    for i in range(rng.choice((1, 1, 2))):
        category = rng.choice(list(CATEGORIES))
        prefix, low, high = CATEGORIES[category]
        price = Decimal(rng.randint(low * 100, high * 100)) / 100
        items.append(LineItem(f"{prefix}-{2000 + i}", f"{category} item", category, price, 1))
    total = sum((i.unit_price * i.quantity for i in items), Decimal("0.00"))
    order = OrderFacts(order_number=order_number, customer_name="Customer", email=email,
                       phone="", order_date=day - timedelta(days=10),
                       delivery_date=day - timedelta(days=5), status="delivered",
                       items=tuple(items), shipping_fee=Decimal("0.00"), currency="EUR",
                       payment_card="**** 4242", total=total)
    charge = ChargeFacts(f"TX-H{order_number[4:]}", order_number, total, "EUR",
                         Decimal("0.00"), ())
    return order, charge


def _follow_up(s: object, rng: random.Random, earlier: Case, closed: datetime,
               today: date) -> None:
    """The customer writes again after the answer: a follow-up case, answered by a person."""
    from sqlalchemy.orm import Session

    assert isinstance(s, Session)
    at = closed + timedelta(hours=rng.randint(2, 72))
    if at.date() >= today:
        return
    key = f"{earlier.case_key}@{earlier.ref}"
    earlier.case_key = key
    case = Case(case_key=f"order:{earlier.order_number}", order_number=earlier.order_number,
                customer_email=earlier.customer_email, customer_name=earlier.customer_name,
                currency="EUR", state=CaseState.DONE, outcome="rejected",
                reason="Answered by demo.agent: the refund was already made.",
                follows=earlier.id, created_at=at, updated_at=at + timedelta(hours=3),
                approved_amount=Decimal("0.00"))
    s.add(case)
    s.flush()
    s.add(RequestRow(channel="email", source_id=f"history:{earlier.order_number}:again",
                     received_at=at, customer_email=earlier.customer_email,
                     order_number=earlier.order_number, reason_category="other",
                     reason_text="Where is my refund?", case_id=case.id, created_at=at))
    s.add(_audit(at, None, CaseState.QUEUED, "followup_opened", "follow-up", case.id))
    s.add(_audit(at + timedelta(hours=3), CaseState.PROCESSING, CaseState.DONE, "rejected",
                 "answered", case.id))


def _runs(s: object, rng: random.Random, day: date) -> None:
    from sqlalchemy.orm import Session

    assert isinstance(s, Session)
    for hour in (6, 12, 18):
        start = datetime.combine(day, time(hour), tzinfo=UTC)
        problems = 1 if rng.random() < 0.03 else 0
        failed = 1 if rng.random() < 0.05 else 0
        status = "problems" if problems or failed else "done"
        s.add(RunRow(run_id=new_run_id(start, f"{rng.randrange(16 ** 4):04x}"),
                     command="run", started_at=start,
                     finished_at=start + timedelta(seconds=rng.randint(60, 600)), status=status,
                     stats=json.dumps({"processing": {"outcomes": {"failed": failed}},
                                       "reconciliation_problems": problems}),
                     owner="history"))


def _audit(at: datetime, before: str | None, after: str | None, event: str, detail: str,
           case_id: int = 0, actor: str = BOT) -> AuditRow:
    return AuditRow(case_id=case_id, at=at, run_id=None, actor=actor, from_state=before,
                    to_state=after, event=event, detail=detail)


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method; means here are small (tens)."""
    import math

    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
