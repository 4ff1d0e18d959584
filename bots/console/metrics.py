"""The dashboard's numbers, from the queue's own records (cases, contacts, audit trail, runs).

Definitions (also shown on the page):
- auto-resolution rate: cases finished in the window without a person deciding;
- cases per hour: cases opened in the window / hours in the window;
- handling time: first contact received -> case finished, on average; "bot time" is that
  without the waits for a person; "human wait" the average wait of the escalated cases
  (escalated -> a person's decision);
- refunded amounts (what was approved on refunded/partial cases) by reason and channel of
  the first contact, by SKU category (split across the order's lines the customer named,
  else all lines, in proportion to their value) and by day finished;
- failures: system errors (retries and cases given up) per day; breaks: reconciliation
  problems found by the runs of each day;
- escalations by reason: the bot's escalation reasons, numbers blanked so alike ones group;
- satisfaction proxy: the share of finished cases the customer wrote about again after the
  answer (a follow-up case, `cases.follows`) - lower is better.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from bots.decide import snapshot
from bots.queue import AuditRow, Case, CaseState, Queue, RequestRow, RunRow, utcnow

PAID = ("refunded", "partial")


@dataclass
class Metrics:
    days: int
    since: datetime
    finished: int = 0
    auto_resolved: int = 0
    opened: int = 0
    hours: float = 0.0
    handling_hours: float | None = None  # average, received -> finished
    bot_hours: float | None = None
    human_wait_hours: float | None = None
    escalated_finished: int = 0
    followed_up: int = 0
    refunded_total: Decimal = Decimal("0.00")
    by_reason: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    by_channel: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    by_category: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    by_day: dict[date, float] = field(default_factory=dict)
    opened_by_day: dict[date, int] = field(default_factory=dict)
    failures_by_day: dict[date, int] = field(default_factory=dict)
    breaks_by_day: dict[date, int] = field(default_factory=dict)
    escalation_reasons: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def auto_resolution_rate(self) -> float | None:
        return self.auto_resolved / self.finished if self.finished else None

    @property
    def cases_per_hour(self) -> float:
        return self.opened / self.hours if self.hours else 0.0

    @property
    def follow_up_rate(self) -> float | None:
        return self.followed_up / self.finished if self.finished else None


def compute(queue: Queue, days: int = 30, now: datetime | None = None) -> Metrics:
    now = now or utcnow()
    since = now - timedelta(days=days)
    m = Metrics(days=days, since=since, hours=days * 24.0)
    day_list = [(since + timedelta(days=i + 1)).date() for i in range(days)]
    m.by_day = dict.fromkeys(day_list, 0.0)
    m.opened_by_day = dict.fromkeys(day_list, 0)
    m.failures_by_day = dict.fromkeys(day_list, 0)
    m.breaks_by_day = dict.fromkeys(day_list, 0)
    with queue.session() as s:
        trail = list(s.execute(select(AuditRow.case_id, AuditRow.at, AuditRow.from_state,
                                      AuditRow.to_state, AuditRow.event, AuditRow.detail)
                               .where(AuditRow.at >= since).order_by(AuditRow.id)))
        touched = {t.case_id for t in trail}
        cases = {c.id: c for c in s.scalars(select(Case).where(Case.id.in_(touched)))}
        firsts = _first_contacts(s, touched)
        followed = set(s.scalars(select(Case.follows).where(Case.follows.in_(touched))))
        opened = list(s.scalars(select(Case.created_at).where(Case.created_at >= since,
                                                                Case.state != CaseState.MERGED)))
        runs = list(s.execute(select(RunRow.started_at, RunRow.stats)
                              .where(RunRow.started_at >= since)))
    m.opened = len(opened)
    for at in opened:
        _bump(m.opened_by_day, at.date(), 1)
    _from_trail(m, trail, cases, firsts, followed)
    for started, stats in runs:
        try:
            problems = int(json.loads(stats or "{}").get("reconciliation_problems") or 0)
        except (ValueError, TypeError, AttributeError):
            problems = 0
        _bump(m.breaks_by_day, started.date(), problems)
    return m


def _first_contacts(s: object, ids: set[int]) -> dict[int, RequestRow]:
    from sqlalchemy.orm import Session

    assert isinstance(s, Session)
    firsts: dict[int, RequestRow] = {}
    for r in s.scalars(select(RequestRow).where(RequestRow.case_id.in_(ids))
                       .order_by(RequestRow.received_at)):
        firsts.setdefault(r.case_id, r)
    return firsts


def _from_trail(m: Metrics, trail: list[Any], cases: dict[int, Case],
                firsts: dict[int, RequestRow], followed: set[int | None]) -> None:
    escalated_at: dict[int, datetime] = {}
    waits: defaultdict[int, float] = defaultdict(float)
    handling, bot, human = [], [], []
    for t in trail:
        if t.to_state == CaseState.ESCALATED and t.from_state != CaseState.ESCALATED:
            escalated_at[t.case_id] = t.at
            m.escalation_reasons[_reason_key(t.detail)] += 1
        if t.event == "human_decision" and t.case_id in escalated_at:
            waits[t.case_id] += (t.at - escalated_at.pop(t.case_id)).total_seconds() / 3600
        if t.event in ("failed", "retry_scheduled", "poison"):
            _bump(m.failures_by_day, t.at.date(), 1)
        if t.to_state != CaseState.DONE or t.case_id not in cases:
            continue
        case = cases[t.case_id]
        m.finished += 1
        m.outcomes[case.outcome or "?"] += 1
        human_touched = t.case_id in waits or bool(case.human_decision)
        m.auto_resolved += not human_touched
        m.escalated_finished += human_touched
        m.followed_up += t.case_id in followed
        first = firsts.get(t.case_id)
        if first is not None:
            total = max(0.0, (t.at - first.received_at).total_seconds() / 3600)
            handling.append(total)
            if waits[t.case_id]:
                human.append(waits[t.case_id])
            bot.append(max(0.0, total - waits[t.case_id]))
        if case.outcome in PAID and case.approved_amount:
            _money(m, case, first, t.at.date())
    if handling:
        m.handling_hours = sum(handling) / len(handling)
        m.bot_hours = sum(bot) / len(bot)
        m.human_wait_hours = sum(human) / len(human) if human else None


def _money(m: Metrics, case: Case, first: RequestRow | None, day: date) -> None:
    amount = case.approved_amount or Decimal("0.00")
    m.refunded_total += amount
    m.by_reason[first.reason_category if first else "?"] += float(amount)
    m.by_channel[first.channel if first else "?"] += float(amount)
    _bump(m.by_day, day, float(amount))
    for category, share in _categories(case).items():
        m.by_category[category] += float(amount) * share


def _categories(case: Case) -> dict[str, float]:
    """How a case's refund splits across SKU categories (by line value)."""
    if not case.decision:
        return {"unknown": 1.0}
    try:
        order, _, claim, _, _ = snapshot.load(case.decision)
    except Exception:  # noqa: BLE001 - another version's snapshot
        return {"unknown": 1.0}
    named = {a.sku for a in claim.items}
    lines = [i for i in order.items if i.sku in named] or list(order.items)
    total = sum(float(i.unit_price * i.quantity) for i in lines)
    if not lines or total <= 0:
        return {"unknown": 1.0}
    out: defaultdict[str, float] = defaultdict(float)
    for i in lines:
        out[i.category or "unknown"] += float(i.unit_price * i.quantity) / total
    return dict(out)


def _reason_key(detail: str) -> str:
    """An escalation reason without its numbers, first sentence only, so alike ones group."""
    first = re.split(r"(?<=[.!?])\s", detail.strip(), maxsplit=1)[0]
    return re.sub(r"\d[\d.,]*", "#", first)[:90] or "(no reason)"


def _bump(counter: dict[date, float] | dict[date, int], day: date, value: float) -> None:
    if day in counter:
        counter[day] += value  # type: ignore[assignment]
