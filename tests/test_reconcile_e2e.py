"""The reconciliation against the real sandbox portal: double refunds are seen, whoever made
them and whenever they landed, and breaks live until a person resolves them."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bots.cli import app
from bots.queue import Queue
from bots.reports.report import read_report
from bots.sandbox.data import build_dataset
from bots.tools.demo import DEMO_SEED, prepare_inputs
from bots.work.exit_codes import EXIT_OK, EXIT_PROBLEMS
from bots.work.pipeline import execute

pytestmark = pytest.mark.e2e


def refund_by_hand(payments_db: Path, like: dict[str, object], reference: str,
                   operator: str = "jsmith") -> str:
    """A refund keyed in the portal by a person (or another system), now."""
    with sqlite3.connect(payments_db) as db:
        number = db.execute("SELECT coalesce(max(id), 0) + 1 FROM refunds").fetchone()[0]
        refund_id = f"RF-{number:06d}"
        db.execute("INSERT INTO refunds (id, refund_id, transaction_id, order_number, amount, "
                   "currency, reason, reference, operator, created_at) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (number, refund_id, like["transaction_id"], like["order_number"],
                    like["amount"], like["currency"], "other", reference, operator,
                    datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")))
    return refund_id


def first_run(sandbox, settings_for, tmp_path: Path):  # noqa: ANN001, ANN201
    today = date.today()
    prepare_inputs(tmp_path, build_dataset(seed=DEMO_SEED, today=today), today)
    settings = settings_for(sandbox)
    before = {r["refund_id"] for r in sandbox.refunds()}
    assert execute(settings, "run", intake=True, process=True, today=today) == EXIT_OK
    ours = [r for r in sandbox.refunds() if r["refund_id"] not in before]
    assert ours
    queue = Queue(settings.queue_url)
    run1 = queue.last_run_id()
    assert run1 is not None
    return settings, queue, run1, ours[0]


def book(settings, run_id: str) -> dict[str, list[dict[str, object]]]:  # noqa: ANN001
    return read_report(Path(settings.runs_dir) / run_id / "reconciliation.xlsx")


def test_a_second_refund_for_one_intent_is_a_duplicate_until_resolved(
        sandbox, settings_for, tmp_path: Path) -> None:
    settings, queue, run1, paid = first_run(sandbox, settings_for, tmp_path)
    again = refund_by_hand(sandbox.payments_db, paid, f"again {paid['reference']}")

    # Run 2 pays nothing new, but sees the double refund of run 1's intent: exit 3.
    assert execute(settings, "process", intake=False, process=True) == EXIT_PROBLEMS
    run2 = queue.last_run_id()
    assert run2 is not None and run2 != run1
    data = book(settings, run2)
    [dup] = [r for r in data["Reconciliation"] if r["Status"] == "duplicate"]
    assert dup["Portal refund id"] == again and paid["refund_id"] in str(dup["Note"])
    assert dup["Currency"] == paid["currency"]
    # Keyed in by hand, the portal did not check the balance: the charge is over-refunded;
    # and nobody wrote it on the order (the three-way check against the order notes).
    carried = {b["Kind"]: b for b in data["Breaks"]}
    assert set(carried) == {"duplicate", "over-refunded charge",
                            "refund without its order note"}
    assert all(b["State"] == "open" and b["Age (days)"] == 0 for b in carried.values())
    summary = {(r["Section"], r["Item"]): r["Value"] for r in data["Summary"]}
    assert "3 open break" in str(summary[("Result", "Reconciliation")])

    # Run 3 still carries them (the register, not the run, decides)...
    assert execute(settings, "process", intake=False, process=True) == EXIT_PROBLEMS
    assert sorted(b["Break"] for b in book(settings, queue.last_run_id() or "")["Breaks"]) == \
        sorted(b["Break"] for b in carried.values())
    # ...until a person resolves them; then the next run is clean again.
    env = {"REFUND_BOTS_QUEUE_URL": settings.queue_url}
    for b in carried.values():
        resolved = CliRunner().invoke(app, ["breaks", "resolve", str(b["Break"]), "--agent",
                                            "ana.ops", "-m", "customer paid the double back"],
                                      env=env)
        assert resolved.exit_code == 0, resolved.output
    assert execute(settings, "process", intake=False, process=True) == EXIT_OK
    last = book(settings, queue.last_run_id() or "")
    assert last["Breaks"] == []
    settled = [r for r in last["Reconciliation"] if r["Status"] == "duplicate"]
    assert settled and "resolved by ana.ops" in str(settled[0]["Break"])
    assert queue.verify_chain().ok


def test_a_refund_landing_after_the_runs_window_is_a_duplicate(
        sandbox, settings_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, queue, run1, paid = first_run(sandbox, settings_for, tmp_path)
    # After run 1 finished, someone refunds the same order again by hand, without the key.
    late = refund_by_hand(sandbox.payments_db, paid, "goodwill, customer called")
    for name, value in {"REFUND_BOTS_QUEUE_URL": settings.queue_url,
                        "REFUND_BOTS_RUNS_DIR": str(settings.runs_dir),
                        "REFUND_BOTS_PAYMENTS_URL": settings.payments.url,
                        "REFUND_BOTS_ORDERS_URL": settings.orders.url}.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["report", run1])
    assert result.exit_code == EXIT_PROBLEMS, result.output
    [dup] = [r for r in book(settings, run1)["Reconciliation"] if r["Status"] == "duplicate"]
    assert dup["Portal refund id"] == late and "more than the" in str(dup["Note"])
    assert dup["Case"]  # attributed to the case it over-pays


def test_the_schedulers_report_job_reconciles_and_writes_the_workbook(
        sandbox, settings_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`schedule`'s report job (an end-of-day reconciliation) used to write nothing."""
    from rich.console import Console

    from bots.work import scheduler as scheduling

    settings = settings_for(sandbox, intake={"sources": []})
    monkeypatch.setattr(scheduling, "load_settings", lambda _config: settings)  # each job's
    scheduler = scheduling.Scheduler(settings, None, Console(width=200))
    first = scheduler.run_job("report")
    queue = Queue(settings.queue_url)
    run1 = queue.last_run_id()
    assert run1 is not None and (Path(settings.runs_dir) / run1 / "reconciliation.xlsx").exists()
    with sqlite3.connect(sandbox.payments_db) as db:
        charge = dict(zip(("transaction_id", "order_number", "amount", "currency"), db.execute(
            "SELECT transaction_id, order_number, '1.00', currency FROM transactions "
            "LIMIT 1").fetchone(), strict=True))
    keyed = refund_by_hand(sandbox.payments_db, charge, "keyed in by hand today")
    assert scheduler.run_job("report") == EXIT_PROBLEMS  # a refund nobody decided: a break
    run2 = queue.last_run_id()
    assert run2 not in (None, run1)
    rows = [r for sheet in book(settings, run2).values() for r in sheet]
    assert any(keyed in str(r.values()) for r in rows)
    assert first in (EXIT_OK, EXIT_PROBLEMS)  # the seeded day may hold breaks of its own
