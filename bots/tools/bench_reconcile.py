"""`refund-bots bench reconcile` and `bench report`: how the reconciliation scales.

A busy day is tens of thousands of refunds; a quarter's review is millions. The
reconciliation must stay linear (hash joins) and the workbook must be streamed, so both
are measured on generated data: the generation is not timed, the work is, median of
`repeat` passes.
"""

from __future__ import annotations

import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from bots.models import PortalRefund
from bots.reports.reconcile import LedgerEntry, ReconRow, reconcile, summarise
from bots.reports.report import CaseRow, RunInfo, write_report

CURRENCIES = ("EUR", "GBP", "USD")


@dataclass(frozen=True)
class ReconcileBench:
    n: int
    seconds: list[float]  # wall clock
    cpu: list[float]  # this process's CPU time (what a loaded, shared machine distorts least)
    problems: int

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


def generate(n: int, seed: int = 1) -> tuple[list[LedgerEntry], list[PortalRefund]]:
    """n ledger entries and n portal refunds: mostly matched, a few of every break."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    ledger: list[LedgerEntry] = []
    portal: list[PortalRefund] = []
    for i in range(n):
        key = f"C{i:07d}-{rng.getrandbits(32):08x}"
        cents = rng.randint(100, 50_000)
        amount = Decimal(cents).scaleb(-2)
        cur = CURRENCIES[i % 3]
        at = start + timedelta(seconds=i * 2)
        number = f"RF-{i:07d}"
        roll = rng.random()
        ledger.append(LedgerEntry(f"C-{i:06d}", f"ORD-{i:07d}", key, amount, "confirmed",
                                  number, currency=cur, transaction_id=f"TX-{i}", created_at=at))
        if roll < 0.002:  # missing in the portal; a stranger's refund instead
            portal.append(PortalRefund(f"RF-X{i:07d}", amount, "other", "goodwill", "jsmith",
                                       at, f"ORD-X{i}", cur, f"TX-X{i}"))
            continue
        paid = amount + Decimal("1.00") if roll < 0.004 else amount
        ref = f"phone {key}" if roll < 0.01 else key
        portal.append(PortalRefund(number, paid, "damaged", ref, "refund.bot", at,
                                   f"ORD-{i:07d}", cur, f"TX-{i}"))
    rng.shuffle(portal)
    return ledger, portal


def bench_reconcile(n: int, repeat: int = 3) -> ReconcileBench:
    ledger, portal = generate(n)
    seconds: list[float] = []
    cpu: list[float] = []
    problems = 0
    for _ in range(repeat):
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        rows = reconcile(ledger, portal)
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        problems = sum(n for s, n in summarise(rows).items() if s != "matched")
        del rows
    return ReconcileBench(n, seconds, cpu, problems)


@dataclass(frozen=True)
class ReportBench:
    cases: int
    seconds: list[float]  # wall clock, untraced passes
    cpu: list[float]  # this process's CPU time, same passes
    peak_mb: float
    size_mb: float

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


def generate_cases(n: int, seed: int = 2) -> tuple[list[CaseRow], list[ReconRow]]:
    rng = random.Random(seed)
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    cases, ledger, portal = [], [], []
    for i in range(n):
        cur = CURRENCIES[i % 3]
        amount = Decimal(rng.randint(100, 50_000)).scaleb(-2)
        outcome = rng.choice(("refunded", "partial", "rejected", "escalated", "refunded"))
        received = now - timedelta(hours=rng.randint(1, 400))
        paid = outcome in ("refunded", "partial")
        cases.append(CaseRow(
            case_ref=f"C-{i:06d}", channels=rng.choice(("email", "chat", "email, phone")),
            customer=f"Customer {i}", customer_email=f"c{i}@example.com",
            order_number=f"ORD-{i:07d}", requested=amount, approved=amount if paid else None,
            refund_number=f"RF-{i:07d}" if paid else None, outcome=outcome,
            reason="Within the refund window; damaged on arrival, refund the item line.",
            attempts=1, sources=1, currency=cur, received_at=received, decided_at=now,
            reason_category="damaged",
            proposal=amount if outcome == "escalated" else None))
        if paid:
            key = f"C{i:06d}-{i:08x}"
            ledger.append(LedgerEntry(f"C-{i:06d}", f"ORD-{i:07d}", key, amount, "confirmed",
                                      f"RF-{i:07d}", currency=cur, created_at=now))
            portal.append(PortalRefund(f"RF-{i:07d}", amount, "damaged", key, "refund.bot",
                                       now, f"ORD-{i:07d}", cur))
    return cases, reconcile(ledger, portal)


def bench_report(n: int, repeat: int = 3) -> ReportBench:
    cases, recon = generate_cases(n)
    info = RunInfo("bench", datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 1, 1, tzinfo=UTC),
                   "http://orders", "http://payments")
    seconds: list[float] = []
    cpu: list[float] = []
    peak = size = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        path = Path(tmp) / "reconciliation.xlsx"
        for i in range(repeat + 1):
            gc.collect()
            if i == 0:  # memory is measured once, in an extra pass: tracing slows writing
                tracemalloc.start()
            t0, c0 = time.perf_counter(), time.process_time()
            write_report(path, info, cases, recon, [])
            elapsed, used = time.perf_counter() - t0, time.process_time() - c0
            if i == 0:
                peak = tracemalloc.get_traced_memory()[1] / 1e6
                tracemalloc.stop()
            else:
                seconds.append(elapsed)
                cpu.append(used)
            size = path.stat().st_size / 1e6
    return ReportBench(n, seconds, cpu, peak, size)


# -- before/after, side by side --------------------------------------------------------------

_CHILD = """
import gc, json, resource, sys, tempfile, time, tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from bots.reports.report import RunInfo, write_report
from bots.tools.bench_reconcile import generate_cases
n, traced = int(sys.argv[1]), sys.argv[2] == "1"
cases, recon = generate_cases(n)
info = RunInfo("bench", datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 1, 1, tzinfo=UTC),
               "http://orders", "http://payments")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
    gc.collect()
    if traced:
        tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    write_report(Path(tmp) / "r.xlsx", info, cases, recon, [])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = tracemalloc.get_traced_memory()[1] / 1e6 if traced else 0.0
    size = (Path(tmp) / "r.xlsx").stat().st_size / 1e6
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"wall": wall, "cpu": cpu, "peak_mb": peak, "size_mb": size,
                  "rss_growth_mb": max(rss - base, 0) / 1024}))
"""


@dataclass
class SideBySide:
    label: str
    wall: list[float]
    cpu: list[float]
    peak_mb: float = 0.0  # Python allocations while writing (tracemalloc, its own pass)
    rss_growth_mb: list[float] | None = None  # the process's peak RSS growth while writing
    size_mb: float = 0.0


def bench_report_against(n: int, before: str, repeat: int = 3) -> list[SideBySide]:
    """The workbook for n cases written by git revision `before` and by this code, each pass
    in a fresh process, alternately (before, after, before, after...): medians that a
    shared machine's load distorts alike. Memory is measured in one extra traced pass each.
    """
    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(prefix="bench-before-") as tmp:
        archive = subprocess.run(["git", "-C", str(root), "archive", before, "bots"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        sides = [SideBySide(f"before ({before})", [], [], rss_growth_mb=[]),
                 SideBySide("after (this code)", [], [], rss_growth_mb=[])]
        paths = [tmp, str(root)]
        for i in range(repeat + 1):
            for side, path in zip(sides, paths, strict=True):
                env = {**os.environ, "PYTHONPATH": path}
                out = subprocess.run([sys.executable, "-c", _CHILD, str(n), "1" if i == 0 else "0"],
                                     check=True, capture_output=True, text=True, env=env,
                                     cwd=path).stdout
                got = json.loads(out.strip().splitlines()[-1])
                side.size_mb = got["size_mb"]
                if i == 0:
                    side.peak_mb = got["peak_mb"]
                    continue
                side.wall.append(got["wall"])
                side.cpu.append(got["cpu"])
                assert side.rss_growth_mb is not None
                side.rss_growth_mb.append(got["rss_growth_mb"])
    return sides
