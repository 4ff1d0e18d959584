"""The chaos harness: kill the bot at random moments, rerun, prove nobody is paid twice.

Each round starts a fresh sandbox and demo inputs, then runs `refund-bots run` in
a child process again and again. A run is either SIGKILLed from outside after a
random delay, or told to SIGKILL itself at a crash point (between the submit
click and recording the refund number, among others; see bots.work.crashpoints),
until a clean run finds the queue drained. Then the payment portal's own
database is checked: every eligible order refunded exactly once with the right
amount, no request lost.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from random import Random
from typing import TYPE_CHECKING

import yaml

from bots.config import Settings, load_settings
from bots.decide.policy import Policy, load_policy
from bots.intake import read_source
from bots.intake.extract import classify_reason
from bots.models import Quarantined
from bots.queue import CaseState, Queue
from bots.tools.demo import DEMO_SEED, DemoRequest, demo_overrides, prepare_inputs

if TYPE_CHECKING:  # imported where used: the sandbox is only needed to run the rounds
    from bots.sandbox.data import Dataset, Order

CRASH_PLAN = "before_submit:0.15,after_submit:0.35,after_record:0.15,after_note:0.15"


@dataclass
class RoundResult:
    round: int
    kills: int = 0
    runs: int = 0
    problems: list[str] = field(default_factory=list)
    refunds: int = 0
    how: Counter[str] = field(default_factory=Counter)  # "timer" / "crash point" kills


@dataclass
class ChaosResult:
    rounds: list[RoundResult] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return sum(r.kills for r in self.rounds)

    @property
    def runs(self) -> int:
        return sum(r.runs for r in self.rounds)

    @property
    def refunds(self) -> int:
        return sum(r.refunds for r in self.rounds)

    @property
    def how(self) -> Counter[str]:
        return sum((r.how for r in self.rounds), Counter())

    @property
    def problems(self) -> list[str]:
        return [f"round {r.round}: {p}" for r in self.rounds for p in r.problems]

    @property
    def ok(self) -> bool:
        return not self.problems


def expected_refunds(ds: Dataset, reqs: list[DemoRequest],
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
                          avoid: Iterable[str] = ()) -> list[SmallRefund]:
    """Up to `n` portal requests for clearly refundable orders, each asking a small amount.

    Chosen from the seeded data without the bot's code: delivered at least 2 days ago and
    2 days inside the refund window of every item (no early claim, no edge of a window),
    charged in full and never refunded, nothing on final sale, one order per customer and
    none of `avoid`'s customers (so no velocity or per-customer limit can turn one into an
    escalation). The amount is 15-40 % of the items, in the order's currency: the refund a
    careful agent issues is exactly that amount.
    """
    taken = {e.lower() for e in avoid}
    scenario_orders = set(ds.scenarios.values())
    refunded = {r.order_number for r in ds.refunds}
    out: list[SmallRefund] = []
    for o in rng.sample(ds.orders, len(ds.orders)):
        customer = ds.customer(o.customer_id)
        charge = ds.charge_for(o.order_number)
        if (len(out) >= n or o.order_number in scenario_orders or o.order_number in refunded
                or customer.email.lower() in taken or charge is None or charge.amount != o.total
                or o.status != "delivered" or o.delivery_date is None
                or not 2 <= (ds.today - o.delivery_date).days <= _window(policy, o) - 2
                or (ds.today - o.order_date).days < 3
                or any(i.final_sale or i.category in policy.final_sale_categories
                       for i in o.items)):
            continue
        share = Decimal(rng.randint(int(SMALL_SHARE[0] * 100), int(SMALL_SHARE[1] * 100))) / 100
        amount = (o.items_total * share).quantize(Decimal("0.01"))
        if amount < 1 or amount * 2 >= charge.amount or (
                policy.auto_approve_limit is not None and amount > policy.auto_approve_limit):
            continue
        taken.add(customer.email.lower())
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


def run_chaos(folder: Path, *, kills: int, seed: int, kills_per_round: int = 4,
              say: Callable[[str], None] = print) -> ChaosResult:
    rng = Random(seed)
    result = ChaosResult()
    n = 0
    while result.kills < kills:
        n += 1
        budget = min(kills_per_round, kills - result.kills)
        result.rounds.append(_round(folder / f"round-{n:03d}", n, budget, rng, say))
    return result


def _round(folder: Path, n: int, kills: int, rng: Random,
           say: Callable[[str], None]) -> RoundResult:
    from bots.sandbox.data import build_dataset
    from bots.sandbox.server import SandboxProcess

    res = RoundResult(n)
    today = date.today()
    folder.mkdir(parents=True, exist_ok=True)
    with SandboxProcess(data_dir=folder / "sandbox", seed=DEMO_SEED, today=today) as sb:
        ds = build_dataset(seed=DEMO_SEED, today=today)
        reqs = prepare_inputs(folder, ds, today)
        settings = load_settings(None, runs_dir=str(folder / "runs"),
                                 **demo_overrides(folder, sb.orders_url, sb.payments_url))
        config = _write_settings(folder, settings)
        before = _portal_refunds(sb.payments_db)
        while res.kills < kills and res.runs < kills * 4:
            res.runs += 1
            if how := _killed_run(config, folder, rng, today):
                res.kills += 1
                res.how[how] += 1
        for _ in range(5):  # clean runs until the queue is drained
            res.runs += 1
            _run(config, folder, {}, today).wait(timeout=600)
            if _drained(settings):
                break
        after = [r for r in _portal_refunds(sb.payments_db) if r["refund_id"] not in
                 {b["refund_id"] for b in before}]
        res.refunds = len(after)
        res.problems = _verify(settings, ds, reqs, after, load_policy(settings.policy))
    say(f"round {n}: {res.kills} kill(s) ({dict(res.how)}) in {res.runs} run(s), "
        f"{res.refunds} refund(s), "
        f"{'OK' if not res.problems else '; '.join(res.problems)}")
    return res


def _write_settings(folder: Path, settings: Settings) -> Path:
    path = folder / "settings.yaml"
    data = settings.model_dump(mode="json")
    data["processing"]["backoff_seconds"] = 0.2
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _run(config: Path, folder: Path, extra_env: dict[str, str], today: date) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUND_BOTS_CRASH_")}
    env.update(extra_env)
    return subprocess.Popen(
        [sys.executable, "-m", "bots", "run", "--config", str(config), "--today",
         today.isoformat()],
        cwd=Path.cwd(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: a kill takes the browser down too
    )


def _killed_run(config: Path, folder: Path, rng: Random, today: date) -> str | None:
    """One run that dies: by SIGKILL from outside, or at a crash point. How, if it died."""
    if rng.random() < 0.5:
        proc = _run(config, folder, {"REFUND_BOTS_CRASH_POINTS": CRASH_PLAN,
                                     "REFUND_BOTS_CRASH_SEED": str(rng.random())}, today)
        code = proc.wait(timeout=600)
        _kill_group(proc)
        return "crash point" if code == -signal.SIGKILL else None
    proc = _run(config, folder, {}, today)
    deadline = time.monotonic() + rng.uniform(1.5, 12.0)
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    if proc.poll() is not None:
        return None
    _kill_group(proc)
    proc.wait(timeout=30)
    return "timer"


def _kill_group(proc: subprocess.Popen) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _drained(settings: Settings) -> bool:
    return Queue(settings.queue_url).pending_count() == 0


def _portal_refunds(db: Path) -> list[dict[str, str]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM refunds ORDER BY id")]


def _verify(settings: Settings, ds: Dataset, reqs: list[DemoRequest],
            refunds: list[dict[str, str]], policy: Policy) -> list[str]:
    problems: list[str] = []
    expected = expected_refunds(ds, reqs, policy)
    per_order = Counter(r["order_number"] for r in refunds)
    for order, count in per_order.items():
        if count > 1:
            problems.append(f"{order} refunded {count} times")
        if order not in expected:
            problems.append(f"{order} refunded but not eligible")
    for order, amount in expected.items():
        paid = [Decimal(r["amount"]) for r in refunds if r["order_number"] == order]
        if not paid:
            problems.append(f"{order} not refunded")
        elif paid[0] != amount:
            problems.append(f"{order} refunded {paid[0]}, expected {amount}")
    queue = Queue(settings.queue_url)
    open_cases = [c.ref for c in queue.cases([CaseState.QUEUED, CaseState.PROCESSING])]
    if open_cases:
        problems.append(f"cases left open: {', '.join(open_cases)}")
    items = [i for s in settings.intake.sources for i in read_source(s)]
    wanted = {(i.channel, i.source_id) for i in items if not isinstance(i, Quarantined)}
    stored = {(r.channel, r.source_id) for c in queue.cases() for r in c.requests}
    if lost := wanted - stored:
        problems.append(f"{len(lost)} request(s) lost: {sorted(lost)[:3]}")
    return problems
