"""The report stage's listing: each business day is retried, and a day that still cannot be
read makes only the entries it could hide "unverified" (never "missing", never "OK")."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import bots.work.reconciling as reconciling
from bots.errors import AppUnavailable
from bots.models import PortalRefund
from bots.queue import Queue
from bots.reports.reconcile import ReconStatus
from bots.runs import RunFolder


class FakePayments:
    def __init__(self, listing: dict[date, list[PortalRefund]], failures: dict[date, int]):
        self.listing, self.failures, self.calls = listing, failures, []
        self.logins = 0

    async def login(self) -> None:  # the reconciliation logs in before it reads the listing
        self.logins += 1

    async def list_refunds(self, start: date, end: date) -> list[PortalRefund]:
        assert start == end, "one business day per export"
        self.calls.append(start)
        if self.failures.get(start, 0) > 0:
            self.failures[start] -= 1
            raise AppUnavailable(f"payment portal: HTTP 500 on the export of {start}")
        return self.listing.get(start, [])


class FakeContext:
    async def close(self) -> None:
        return None


class FakeSession:
    def __init__(self, payments: FakePayments) -> None:
        self.payments = payments

    async def worker(self, name: str) -> Any:
        return type("W", (), {"payments": self.payments, "context": FakeContext()})()


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_wait(_: float) -> None:
        return None
    monkeypatch.setattr(reconciling.asyncio, "sleep", no_wait)


def test_a_flaky_day_is_retried_and_a_dead_day_leaves_only_its_entries_unverified(
        tmp_path: Path) -> None:
    queue = Queue(f"sqlite:///{tmp_path / 'q.sqlite'}")
    today = datetime.now(UTC).date()
    yesterday = today - timedelta(days=1)
    run = RunFolder.create(tmp_path / "runs")
    run.started_at = datetime.combine(yesterday, datetime.min.time(), UTC)
    stranger = PortalRefund("RF-000077", Decimal("5.00"), "other", "goodwill", "jsmith",
                            datetime.now(UTC), "ORD-1", "EUR", "TX-1")
    payments = FakePayments({today: [stranger]}, {yesterday: 9, today: 1})
    try:
        rec = asyncio.run(reconciling.reconcile_run(queue, run, FakeSession(payments),
                                                    datetime.now(UTC)))
    finally:
        run.close()
    assert payments.calls.count(yesterday) == reconciling.LISTING_ATTEMPTS
    assert payments.calls.count(today) == 2  # failed once, read on the retry
    assert rec.unread_days == [yesterday] and "could not be read" in rec.notes[0]
    assert [r.status for r in rec.rows] == [ReconStatus.UNVERIFIED, ReconStatus.NOT_IN_LEDGER]
    assert rec.rows[0].day == yesterday  # the blind spot itself is a break, never "OK"
    assert rec.problems == 2 and {b.refund_id for b in rec.live} == {None, "RF-000077"}

    # The next reconciliation reads that day: its break closes by itself.
    payments.failures.clear()
    run2 = RunFolder.create(tmp_path / "runs")
    run2.started_at = run.started_at
    try:
        rec2 = asyncio.run(reconciling.reconcile_run(queue, run2, FakeSession(payments),
                                                     datetime.now(UTC)))
    finally:
        run2.close()
    assert [b.business_day for b in rec2.update.closed_by_match] == [yesterday.isoformat()]
    assert [b.refund_id for b in rec2.live] == ["RF-000077"]
