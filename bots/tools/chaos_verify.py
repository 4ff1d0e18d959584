"""The end of a chaos round: check the world, not the bot's word.

Money: the payment portal's own database (every eligible order refunded exactly once,
with the right amount, nothing else refunded). Requests: every contact the sources hold
is in the queue, and no case is left open. Customers: every contact of a finished case
told exactly once, from the outbox files the channel tools would send (a line repeated
with the same notification id is the one at-least-once window: counted, not a problem).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from bots.config import Settings
from bots.decide.policy import Policy
from bots.intake import read_source
from bots.models import Quarantined
from bots.notify import contacts_of
from bots.queue import CaseState, Queue
from bots.tools.chaos_data import expected_refunds
from bots.tools.demo import DemoRequest

if TYPE_CHECKING:
    from bots.sandbox.data import Dataset

TOLD_OUTCOMES = ("refunded", "partial", "rejected", "escalated")


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    told: int = 0  # contacts told (one message each)
    resent: int = 0  # outbox lines that repeat a notification id already written


def portal_refunds(db: Path) -> list[dict[str, str]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM refunds ORDER BY id")]


def verify_round(settings: Settings, queue: Queue, ds: Dataset, reqs: Sequence[DemoRequest],
                 refunds: list[dict[str, str]], policy: Policy) -> Verdict:
    verdict = Verdict(problems=money_problems(expected_refunds(ds, reqs, policy), refunds))
    verdict.problems += request_problems(settings, queue)
    if settings.notify is not None and settings.notify.enabled:
        told, resent, problems = notification_check(queue, Path(settings.notify.outbox_dir))
        verdict.told, verdict.resent = told, resent
        verdict.problems += problems
    return verdict


def money_problems(expected: dict[str, Decimal], refunds: list[dict[str, str]]) -> list[str]:
    problems: list[str] = []
    per_order = Counter(r["order_number"] for r in refunds)
    for order, count in per_order.items():
        if count > 1:
            amounts = ", ".join(r["amount"] for r in refunds if r["order_number"] == order)
            problems.append(f"{order} refunded {count} times ({amounts})")
        if order not in expected:
            problems.append(f"{order} refunded but not eligible")
    for order, amount in expected.items():
        paid = [Decimal(r["amount"]) for r in refunds if r["order_number"] == order]
        if not paid:
            problems.append(f"{order} not refunded")
        elif paid[0] != amount:
            problems.append(f"{order} refunded {paid[0]}, expected {amount}")
    return problems


def request_problems(settings: Settings, queue: Queue) -> list[str]:
    problems: list[str] = []
    if open_cases := [c.ref for c in queue.cases(list(CaseState.OPEN))]:
        problems.append(f"cases left open: {', '.join(open_cases)}")
    items = [i for s in settings.intake.sources for i in read_source(s)]
    wanted = {(i.channel, i.source_id) for i in items if not isinstance(i, Quarantined)}
    stored = {(r.channel, r.source_id) for c in queue.cases() for r in c.requests}
    if lost := wanted - stored:
        problems.append(f"{len(lost)} request(s) lost: {sorted(lost)[:3]}")
    return problems


def notification_check(queue: Queue, outbox: Path) -> tuple[int, int, list[str]]:
    """(contacts told, lines re-sent with the same id, problems) from the outbox files."""
    lines = [json.loads(line) for f in sorted(outbox.glob("*.jsonl"))
             for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    ids = Counter(m["notification_id"] for m in lines)
    resent = sum(n - 1 for n in ids.values())
    by_contact: dict[tuple[str, str, str], set[str]] = {}
    for m in lines:
        by_contact.setdefault((m["case_ref"], m["channel"], str(m["to"]).lower()),
                              set()).add(m["notification_id"])
    problems: list[str] = []
    expected: set[tuple[str, str, str]] = set()
    for case in queue.cases([CaseState.DONE, CaseState.ESCALATED]):
        if case.outcome not in TOLD_OUTCOMES:
            continue
        for contact in contacts_of(case):
            if contact.to is None:
                continue
            key = (case.ref, contact.channel, contact.to.lower())
            expected.add(key)
            told = len(by_contact.get(key, ()))
            if told != 1:
                problems.append(f"{case.ref}: {contact.channel} contact told {told} times")
    for key in sorted(set(by_contact) - expected):
        problems.append(f"{key[0]}: {key[1]} message to a contact the case does not have")
    return len(expected & set(by_contact)), resent, problems
