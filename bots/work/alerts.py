"""Which conditions alert ops staff, checked after every run and by `refund-bots alerts check`.

- a run that exited 1 (could not run), 3 (failed cases or sources, reconciliation
  problems) or 4 (circuit breaker): `alerts.exit_codes`;
- reconciliation breaks found by the run's report;
- escalations waiting longer than the SLA (`console.sla_hours`);
- customer notifications the bot gave up on (never delivered);
- a forecast spike: this week far above what the history predicted, per channel or reason.

Each links to the console page to look at. Alerts never fail a run: a broken channel is
logged and recorded on the alert's row.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from loguru import logger
from sqlalchemy import func, select

from bots.alerts import Alert, Alerter, Sent
from bots.config import Settings
from bots.queue import Case, CaseState, NotificationRow, NotificationState, Queue, utcnow
from bots.work.exit_codes import EXIT_CIRCUIT, EXIT_ERROR, EXIT_PROBLEMS

EXIT_CONDITIONS = {
    EXIT_ERROR: ("run_failed", "could not run (settings, browser, sandbox, database)",
                 "critical"),
    EXIT_PROBLEMS: ("run_problems", "ran, but cases or sources failed or the reconciliation "
                    "found problems", "warning"),
    EXIT_CIRCUIT: ("circuit_breaker", "was stopped by the circuit breaker: the legacy apps "
                   "kept failing, the remaining cases stay queued", "critical"),
}


def alerter(settings: Settings) -> Alerter | None:
    if settings.alerts is None or not settings.alerts.enabled:
        return None
    return Alerter(settings.queue_url, settings.alerts)


def after_run(settings: Settings, run_id: str, command: str, code: int,
              stats: dict[str, Any]) -> list[Sent]:
    """The alerts a finished run raises, plus the queue's standing conditions."""
    sender = alerter(settings)
    if sender is None:
        return []
    try:
        found = run_conditions(settings, run_id, command, code, stats)
        found += queue_conditions(settings, Queue(settings.queue_url))
        return _send(sender, found)
    except Exception as exc:  # noqa: BLE001 - an alert must never fail the run it reports
        logger.opt(exception=exc).error("alerts after run {} failed: {}", run_id, exc)
        return []


def check(settings: Settings, *, forecast: bool = True,
          now: datetime | None = None) -> list[Sent]:
    """The standing conditions now (for the scheduler, cron, `refund-bots alerts check`)."""
    sender = alerter(settings)
    if sender is None:
        return []
    queue = Queue(settings.queue_url)
    found = queue_conditions(settings, queue, now)
    if forecast:
        found += forecast_conditions(settings, queue, now)
    return _send(sender, found, now)


def _send(sender: Alerter, alerts: list[Alert], now: datetime | None = None) -> list[Sent]:
    return [sent for a in alerts if (sent := sender.send(a, now)) is not None]


def run_conditions(settings: Settings, run_id: str, command: str, code: int,
                   stats: dict[str, Any]) -> list[Alert]:
    assert settings.alerts is not None
    link = settings.console.link(f"/runs#{run_id}")
    out: list[Alert] = []
    if code in settings.alerts.exit_codes:
        condition, meaning, severity = EXIT_CONDITIONS.get(
            code, (f"run_exit_{code}", f"exited with status {code}", "warning"))
        out.append(Alert(condition, f"Run {run_id} ({command}) exited {code}",
                         f"Run {run_id} ({command}) {meaning}. Exit status {code}; its log, "
                         f"report and screenshots are on the runs page.", link,
                         severity,  # type: ignore[arg-type]
                         {"run_id": run_id, "command": command, "exit_code": code}))
    problems = int(stats.get("reconciliation_problems") or 0)
    if problems:
        out.append(Alert("reconciliation_breaks",
                         f"Run {run_id}: {problems} reconciliation problem(s)",
                         f"The bot's ledger and the payment portal disagree on {problems} "
                         f"refund(s) in run {run_id}: see the report's Reconciliation sheet.",
                         link, "critical", {"run_id": run_id, "problems": problems}))
    return out


def queue_conditions(settings: Settings, queue: Queue,
                     now: datetime | None = None) -> list[Alert]:
    now = now or utcnow()
    sla = timedelta(hours=settings.console.sla_hours)
    with queue.session() as s:
        late = s.scalar(select(func.count(Case.id)).where(
            Case.state == CaseState.ESCALATED, Case.updated_at < now - sla)) or 0
        oldest = s.scalar(select(func.min(Case.updated_at)).where(
            Case.state == CaseState.ESCALATED))
        undeliverable = s.scalar(select(func.count(NotificationRow.id)).where(
            NotificationRow.state == NotificationState.GAVE_UP)) or 0
    out: list[Alert] = []
    if late:
        waited = (now - oldest).total_seconds() / 3600 if oldest else 0.0
        out.append(Alert("escalations_past_sla",
                         f"{late} escalation(s) past the {settings.console.sla_hours:g} h SLA",
                         f"{late} escalated case(s) have waited longer than "
                         f"{settings.console.sla_hours:g} hours for a decision (the oldest "
                         f"{waited:.0f} h).", settings.console.link("/inbox?overdue=1"),
                         "warning", {"count": late}))
    if undeliverable:
        out.append(Alert("notifications_undeliverable",
                         f"{undeliverable} customer notification(s) could not be delivered",
                         f"The bot gave up sending {undeliverable} message(s) to customers "
                         "after repeated failures: they never heard back.",
                         settings.console.link("/queue#notifications"), "warning",
                         {"count": undeliverable}))
    return out


def forecast_conditions(settings: Settings, queue: Queue,
                        now: datetime | None = None) -> list[Alert]:
    """A series running far above its forecast this week (an early defect or fraud sign)."""
    from bots.console.forecast import forecast_all

    assert settings.alerts is not None
    try:
        result = forecast_all(queue, today=(now or utcnow()).date())
    except Exception as exc:  # noqa: BLE001 - too little or odd history: no forecast alert
        logger.warning("forecast for alerts failed: {}", exc)
        return []
    out = []
    for spike in result.spikes(settings.alerts.spike_ratio, settings.alerts.spike_min):
        out.append(Alert(f"forecast_spike:{spike.series}"[:60],
                         f"Spike in {spike.series}: {spike.actual:.0f} requests this week, "
                         f"forecast {spike.expected:.0f}",
                         f"{spike.series} runs {spike.ratio:.1f}x above its forecast this week "
                         f"({spike.actual:.0f} requests so far against {spike.expected:.0f} "
                         f"expected by now). A spike in one reason or channel is the classic "
                         f"early warning of a product defect or a fraud ring.",
                         settings.console.link("/forecast"), "warning",
                         {"series": spike.series, "actual": spike.actual,
                          "expected": round(spike.expected, 1)}))
    return out
