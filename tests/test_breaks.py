"""The open-break register: breaks are carried forward, with their age, until a person
resolves them; every change is audited; agent and comment are required."""

from __future__ import annotations

import threading
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from postgres import Postgres, blocked_on_a_lock
from typer.testing import CliRunner

import bots.queue.breaks
from bots.cli import app
from bots.queue import BreakError, BreakState, Queue, Sighting


def sighting(key: str = "refund:RF-000009", kind: str = "duplicate") -> Sighting:
    return Sighting(key=key, kind=kind, case_ref="C-000001", order_number="ORD-100001",
                    reference="C000001-8f3a1c2b", refund_id="RF-000009", transaction_id="TX-1",
                    currency="EUR", ledger_amount=Decimal("10.00"),
                    portal_amount=Decimal("10.00"), day=date(2026, 12, 1),
                    note="second refund for key C000001-8f3a1c2b")


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    return Queue(f"sqlite:///{tmp_path / 'q.sqlite'}")


def test_a_break_is_carried_forward_until_resolved(queue: Queue) -> None:
    first = queue.record_breaks("run-1", [sighting()], [])
    assert len(first.new) == 1 and first.opening == []
    ref = first.new[0].ref
    second = queue.record_breaks("run-2", [], [])  # run 2 does not see it: still open
    assert [b.ref for b in second.opening] == [ref] and not second.new
    assert [b.ref for b in queue.live_breaks()] == [ref]
    again = queue.record_breaks("run-3", [sighting()], [])
    assert not again.new and again.states["refund:RF-000009"].first_seen_run == "run-1"
    queue.resolve_break(ref, agent="ana", comment="customer repaid the second refund")
    assert queue.live_breaks() == []
    later = queue.record_breaks("run-4", [sighting()], [])  # seen again: stays resolved
    assert not later.new and later.states["refund:RF-000009"].state == BreakState.RESOLVED
    events = [a.event for a in queue.subject_trail(f"break:{ref}")]
    assert events == ["break_opened", "break_resolved"]
    assert queue.verify_chain().ok


def test_a_break_that_later_matches_is_closed_by_the_reconciliation(queue: Queue) -> None:
    key = "intent:C000001-8f3a1c2b"
    ref = queue.record_breaks("run-1", [sighting(key, "missing in portal")], []).new[0].ref
    update = queue.record_breaks("run-2", [], [key])
    assert [b.ref for b in update.closed_by_match] == [ref]
    assert queue.get_break(ref).resolved_by == "reconciliation"  # type: ignore[union-attr]


@pytest.mark.parametrize(("agent", "comment"), [("", "why"), ("ana", ""), ("  ", " ")])
def test_settling_needs_an_agent_and_a_reason(queue: Queue, agent: str, comment: str) -> None:
    ref = queue.record_breaks("run-1", [sighting()], []).new[0].ref
    with pytest.raises(BreakError):
        queue.resolve_break(ref, agent=agent, comment=comment)
    assert queue.live_breaks()[0].ref == ref


def test_breaks_commands(queue: Queue) -> None:
    ref = queue.record_breaks("run-1", [sighting()], []).new[0].ref
    env = {"REFUND_BOTS_QUEUE_URL": queue.url, "COLUMNS": "250"}
    cli = CliRunner()
    listed = cli.invoke(app, ["breaks", "list"], env=env)
    assert listed.exit_code == 0 and ref in listed.output and "1 open break" in listed.output
    assigned = cli.invoke(app, ["breaks", "assign", ref, "--to", "bo", "--agent", "ana", "-m",
                                "bo knows the PSP"], env=env)
    assert assigned.exit_code == 0 and "investigating" in assigned.output
    no_reason = cli.invoke(app, ["breaks", "resolve", ref, "--agent", "bo"], env=env)
    assert no_reason.exit_code == 1 and "why" in no_reason.output
    done = cli.invoke(app, ["breaks", "resolve", ref, "--agent", "bo", "--write-off", "-m",
                            "PSP will not claw back"], env=env)
    assert done.exit_code == 0 and "written off" in done.output
    twice = cli.invoke(app, ["breaks", "resolve", ref, "--agent", "bo", "-m", "again"], env=env)
    assert twice.exit_code == 1 and "already" in twice.output
    shown = cli.invoke(app, ["breaks", "show", ref], env=env)
    assert shown.exit_code == 0 and "break_assigned" in shown.output
    assert "PSP will not claw back" in shown.output
    unknown = cli.invoke(app, ["breaks", "resolve", "B-999999", "--agent", "bo", "-m", "x"],
                         env=env)
    assert unknown.exit_code == 1 and "no break" in unknown.output


def test_postgresql_two_reports_seeing_one_new_break_at_once_register_it_once(
        postgres: Postgres, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runners write their reports at the same moment, and both see the same new break
    (a refund a person keyed in the portal). Report A is held inside its register
    transaction, its break added but not committed: report B must wait for A, then find
    A's break and see it again, never fail on the duplicate key (a crashed report)."""
    queue = Queue(postgres.url())
    a_inside, a_go = threading.Event(), threading.Event()
    real_audit = bots.queue.breaks.audit

    def audit(*args: object, **kwargs: object) -> object:
        if threading.current_thread().name == "report-a" and not a_inside.is_set():
            a_inside.set()
            a_go.wait()
        return real_audit(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bots.queue.breaks, "audit", audit)
    outcomes: dict[str, str] = {}

    def report(name: str) -> None:
        try:  # a connection of its own, as another process
            update = Queue(queue.url).record_breaks(f"run-{name}", [sighting()], [])
            outcomes[name] = "opened" if update.new else "seen again"
        except Exception as exc:  # noqa: BLE001 - the test reports it
            outcomes[name] = f"error: {type(exc).__name__}: {exc}"

    report_a = threading.Thread(target=report, args=("a",), name="report-a")
    report_b = threading.Thread(target=report, args=("b",), name="report-b")
    report_a.start()
    try:
        while report_a.is_alive() and not a_inside.wait(0.01):
            pass
        assert a_inside.is_set(), f"report A failed before its break: {outcomes}"
        report_b.start()
        waited = blocked_on_a_lock(queue.engine, report_b)
    finally:
        a_go.set()
        report_a.join()
        if report_b.ident is not None:
            report_b.join()
    assert outcomes == {"a": "opened", "b": "seen again"}
    assert waited, "report B read the register while A was writing it"
    [row] = queue.breaks()
    assert (row.first_seen_run, row.last_seen_run) == ("run-a", "run-b")
    assert queue.verify_chain().ok


def test_postgresql_a_break_a_report_closes_meanwhile_is_not_settled_again(
        postgres: Postgres) -> None:
    """A person resolves a break while a report holds the register and closes it (it
    matched): the person's command waits, then says it is resolved already."""
    queue = Queue(postgres.url())
    key = "intent:C000001-8f3a1c2b"
    ref = queue.record_breaks("run-1", [sighting(key, "missing in portal")], []).new[0].ref
    said: list[str] = []

    def resolve() -> None:
        try:
            Queue(queue.url).resolve_break(ref, agent="bo", comment="paid back")
            said.append("resolved")
        except BreakError as exc:
            said.append(str(exc))

    person = threading.Thread(target=resolve)
    report = Queue(queue.url)
    with report.session() as s:  # the report, inside its register transaction
        bots.queue.breaks.lock_chain(s)
        person.start()
        waited = blocked_on_a_lock(queue.engine, person)
        closed = bots.queue.breaks._by_key(s, [key])[key]
        closed.state, closed.resolved_by = BreakState.RESOLVED, "reconciliation"
    person.join()
    assert waited and len(said) == 1 and "resolved already" in said[0]
    assert queue.get_break(ref).resolved_by == "reconciliation"  # type: ignore[union-attr]
