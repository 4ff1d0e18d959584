"""`policy simulate`: what past cases would have become under a changed policy.

Replays the decision of every case that has a facts snapshot (bots.decide.snapshot) with
the new policy, offline: no legacy UI is opened, nothing is changed. The
comparison workbook lets ops leads see the effect of a policy change before they
switch to it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from bots.decide import snapshot
from bots.decide.policy import Policy, decide
from bots.queue import Queue
from bots.reports.report import (
    Column,
    SummaryLine,
    _write_summary,
    _write_table,
    money_format,
)
from bots.reports.xlsx import Book


@dataclass(frozen=True)
class Replay:
    case_ref: str
    order_number: str
    old_outcome: str
    old_amount: Decimal
    new_outcome: str
    new_amount: Decimal
    new_reasons: str
    currency: str = ""
    decided_by: str = "policy"  # "policy", or "human" when a person decided the case

    @property
    def changed(self) -> bool:
        """Would the *policy* decide differently? A human's decision is not the policy's:
        for a case a person decided, the policy's own answer was "escalate", so it changes
        only if the new policy would no longer hand the case to a person."""
        if self.decided_by == "human":
            return self.new_outcome != "escalate"
        return (self.old_outcome, self.old_amount) != (self.new_outcome, self.new_amount)

    @property
    def difference(self) -> Decimal:
        return self.new_amount - self.old_amount


def replay(queue: Queue, policy: Policy) -> list[Replay]:
    """Decide every snapshotted case again with `policy`, as of the day it was decided."""
    out = []
    for case in queue.cases():
        if not case.decision:
            continue
        order, charge, claim, old, today = snapshot.load(case.decision)
        new = decide(policy, claim, order, charge, today)
        human = case.human_decision in ("approve", "partial", "reject")
        old_outcome = (f"escalate, then {case.human_decision} by {case.human_agent}" if human
                       else old.outcome.value)
        out.append(Replay(case.ref, order.order_number, old_outcome, old.amount,
                          new.outcome.value, new.amount, " ".join(new.reasons),
                          (order.currency or "").upper(), "human" if human else "policy"))
    return out


COLUMNS = (
    Column("Case", "case_ref", width=11),
    Column("Order", "order_number", width=14),
    Column("Decided by", "decided_by", width=10),
    Column("Old outcome", "old_outcome", width=22, wrap=True),
    Column("Currency", "currency", width=9),
    Column("Old amount", "old_amount", "money", width=15),
    Column("New outcome", "new_outcome", width=12),
    Column("New amount", "new_amount", "money", width=15),
    Column("Difference", "difference", "money", width=15),
    Column("Changed", lambda r: "yes" if r.changed else "", width=9),
    Column("Why (new policy)", "new_reasons", width=60, wrap=True),
)


def write_comparison(path: Path, rows: list[Replay], policy_file: Path) -> Path:
    changed = [r for r in rows if r.changed]
    lines = [
        SummaryLine("Simulation", "Policy simulated", str(policy_file)),
        SummaryLine("Simulation", "Cases replayed", len(rows), number_format="0"),
        SummaryLine("Simulation", "Decisions that change", len(changed),
                    "a human's decision is never counted as a policy change", "0"),
        SummaryLine("Simulation", "Decided by people (kept apart)",
                    sum(1 for r in rows if r.decided_by == "human"), number_format="0"),
    ]
    for cur in sorted({r.currency for r in rows}):
        mine = [r for r in rows if r.currency == cur]
        old = sum((r.old_amount for r in mine if r.old_outcome in ("refund", "partial")
                   or r.decided_by == "human"), Decimal("0"))
        new = sum((r.new_amount for r in mine if r.new_outcome in ("refund", "partial")),
                  Decimal("0"))
        fmt = money_format(cur)
        lines += [SummaryLine("Money", f"Refunded under the old decisions {cur}".strip(), old,
                              number_format=fmt),
                  SummaryLine("Money", f"Refunded under the new policy {cur}".strip(), new,
                              number_format=fmt),
                  SummaryLine("Money", f"Difference {cur}".strip(), new - old,
                              number_format=fmt)]
    moves = Counter(f"{r.old_outcome} -> {r.new_outcome}" for r in changed)
    lines += [SummaryLine("Changes", move, n, number_format="0")
              for move, n in sorted(moves.items())]
    with Book(path) as wb:
        _write_summary(wb, lines, failing=False)
        _write_table(wb, "Cases", COLUMNS, sorted(rows, key=lambda r: (not r.changed, r.case_ref)),
                     {}, status=("Changed", ("yes",), ""))
        return wb.save()
