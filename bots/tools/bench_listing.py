"""`refund-bots bench listing`: a busy day's refunds reconcile with the default settings.

Starts a sandbox, keys N refunds into its payment portal for today (another system's bulk
refunds, each written up on its order as a person would), and writes a run's report with
the default settings (browser timeout, listing retries, three-way check against the order
notes) through Chromium, the way `refund-bots report` does. It reports how long each
stage took and how many rows were left "not verified": the listing is read one business
day per export, so a day must fit the browser's timeout.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bots.config import load_settings
from bots.legacy.session import BotSession
from bots.queue import Queue
from bots.reports.reconcile import ReconStatus
from bots.runs import RunFolder
from bots.tools.demo import DEMO_SEED, demo_overrides, use_sandbox_credentials

OPERATOR = "bulk.import"


@dataclass(frozen=True)
class ListingBench:
    refunds: int
    listed: int
    seconds: float  # the whole report: listing, ledger, three-way, breaks, workbook
    listing_seconds: float  # the day's export alone, read by the page object
    statuses: dict[str, int]

    @property
    def unverified(self) -> int:
        return sum(n for s, n in self.statuses.items() if s.startswith("not verified"))


def seed_refunds(payments_db: Path, orders_db: Path, n: int, day: date) -> None:
    """N refunds on the sandbox's charges, spread over `day`, each noted on its order."""
    start = datetime.combine(day, datetime.min.time())
    with sqlite3.connect(payments_db) as pay, sqlite3.connect(orders_db) as orders:
        charges = pay.execute("SELECT transaction_id, order_number, currency FROM transactions "
                              "ORDER BY transaction_id").fetchall()
        first = pay.execute("SELECT coalesce(max(id), 0) + 1 FROM refunds").fetchone()[0]
        refunds, notes = [], []
        for i in range(n):
            txn, order, currency = charges[i % len(charges)]
            number = first + i
            rid = f"RF-{number:06d}"
            at = (start + timedelta(seconds=(i * 86_399) // max(n, 1))).strftime(
                "%Y-%m-%d %H:%M:%S")
            refunds.append((number, rid, txn, order, "0.01", currency, "other",
                            f"bulk {i}", OPERATOR, at))
            notes.append((order, OPERATOR, f"Bulk refund 0.01 {currency} ({rid}).", at))
        pay.executemany("INSERT INTO refunds (id, refund_id, transaction_id, order_number, "
                        "amount, currency, reason, reference, operator, created_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", refunds)
        orders.executemany("INSERT INTO notes (order_number, author, body, created_at) "
                           "VALUES (?, ?, ?, ?)", notes)


def bench_listing(n: int) -> ListingBench:
    from bots.sandbox.server import SandboxProcess
    from bots.work.pipeline import write_run_report

    use_sandbox_credentials()
    today = datetime.now(UTC).date()
    with tempfile.TemporaryDirectory(prefix="bench-listing-") as tmp, \
            SandboxProcess(data_dir=Path(tmp) / "sandbox", seed=DEMO_SEED, today=today) as sb:
        seed_refunds(sb.payments_db, sb.orders_db, n, today)
        overrides = demo_overrides(Path(tmp), sb.orders_url, sb.payments_url)
        overrides.pop("intake__sources")
        settings = load_settings(None, runs_dir=str(Path(tmp) / "runs"), **overrides)
        queue = Queue(settings.queue_url)
        run = RunFolder.create(settings.runs_dir)

        async def go() -> tuple[float, float, int, list[str]]:
            async with BotSession(settings) as session:
                worker = await session.worker("bench-listing")
                try:
                    await worker.payments.login()
                    t0 = time.perf_counter()
                    listed = await worker.payments.list_refunds(today, today)
                    alone = time.perf_counter() - t0
                finally:
                    await worker.context.close()
                t0 = time.perf_counter()
                report = await write_run_report(settings, queue, run, session)
                return (time.perf_counter() - t0, alone, len(listed),
                        [str(r.status) for r in report.recon])

        try:
            seconds, alone, listed, statuses = asyncio.run(go())
        finally:
            run.close()
        counts = Counter(statuses)
        return ListingBench(n, listed, seconds, alone,
                            {str(s): counts.get(str(s), 0) for s in ReconStatus})
