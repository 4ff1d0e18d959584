"""A flaky legacy back-office: 500s, expiring sessions, maintenance. Nobody is paid twice."""

from __future__ import annotations

from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from paths import SELECTORS
from typer.testing import CliRunner

from bots.cli import app
from bots.decide.policy import load_policy
from bots.legacy.artifacts import zip_contains
from bots.queue import CaseState, IntentState, Queue
from bots.queue.staff import Staff
from bots.sandbox.data import build_dataset
from bots.sandbox.server import DEFAULT_ORDERS_USERS, DEFAULT_PAYMENTS_USERS
from bots.tools.chaos import expected_refunds
from bots.tools.demo import DEMO_SEED, prepare_inputs
from bots.work.exit_codes import EXIT_CIRCUIT, EXIT_OK
from bots.work.pipeline import execute

pytestmark = pytest.mark.e2e


def _inputs(tmp_path: Path):  # noqa: ANN202
    today = date.today()
    ds = build_dataset(seed=DEMO_SEED, today=today)
    return ds, prepare_inputs(tmp_path, ds, today), today


def test_session_expiry_is_survived_with_a_new_login(sandbox, settings_for,
                                                     tmp_path: Path) -> None:
    ds, reqs, today = _inputs(tmp_path)
    sandbox.set_faults(session_max_requests=4)
    settings = settings_for(sandbox)
    assert execute(settings, "run", intake=True, process=True, today=today) == EXIT_OK
    paid = {r["order_number"]: Decimal(r["amount"]) for r in sandbox.refunds()
            if r["operator"] == "refund.bot"}
    assert paid == expected_refunds(ds, reqs, load_policy(settings.policy))
    assert len([r for r in sandbox.refunds() if r["operator"] == "refund.bot"]) == len(paid)


def test_a_failed_confirmation_page_does_not_cost_an_attempt(sandbox, settings_for,
                                                           tmp_path: Path) -> None:
    """The refund is made, then its confirmation page answers 500: the number is in the URL."""
    ds, reqs, today = _inputs(tmp_path)
    sandbox.set_faults(error_rate=1.0, error_paths=r"^/refunds/RF-")
    settings = settings_for(sandbox)
    assert execute(settings, "run", intake=True, process=True, today=today) == EXIT_OK
    ours = [r for r in sandbox.refunds() if r["operator"] == "refund.bot"]
    assert {r["order_number"]: Decimal(r["amount"]) for r in ours} == expected_refunds(
        ds, reqs, load_policy(settings.policy))
    assert len(ours) == len({r["order_number"] for r in ours})
    queue = Queue(settings.queue_url)
    paid = [c for c in queue.cases() if c.outcome in ("refunded", "partial")]
    assert paid and all(c.attempts == 1 for c in paid)
    numbers = {i.refund_number for c in paid for i in queue.intents(c.id)}
    assert numbers == {r["refund_id"] for r in ours}


def test_twenty_percent_failures_and_expiry_complete_every_case_without_duplicates(
        sandbox, settings_for, tmp_path: Path) -> None:
    ds, reqs, today = _inputs(tmp_path)
    sandbox.set_faults(error_rate=0.2, session_max_requests=15, seed=5)
    # No hung requests here: a submit that got no answer (a 500 mid-navigation) waits a
    # short grace, within the run's 2 s retry horizon, before its history counts as final.
    settings = settings_for(sandbox, processing={
        "max_attempts": 6, "backoff_seconds": 0.2, "backoff_max_seconds": 2,
        "circuit_breaker": 100, "submit_grace_seconds": 1})
    execute(settings, "run", intake=True, process=True, today=today)

    ours = [r for r in sandbox.refunds() if r["operator"] == "refund.bot"]
    per_order = Counter(r["order_number"] for r in ours)
    assert all(n == 1 for n in per_order.values()), f"paid twice: {per_order}"
    expected = expected_refunds(ds, reqs, load_policy(settings.policy))
    assert all(Decimal(r["amount"]) == expected[r["order_number"]] for r in ours)

    cases = Queue(settings.queue_url).cases()
    for case in cases:
        finished = case.state in (CaseState.DONE, CaseState.ESCALATED, CaseState.MERGED)
        waiting = case.state in (CaseState.QUEUED, CaseState.FAILED) and case.last_error
        assert finished or waiting, f"{case.ref} {case.state} without a reason"
    intents = [(c, i) for c in cases for i in Queue(settings.queue_url).intents(c.id)
               if i.state != IntentState.ABSENT]
    assert set(per_order) <= {i.order_number for _, i in intents}  # every refund is in the ledger
    for case, intent in intents:  # and an intent without a refund is one not known yet
        if intent.order_number not in per_order:
            assert intent.state == IntentState.PENDING, intent
            assert case.state in (CaseState.QUEUED, CaseState.FAILED), case.ref

    run_dir = next((tmp_path / "runs").iterdir())
    traces = list((run_dir / "traces").glob("*.zip"))
    assert traces and list((run_dir / "screenshots").glob("*.png"))
    secrets = [*DEFAULT_ORDERS_USERS.values(), *DEFAULT_PAYMENTS_USERS.values()]
    assert not any(zip_contains(t, s) for t in traces for s in secrets)

    # The faults go away; ops queue again what the bot gave up on (6 attempts at a 20 %
    # error rate can all fail), and the next run finishes everything, paying no one twice.
    sandbox.set_faults(error_rate=0.0, session_max_requests=None)
    Staff.on(Queue(settings.queue_url)).add_user("ana.ops", "agent", "a long enough password")
    retried = CliRunner().invoke(app, ["cases", "retry", "--all-failed", "--agent", "ana.ops",
                                       "-m", "portal outage over"],
                                 env={"REFUND_BOTS_QUEUE_URL": settings.queue_url})
    assert retried.exit_code == 0, retried.output
    execute(settings, "process", intake=False, process=True, today=today)
    ours = [r for r in sandbox.refunds() if r["operator"] == "refund.bot"]
    assert {r["order_number"]: Decimal(r["amount"]) for r in ours} == expected
    assert len(ours) == len(expected)
    queue = Queue(settings.queue_url)  # the pending intents were settled: the ledger is exact
    assert {i.order_number for c in queue.cases() for i in queue.intents(c.id)
            if i.state == IntentState.CONFIRMED} == set(expected)


def test_maintenance_page_opens_the_circuit_breaker(sandbox, settings_for,
                                                    tmp_path: Path) -> None:
    _, _, today = _inputs(tmp_path)
    sandbox.set_faults(maintenance=True)
    settings = settings_for(sandbox, processing={"circuit_breaker": 3, "step_retries": 0})
    assert execute(settings, "run", intake=True, process=True, today=today) == EXIT_CIRCUIT
    queue = Queue(settings.queue_url)
    assert queue.pending_count() == len([c for c in queue.cases()
                                         if c.state != CaseState.MERGED])
    assert not [r for r in sandbox.refunds() if r["operator"] == "refund.bot"]


def test_a_note_that_does_not_appear_on_the_order_is_a_system_error(
        sandbox, settings_for, tmp_path: Path) -> None:
    """Writes are verified: a note the order does not show afterwards fails the case's
    follow-up (the refund itself is made once and recorded), it is never taken as written."""
    ds, reqs, today = _inputs(tmp_path)
    orders = yaml.safe_load((SELECTORS / "orders.yaml").read_text(encoding="utf-8"))
    orders["order"]["notes"] = "#notes li.note-by-another-name"  # never lists the new note
    orders["recognise_ms"] = 500
    blind = tmp_path / "orders.yaml"
    blind.write_text(yaml.safe_dump(orders), encoding="utf-8")
    settings = settings_for(sandbox, orders__selectors=str(blind),
                            processing={"max_attempts": 2, "backoff_seconds": 0,
                                        "backoff_max_seconds": 0, "circuit_breaker": 100})
    execute(settings, "run", intake=True, process=True, today=today)

    expected = expected_refunds(ds, reqs, load_policy(settings.policy))
    ours = [r for r in sandbox.refunds() if r["operator"] == "refund.bot"]
    assert {r["order_number"]: Decimal(r["amount"]) for r in ours} == expected
    assert len(ours) == len(expected)  # retried, never paid twice
    cases = {c.order_number: c for c in Queue(settings.queue_url).cases()}
    for number in expected:
        case = cases[number]
        assert case.state == CaseState.FAILED, case.ref
        assert "was issued, but the follow-up failed" in (case.reason or "")
        assert "does not appear on the order" in (case.last_error or "")
