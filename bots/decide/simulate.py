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

from openpyxl import Workbook
from openpyxl.styles import Font

from bots.decide import snapshot
from bots.decide.policy import Policy, decide
from bots.queue import Queue
from bots.reports.excel_safe import MONEY_FORMAT, write_cell


@dataclass(frozen=True)
class Replay:
    case_ref: str
    order_number: str
    old_outcome: str
    old_amount: Decimal
    new_outcome: str
    new_amount: Decimal
    new_reasons: str

    @property
    def changed(self) -> bool:
        return (self.old_outcome, self.old_amount) != (self.new_outcome, self.new_amount)


def replay(queue: Queue, policy: Policy) -> list[Replay]:
    """Decide every snapshotted case again with `policy`, as of the day it was decided."""
    out = []
    for case in queue.cases():
        if not case.decision:
            continue
        order, charge, claim, old, today = snapshot.load(case.decision)
        new = decide(policy, claim, order, charge, today)
        out.append(Replay(case.ref, order.order_number, old.outcome.value, old.amount,
                          new.outcome.value, new.amount, " ".join(new.reasons)))
    return out


def write_comparison(path: Path, rows: list[Replay], policy_file: Path) -> Path:
    wb = Workbook()
    summary = wb.active
    if summary is None:  # a new workbook always has one sheet
        raise RuntimeError("openpyxl made a workbook without a sheet")
    summary.title = "Summary"
    changed = [r for r in rows if r.changed]
    lines: list[tuple[str, object]] = [
        ("Policy simulated", str(policy_file)),
        ("Cases replayed", len(rows)),
        ("Decisions that change", len(changed)),
        ("Refunded under the old decisions", sum((r.old_amount for r in rows
                                                  if r.old_outcome in ("refund", "partial")),
                                                 Decimal("0"))),
        ("Refunded under the new policy", sum((r.new_amount for r in rows
                                               if r.new_outcome in ("refund", "partial")),
                                              Decimal("0"))),
    ]
    moves = Counter(f"{r.old_outcome} -> {r.new_outcome}" for r in changed)
    lines += [(f"Changed {move}", n) for move, n in sorted(moves.items())]
    for i, (label, value) in enumerate(lines, start=1):
        write_cell(summary, i, 1, label).font = Font(bold=True)
        write_cell(summary, i, 2, value,
                   MONEY_FORMAT if isinstance(value, Decimal) else None)
    sheet = wb.create_sheet("Cases")
    headers = ["Case", "Order", "Old outcome", "Old amount", "New outcome", "New amount",
               "Changed", "Why (new policy)"]
    for col, title in enumerate(headers, start=1):
        write_cell(sheet, 1, col, title).font = Font(bold=True)
    for i, r in enumerate(sorted(rows, key=lambda r: (not r.changed, r.case_ref)), start=2):
        values = [r.case_ref, r.order_number, r.old_outcome, r.old_amount, r.new_outcome,
                  r.new_amount, "yes" if r.changed else "", r.new_reasons]
        for col, value in enumerate(values, start=1):
            write_cell(sheet, i, col, value, MONEY_FORMAT if isinstance(value, Decimal) else None)
    sheet.freeze_panes = "A2"
    sheet.auto_filter.ref = sheet.dimensions
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.xlsx")
    wb.save(tmp)
    tmp.replace(path)
    return path
