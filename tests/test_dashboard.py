"""Dashboard numbers, charts and the forecast, from a generated history."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
from paths import ROOT

from bots.config import load_settings
from bots.console import charts, metrics
from bots.console.app import create_app
from bots.console.forecast import compute, forecast_series
from bots.models import RefundRequest
from bots.queue import Queue
from bots.queue.staff import Staff
from bots.tools.history import generate_history

TODAY = date(2026, 12, 1)


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    return Queue(f"sqlite:///{tmp_path / 'q.sqlite'}")


def test_metrics_from_a_generated_history(queue: Queue) -> None:
    made = generate_history(queue, 30, today=TODAY, per_day=10)
    assert made.cases > 150 and made.followups > 0
    m = metrics.compute(queue, days=40, now=datetime.combine(TODAY, time(), tzinfo=UTC))
    assert m.finished >= made.cases and 0.8 < (m.auto_resolution_rate or 0) < 1.0
    assert m.escalated_finished > 0 and m.human_wait_hours and m.human_wait_hours > 0.5
    assert m.bot_hours is not None and m.bot_hours < (m.handling_hours or 0)
    assert 0 < (m.follow_up_rate or 0) < 0.2
    assert set(m.by_category) <= {"apparel", "electronics", "home", "beauty"}
    assert abs(sum(m.by_category.values()) - float(m.refunded_total)) < 0.01
    assert sum(m.by_channel.values()) == pytest.approx(float(m.refunded_total))
    assert sum(m.failures_by_day.values()) > 0 and m.escalation_reasons
    svg = charts.dashboard(m)
    assert all(s.startswith("<svg") and "<script" not in s for s in svg.values())


def test_chart_labels_are_escaped() -> None:
    svg = charts.bars("t", {'<script>alert(1)</script>"><img onerror=x>': 3.0})
    assert "<script>" not in svg and "<img" not in svg and "&lt;script&gt;" in svg


def test_empty_queue_renders_without_numbers(queue: Queue) -> None:
    m = metrics.compute(queue, days=7)
    assert m.auto_resolution_rate is None and m.handling_hours is None
    assert compute(queue, TODAY).total is None


def test_seasonal_naive_forecast_and_its_backtest() -> None:
    import pandas as pd

    index = pd.date_range(end="2026-11-30", periods=20, freq="D")
    weekly = pd.Series([10, 8, 8, 8, 6, 2, 1] * 3, dtype=float)[:20]
    weekly.index = index
    fc = forecast_series("requests: all", "requests", weekly, spike_check=True)
    assert fc.model.startswith("seasonal naive") and fc.mae == 0.0
    assert fc.path.iloc[:7].tolist() == weekly.iloc[-7:].tolist()  # same weekday last week
    assert fc.week_expected == fc.week_actual  # a perfectly regular week: no spike


@pytest.mark.timeout(180)  # statsmodels' import and fits take seconds on a busy machine
def test_forecast_from_history_and_a_spike_in_one_reason(queue: Queue) -> None:
    generate_history(queue, 42, today=TODAY, per_day=12)
    for i in range(40):  # a defect: "damaged" this week, far above its usual ~3 a day
        day = TODAY - timedelta(days=1 + i % 6)
        queue.add_request(RefundRequest(
            channel="email", source_id=f"spike-{i}", order_number=f"ORD-9{i:05d}",
            received_at=datetime.combine(day, time(12), tzinfo=UTC), reason_text="broken",
            reason_category="damaged", customer_email=f"s{i}@example.com"))
    result = compute(queue, TODAY)
    assert result.total is not None and result.total.next7 > 0 and result.total.next28 > 0
    assert result.total.mae is not None and result.total.mape is not None
    names = {s.name for s in result.series}
    assert {"requests: channel email", "requests: reason damaged", "amount: all"} <= \
        names | {"amount: all"}
    spikes = {s.series for s in result.spikes(1.5, 10)}
    assert "reason damaged" in spikes and "reason late" not in spikes
    assert charts.forecast_chart(result.total).startswith("<svg")


def test_dashboard_and_forecast_pages_render(queue: Queue, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    generate_history(queue, 10, per_day=5)
    Staff.on(queue).add_user("vic", "viewer", "a long enough password")
    settings = load_settings(None, queue_url=queue.url, runs_dir=str(tmp_path / "runs"))
    client = create_app(settings, secret_key="k").test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert token
    client.post("/login", data={"csrf_token": token.group(1), "username": "vic",
                                "password": "a long enough password"})
    page = client.get("/dashboard?days=30")
    assert page.status_code == 200 and 'id="kpis"' in page.text and "<script" not in page.text
    assert client.get("/forecast").status_code == 200
