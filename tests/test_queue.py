from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from bots.models import Quarantined, RefundRequest
from bots.queue import CaseState, IntentState, Queue, utcnow
from bots.queue.staff import Staff


@pytest.fixture
def queue(queue_url: str) -> Queue:
    return Queue(queue_url)


def req(source_id: str, channel: str = "email", order: str | None = "ORD-100001",
        email: str | None = "ada@example.com", amount: str | None = None) -> RefundRequest:
    return RefundRequest(channel=channel, source_id=source_id,
                         received_at=datetime(2026, 11, 28, tzinfo=UTC), reason_text="refund pls",
                         customer_email=email, order_number=order,
                         requested_amount=Decimal(amount) if amount else None)


def test_same_source_twice_adds_nothing(queue: Queue) -> None:
    assert queue.add_request(req("m1"))[1] is True
    assert queue.add_request(req("m1"))[1] is False
    assert len(queue.cases()) == 1 and len(queue.cases()[0].requests) == 1


def test_same_order_on_two_channels_is_one_case(queue: Queue) -> None:
    a, _ = queue.add_request(req("m1"))
    b, _ = queue.add_request(req("row-9", channel="spreadsheet", amount="12.00"))
    assert a == b
    case = queue.get_case(a)
    assert case is not None and case.channels == ["email", "spreadsheet"]
    assert case.requested_amount == Decimal("12.00")
    events = [e.event for e in queue.audit_trail(a)]
    assert events == ["case_opened", "contact_linked"]


def test_order_number_case_insensitive(queue: Queue) -> None:
    a, _ = queue.add_request(req("m1", order="ORD-100001"))
    b, _ = queue.add_request(req("m2", order="ord-100001"))
    assert a == b


def test_quarantine_is_idempotent(queue: Queue) -> None:
    q = Quarantined("email", "x", "empty file")
    assert queue.add_quarantined(q, "r1") and not queue.add_quarantined(q, "r2")
    assert [r.reason for r in queue.quarantined("r1")] == ["empty file"]


def test_claim_hands_each_case_to_exactly_one_worker(queue: Queue) -> None:
    for i in range(40):
        queue.add_request(req(f"m{i}", order=f"ORD-{100000 + i}"))
    won: list[tuple[str, int]] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        other = Queue(queue.url)  # own engine, as another process would have
        while (case := other.claim(name, 60)) is not None:
            with lock:
                won.append((name, case.id))

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [cid for _, cid in won]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 40


def test_expired_lease_is_claimable_again(queue: Queue) -> None:
    queue.add_request(req("m1"))
    first = queue.claim("crashed", lease_seconds=60)
    assert first is not None and queue.claim("w2", 60) is None
    with queue.session() as s:  # time passes: the lease runs out
        s.get(type(first), first.id).locked_until = utcnow() - timedelta(seconds=1)
    again = queue.claim("w2", 60)
    assert again is not None and again.id == first.id and again.attempts == 2
    assert again.lease_token == first.lease_token + 1  # the fencing token only grows


def test_retry_later_waits_for_backoff(queue: Queue) -> None:
    cid, _ = queue.add_request(req("m1"))
    held = queue.claim("w", 60)
    assert held is not None and held.id == cid
    queue.retry_later(held.lease, delay=30, error="HTTP 500", actor="w", run_id="r")
    assert queue.claim("w", 60) is None
    due = queue.next_due_at()
    assert due is not None and due > utcnow() + timedelta(seconds=25)


def test_finish_writes_audit_and_clears_lease(queue: Queue) -> None:
    cid, _ = queue.add_request(req("m1"))
    held = queue.claim("w", 60, run_id="r1")
    assert held is not None
    queue.finish(held.lease, state=CaseState.DONE, outcome="rejected", reason="outside window",
                 actor="w", run_id="r1")
    case = queue.get_case(cid)
    assert case is not None and case.state == "done" and case.locked_by is None
    assert [c.id for c in queue.cases_touched("r1")] == [cid]
    assert queue.audit_trail(cid)[-1].detail == "outside window"


def test_customer_case_merges_into_order_case(queue: Queue) -> None:
    order_case, _ = queue.add_request(req("m1"))
    loose, _ = queue.add_request(req("m2", order=None))
    assert loose != order_case
    held = queue.claim("w", 60, exclude=[order_case])
    assert held is not None and held.id == loose
    assert queue.merge(held.lease, "order:ORD-100001", actor="w", run_id="r") == order_case
    merged = queue.get_case(order_case)
    assert merged is not None and len(merged.requests) == 2
    assert queue.get_case(loose).state == CaseState.MERGED  # type: ignore[union-attr]


def test_intents_recorded_and_resolved(queue: Queue) -> None:
    cid, _ = queue.add_request(req("m1"))
    held = queue.claim("w", 60)
    assert held is not None
    intent = queue.open_intent(held.lease, order_number="ORD-100001", transaction_id="TX-1",
                               amount=Decimal("9.90"), run_id="r1")
    assert intent.key.startswith("C") and len(intent.key) <= 40
    assert queue.resolve_intent(held.lease, intent.id, state=IntentState.CONFIRMED,
                                refund_number="RF-000009", run_id="r2")
    [stored] = queue.intents(cid)
    assert stored.state == "confirmed" and stored.refund_number == "RF-000009"
    assert [i.id for i in queue.intents_for_run("r2")] == [intent.id]


def test_lock_is_exclusive_until_it_expires(queue: Queue) -> None:
    assert queue.acquire_lock("process", "a", ttl_seconds=60)
    assert not queue.acquire_lock("process", "b", ttl_seconds=60)
    assert queue.acquire_lock("process", "a", ttl_seconds=60)  # renewal
    assert queue.lock_owner("process") == "a"
    assert queue.acquire_lock("stale", "crashed", ttl_seconds=-1)  # already expired
    assert queue.acquire_lock("stale", "b", ttl_seconds=60)  # taken over
    queue.release_lock("process", "a")
    assert queue.acquire_lock("process", "b", ttl_seconds=60)


def _escalated(queue: Queue, proposal: str = "120.00") -> int:
    cid, _ = queue.add_request(req("m1"))
    held = queue.claim("w", 60)
    assert held is not None and held.id == cid
    queue.finish(held.lease, state=CaseState.ESCALATED, outcome="escalated", reason="above limit",
                 actor="w", run_id="r1", approved_amount=Decimal(proposal))
    return cid


def test_human_approval_requeues_with_the_amount_once(queue: Queue) -> None:
    cid = _escalated(queue)
    assert queue.human_decision(cid, decision="approve", amount=None, agent="ana",
                                comment="ok", run_id=None) == "applied"
    case = queue.get_case(cid)
    assert case is not None and case.state == "queued" and case.approved_amount == Decimal("120.00")
    assert queue.human_decision(cid, decision="approve", amount=None, agent="ana",
                                comment="ok", run_id=None) == "already applied"
    assert queue.audit_trail(cid)[-1].actor == "ana"


def test_human_partial_and_reject(queue: Queue) -> None:
    cid = _escalated(queue)
    assert queue.human_decision(cid, decision="partial", amount=Decimal("50.00"), agent="bo",
                                comment="half", run_id=None) == "applied"
    assert queue.get_case(cid).approved_amount == Decimal("50.00")  # type: ignore[union-attr]
    other, _ = queue.add_request(req("m9", order="ORD-100009"))
    assert queue.human_decision(other, decision="reject", amount=None, agent="bo",
                                comment="", run_id=None) == "not escalated"


def test_human_reject_ends_the_case_with_the_agents_words(queue: Queue) -> None:
    cid = _escalated(queue)
    queue.human_decision(cid, decision="reject", amount=None, agent="cy", comment="abuse",
                         run_id=None)
    case = queue.get_case(cid)
    assert case is not None and (case.state, case.outcome) == ("done", "rejected")
    assert case.reason == "Rejected by cy: abuse"


def test_reassign_only_escalated(queue: Queue) -> None:
    cid = _escalated(queue)
    assert queue.assign(cid, agent="dee", by="ana", comment="fraud team", run_id=None)
    assert queue.get_case(cid).assigned_to == "dee"  # type: ignore[union-attr]
    assert "unassigned -> dee" in queue.audit_trail(cid)[-1].detail


def _failed(queue: Queue, source: str) -> int:
    cid, _ = queue.add_request(req(source, order=f"ORD-1{source[-5:]:0>5}"))
    held = queue.claim("w", 60, run_id="r1")
    assert held is not None and held.id == cid
    queue.finish(held.lease, state=CaseState.FAILED, outcome="failed",
                 reason="gave up after 6 attempts: HTTP 500", actor="w", run_id="r1")
    return cid


def test_ops_queue_a_failed_case_again_once(queue: Queue) -> None:
    cid = _failed(queue, "m1")
    done, _ = queue.add_request(req("m2", order="ORD-200000"))
    assert queue.failed_case_ids() == [cid]
    assert queue.retry(cid, agent="ana.ops", comment="portal back", run_id=None)
    case = queue.get_case(cid)
    assert case is not None and case.state == CaseState.QUEUED and case.attempts == 0
    assert "by ana.ops: portal back" in queue.audit_trail(cid)[-1].detail
    assert not queue.retry(cid, agent="ana.ops", comment="", run_id=None)  # not failed now
    assert not queue.retry(done, agent="ana.ops", comment="", run_id=None)  # never failed
    assert queue.claim("w", 60) is not None


def test_cases_retry_command(queue: Queue, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bots.cli import app

    first, second = _failed(queue, "m00001"), _failed(queue, "m00002")
    env = {"REFUND_BOTS_QUEUE_URL": queue.url}
    cli = CliRunner()
    nobody = cli.invoke(app, ["cases", "retry", f"C-{first:06d}", "--agent", "ana"], env=env)
    assert nobody.exit_code == 1 and "no user 'ana'" in nobody.output  # --agent: a real user
    Staff.on(queue).add_user("ana", "supervisor", "a long enough password")
    named = cli.invoke(app, ["cases", "retry", f"C-{first:06d}", "--agent", "ana"], env=env)
    assert named.exit_code == 0 and "1 case(s) queued again" in named.output
    again = cli.invoke(app, ["cases", "retry", f"C-{first:06d}", "--agent", "ana"], env=env)
    assert again.exit_code == 1 and "has not failed" in again.output
    assert cli.invoke(app, ["cases", "retry", "--agent", "ana"], env=env).exit_code == 1
    every = cli.invoke(app, ["cases", "retry", "--all-failed", "-a", "ana"], env=env)
    assert every.exit_code == 0 and queue.failed_case_ids() == []
    assert queue.get_case(second).state == CaseState.QUEUED  # type: ignore[union-attr]
    assert cli.invoke(app, ["cases", "retry", "--all-failed", "-a", "ana"],
                      env=env).output.strip() == "No case to retry."
    assert cli.invoke(app, ["cases", "retry", "--all-failed"], env=env).exit_code != 0  # who?


def test_cases_list_pages_and_filters(queue: Queue) -> None:
    from typer.testing import CliRunner

    from bots.cli import app

    for i in range(30):
        queue.add_request(req(f"m{i}", order=f"ORD-{200000 + i}",
                              email=f"c{i % 3}@example.com"))
    queue.add_request(req("row-1", channel="spreadsheet", order="ORD-200007"))
    env = {"REFUND_BOTS_QUEUE_URL": queue.url,
           "COLUMNS": "80"}
    cli = CliRunner()
    first = cli.invoke(app, ["cases", "list", "--limit", "10"], env=env)
    assert first.exit_code == 0 and "30 case(s); page 1 of 3" in first.output
    assert "C-000030" in first.output and "C-000020" not in first.output  # newest first
    assert "ORD-200029" in first.output  # never cut at 80 columns
    third = cli.invoke(app, ["cases", "list", "--limit", "10", "--page", "3"], env=env)
    assert "C-000001" in third.output and "C-000011" not in third.output
    by_channel = cli.invoke(app, ["cases", "list", "--channel", "spreadsheet"], env=env)
    assert "1 case(s)" in by_channel.output and "C-000008" in by_channel.output
    by_customer = cli.invoke(app, ["cases", "list", "--customer", "C1@EXAMPLE"], env=env)
    assert "10 case(s)" in by_customer.output
    by_order = cli.invoke(app, ["cases", "list", "--order", "ord-200003"], env=env)
    assert "1 case(s)" in by_order.output and "C-000004" in by_order.output
    old = cli.invoke(app, ["cases", "list", "--older-than", "1d"], env=env)
    assert "0 case(s)" in old.output
    bogus = cli.invoke(app, ["cases", "list", "--state", "bogus"], env=env)
    assert bogus.exit_code == 1 and "unknown state bogus" in bogus.output
    assert cli.invoke(app, ["cases", "list", "--older-than", "soon"], env=env).exit_code == 1


def test_a_repeat_contact_fills_in_and_moves_the_version_only_when_it_should(
        queue: Queue) -> None:
    """A contact on a stored case fills what the case lacked, never lowers the ask, and
    moves the case's version (updated_at) when it changed something, or whenever the
    case waits for a person (who has not seen this contact: issue #16)."""
    escalated, _ = queue.add_request(req("m2", order="ORD-100002", amount="20.00"))
    held = queue.claim("w1", 60, "r0")
    assert held is not None and held.id == escalated
    queue.finish(held.lease, state=CaseState.ESCALATED, outcome="escalated", reason="limit",
                 actor="w1", run_id="r0")
    queued, _ = queue.add_request(req("m1", email=None, amount="20.00"))

    def version(case_id: int) -> datetime:
        case = queue.get_case(case_id)
        assert case is not None
        return case.updated_at

    before = {c: version(c) for c in (queued, escalated)}
    queue.add_request(req("m3", email=None, amount="5.00"))  # fills nothing, asks less
    queue.add_request(req("m4", order="ORD-100002", amount="5.00"))  # the same on escalated
    assert version(queued) == before[queued]
    assert version(escalated) > before[escalated]
    queue.add_requests([req("m5", email="late@example.com", amount="25.00"),
                        req("m6", order="ORD-100002")], "r1")
    case = queue.get_case(queued)
    assert case is not None and case.updated_at > before[queued]
    assert (case.customer_email, case.requested_amount) == ("late@example.com",
                                                            Decimal("25.00"))
    case = queue.get_case(escalated)
    assert case is not None and case.requested_amount == Decimal("20.00")
    assert case.customer_email == "ada@example.com" and case.state == CaseState.ESCALATED
