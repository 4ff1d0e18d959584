from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from test_policy import POLICY, TODAY, charge, claim, item, order
from typer.testing import CliRunner

from bots.cli import app
from bots.decide import snapshot
from bots.decide.policy import Policy, decide
from bots.decide.simulate import replay, write_comparison
from bots.models import RefundRequest
from bots.queue import Queue
from bots.reports.report import read_report


def _queue_with_decisions(tmp_path: Path) -> Queue:
    queue = Queue(f"sqlite:///{tmp_path / 'q.sqlite'}")
    for n, days in enumerate((5, 20)):
        o = order(item("40.00"), delivered_days_ago=days)
        o = type(o)(**{**o.__dict__, "order_number": f"ORD-10000{n}"})
        cid, _ = queue.add_request(RefundRequest("email", f"m{n}", datetime.now(UTC), "x",
                                                 order_number=o.order_number))
        c, cl = charge(o), claim()
        held = queue.claim("w", 60)
        assert held is not None and held.id == cid
        queue.record_decision(held.lease, snapshot.dump(o, c, cl, decide(POLICY, cl, o, c, TODAY),
                                                 TODAY))
    return queue


def test_replay_shows_what_a_shorter_window_changes(tmp_path: Path) -> None:
    rows = replay(_queue_with_decisions(tmp_path), Policy(refund_window_days=10))
    assert [(r.old_outcome, r.new_outcome, r.changed) for r in rows] == [
        ("refund", "refund", False), ("refund", "reject", True)]
    book = read_report(write_comparison(tmp_path / "cmp.xlsx", rows, Path("p.yaml")))
    assert book["Cases"][0]["Changed"] == "yes" and book["Cases"][0]["New amount"] == Decimal("0")


def test_policy_simulate_command(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    queue = _queue_with_decisions(tmp_path)
    monkeypatch.setenv("REFUND_BOTS_QUEUE_URL", queue.url)
    new = tmp_path / "strict.yaml"
    new.write_text("refund_window_days: 10\n")
    out = tmp_path / "sim.xlsx"
    result = CliRunner().invoke(app, ["policy", "simulate", str(new), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Replayed 2 decision(s): 1 would change" in result.output and out.exists()


def test_a_human_decision_is_never_counted_as_a_policy_change(tmp_path: Path) -> None:
    queue = _queue_with_decisions(tmp_path)
    [first, _] = queue.cases()
    with queue.session() as s:  # a person approved it after the policy escalated it
        case = s.get(type(first), first.id)
        assert case is not None
        case.human_decision, case.human_agent = "approve", "ana"
    strict = Policy(auto_approve_limit=Decimal("1.00"))  # the policy escalates both now
    rows = {r.case_ref: r for r in replay(queue, strict)}
    human = rows[first.ref]
    assert human.decided_by == "human" and human.new_outcome == "escalate"
    assert not human.changed  # the policy still hands it to a person: no policy change
    assert "ana" in human.old_outcome
    book = read_report(write_comparison(tmp_path / "cmp.xlsx", list(rows.values()),
                                        Path("p.yaml")))
    assert {"Difference", "Decided by"} <= set(book["Cases"][0])
