"""Fenced leases: a runner that lost its case writes nothing, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from postgres import Postgres, blocked_on_a_lock

import bots.queue.intents
from bots.models import RefundRequest
from bots.queue import (
    Case,
    CaseState,
    CustomerLimit,
    CustomerLimitReached,
    IntentState,
    LeaseLost,
    Queue,
    runner_id,
    utcnow,
)
from bots.work.heartbeat import Heartbeat


@pytest.fixture
def queue(queue_url: str) -> Queue:
    return Queue(queue_url)


def req(source_id: str, order: str | None = "ORD-100001", email: str = "ada@example.com",
        **extra: object) -> RefundRequest:
    fields: dict[str, object] = {"reason_text": "refund", **extra}
    return RefundRequest(channel="email", source_id=source_id,  # type: ignore[arg-type]
                         received_at=datetime(2026, 11, 28, tzinfo=UTC),
                         customer_email=email, order_number=order, **fields)


def expire(queue: Queue, case_id: int) -> None:
    with queue.session() as s:
        case = s.get(Case, case_id)
        assert case is not None
        case.locked_until = utcnow() - timedelta(seconds=1)


def test_a_taken_over_runner_writes_nothing(queue: Queue) -> None:
    cid, _ = queue.add_request(req("m1"))
    a = queue.claim("runner-a", 60)
    assert a is not None
    lease_a = a.lease
    expire(queue, cid)  # A stalls past its lease
    b = queue.claim("runner-b", 60)
    assert b is not None and b.id == cid and b.lease_token == a.lease_token + 1
    for write in (
        lambda: queue.finish(lease_a, state=CaseState.DONE, outcome="refunded", reason="x",
                             actor="a", run_id="r"),
        lambda: queue.open_intent(lease_a, order_number="ORD-100001", transaction_id="TX-1",
                                  amount=Decimal("10.00"), run_id="r"),
        lambda: queue.note(lease_a, event="order_noted", detail="x", actor="a", run_id="r"),
        lambda: queue.retry_later(lease_a, delay=1, error="x", actor="a", run_id="r"),
        lambda: queue.record_decision(lease_a, "{}"),
        lambda: queue.set_order(lease_a, "ORD-999999"),
    ):
        with pytest.raises(LeaseLost):
            write()
    assert lease_a.lost.is_set()
    case = queue.get_case(cid)
    assert case is not None and case.state == CaseState.PROCESSING and case.locked_by == "runner-b"
    assert case.order_number == "ORD-100001" and case.decision is None
    assert queue.intents(cid) == []
    queue.finish(b.lease, state=CaseState.DONE, outcome="rejected", reason="y", actor="b",
                 run_id="r")  # the holder's writes go through


def test_the_last_check_before_the_click_refuses_a_lost_lease(queue: Queue) -> None:
    cid, _ = queue.add_request(req("m1"))
    a = queue.claim("runner-a", 60)
    assert a is not None
    intent = queue.open_intent(a.lease, order_number="ORD-100001", transaction_id="TX-1",
                               amount=Decimal("10.00"), run_id="r")
    expire(queue, cid)
    b = queue.claim("runner-b", 60)
    assert b is not None
    with pytest.raises(LeaseLost):
        queue.begin_submit(a.lease, intent.id, lease_seconds=60, needed_seconds=30)
    assert queue.intents(cid)[0].submit_started_at is None  # no click can have happened


def test_begin_submit_renews_the_lease_and_stamps_the_intent(queue: Queue) -> None:
    cid, _ = queue.add_request(req("m1"))
    a = queue.claim("runner-a", 5)
    assert a is not None
    intent = queue.open_intent(a.lease, order_number="ORD-100001", transaction_id="TX-1",
                               amount=Decimal("10.00"), run_id="r")
    started = queue.begin_submit(a.lease, intent.id, lease_seconds=120, needed_seconds=60)
    stored = queue.intents(cid)[0]
    assert stored.submit_started_at == started
    case = queue.get_case(cid)
    assert case is not None and case.locked_until is not None
    assert case.locked_until > utcnow() + timedelta(seconds=100)
    with pytest.raises(LeaseLost):  # a lease too short for the longest submit: no click
        queue.begin_submit(a.lease, intent.id, lease_seconds=10, needed_seconds=60)


def test_an_intent_is_resolved_only_from_pending(queue: Queue) -> None:
    cid, _ = queue.add_request(req("m1"))
    a = queue.claim("a", 60)
    assert a is not None
    intent = queue.open_intent(a.lease, order_number="ORD-100001", transaction_id="TX-1",
                               amount=Decimal("10.00"), run_id="r")
    assert queue.resolve_intent(a.lease, intent.id, state=IntentState.CONFIRMED,
                                refund_number="RF-1", run_id="r")
    assert not queue.resolve_intent(a.lease, intent.id, state=IntentState.ABSENT,
                                    refund_number=None, run_id="r")
    assert queue.intents(cid)[0].state == IntentState.CONFIRMED


def test_the_per_customer_limit_counts_refunds_in_flight(queue: Queue) -> None:
    first, _ = queue.add_request(req("m1", order="ORD-100001"))
    second, _ = queue.add_request(req("m2", order="ORD-100002"))
    a = queue.claim("a", 60)
    b = queue.claim("b", 60)
    assert a is not None and b is not None and {a.id, b.id} == {first, second}
    limit = CustomerLimit("ADA@example.com", Decimal("100.00"), utcnow() - timedelta(days=30))
    queue.open_intent(a.lease, order_number="ORD-100001", transaction_id="TX-1",
                      amount=Decimal("60.00"), run_id="r", customer_email="ada@example.com",
                      customer_limit=limit)  # pending, not confirmed: it still counts
    with pytest.raises(CustomerLimitReached):
        queue.open_intent(b.lease, order_number="ORD-100002", transaction_id="TX-2",
                          amount=Decimal("50.00"), run_id="r", customer_email="ada@example.com",
                          customer_limit=limit)
    queue.open_intent(b.lease, order_number="ORD-100002", transaction_id="TX-2",
                      amount=Decimal("40.00"), run_id="r", customer_email="ada@example.com",
                      customer_limit=limit)  # exactly at the limit is within it
    assert [a for _, a in queue.customer_refunds("ada@example.com", exclude_case=0,
                                                 include_pending=True)] == [
        Decimal("60.00"), Decimal("40.00")]
    assert queue.customer_refunds("ada@example.com", exclude_case=0) == []


def test_two_runners_racing_for_the_last_of_the_limit_pay_once(queue: Queue) -> None:
    ids = [queue.add_request(req(f"m{i}", order=f"ORD-10000{i}"))[0] for i in range(2)]
    leases = [queue.claim(f"r{i}", 60) for i in range(2)]
    assert all(lease is not None for lease in leases) and sorted(
        c.id for c in leases if c) == sorted(ids)
    limit = CustomerLimit("ada@example.com", Decimal("100.00"), utcnow() - timedelta(days=30))
    outcomes: list[str] = []

    def pay(case: Case) -> None:
        other = Queue(queue.url)  # as another process would
        try:
            other.open_intent(case.lease, order_number=case.order_number or "",
                              transaction_id="TX", amount=Decimal("80.00"), run_id="r",
                              customer_email="ada@example.com", customer_limit=limit)
            outcomes.append("opened")
        except CustomerLimitReached:
            outcomes.append("limit")

    threads = [threading.Thread(target=pay, args=(c,)) for c in leases if c]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["limit", "opened"]


def test_postgresql_the_customer_lock_makes_the_second_runner_wait_and_count(
        postgres: Postgres, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runners, two cases of one customer, 80 each against a limit of 100.

    Runner A is stopped inside `open_intent`'s transaction, after it summed and added its
    pending intent but before commit. Under READ COMMITTED, runner B cannot see that
    intent yet: only the per-customer advisory lock keeps B from summing until A commits.
    So B must wait on that lock (seen in `pg_stat_activity`), then count A's 80 and stop.
    The thread race above may or may not interleave this way; this one always does.
    """
    queue = Queue(postgres.url())
    for i in range(2):
        queue.add_request(req(f"m{i}", order=f"ORD-10000{i}"))
    a, b = queue.claim("a", 60), queue.claim("b", 60)
    assert a is not None and b is not None
    since = utcnow() - timedelta(days=30)  # one customer, her address written two ways:
    limits = {"a": CustomerLimit("Ada@Example.com", Decimal("100.00"), since),
              "b": CustomerLimit("ada@example.com", Decimal("100.00"), since)}
    a_inside, a_go = threading.Event(), threading.Event()
    real_audit = bots.queue.intents.audit

    def audit(*args: object, **kwargs: object) -> object:
        if threading.current_thread().name == "runner-a":  # A holds the lock here
            a_inside.set()
            a_go.wait()
        return real_audit(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bots.queue.intents, "audit", audit)
    outcomes: dict[str, str] = {}

    def pay(name: str, case: Case) -> None:
        try:
            Queue(queue.url).open_intent(  # a connection of its own, as another process
                case.lease, order_number=case.order_number or "", transaction_id="TX",
                amount=Decimal("80.00"), run_id="r", customer_email="ada@example.com",
                customer_limit=limits[name])
            outcomes[name] = "opened"
        except CustomerLimitReached:
            outcomes[name] = "limit"
        except Exception as exc:  # noqa: BLE001 - the test reports it
            outcomes[name] = f"error: {exc}"

    runner_a = threading.Thread(target=pay, args=("a", a), name="runner-a")
    runner_b = threading.Thread(target=pay, args=("b", b), name="runner-b")
    runner_a.start()
    try:
        while runner_a.is_alive() and not a_inside.wait(0.01):
            pass  # A reached the point inside its transaction, or failed before it
        assert a_inside.is_set(), f"runner A failed before its intent: {outcomes}"
        runner_b.start()
        waited = blocked_on_a_lock(queue.engine, runner_b, advisory=True)  # or B is done
    finally:
        a_go.set()
        runner_a.join()
        if runner_b.ident is not None:
            runner_b.join()
    assert waited, "runner B summed without waiting for A's customer lock"
    assert outcomes == {"a": "opened", "b": "limit"}
    pending = queue.customer_refunds("ada@example.com", exclude_case=0, include_pending=True)
    assert [amount for _, amount in pending] == [Decimal("80.00")]


def test_a_dead_holder_is_taken_over_at_once_a_live_one_is_not(queue: Queue) -> None:
    queue.add_request(req("m1"))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder = runner_id("w1", pid=child.pid)
        first = queue.claim(holder, 600)
        assert first is not None
        assert queue.claim("other", 600) is None  # alive: trusted until its lease runs out
    finally:
        child.kill()
        child.wait()
    taken = queue.claim(runner_id("w2"), 600)  # provably dead now: at once
    assert taken is not None and taken.id == first.id and taken.attempts == 2
    trail = queue.audit_trail(taken.id)
    assert "taken over from" in trail[-1].detail


def test_an_identity_from_elsewhere_is_trusted(queue: Queue) -> None:
    queue.add_request(req("m1"))
    host, boot, ns, _pid, start, inst, tag = runner_id("x").split("|")
    stranger = "|".join(("another-host", boot, ns, "999999", start, inst, tag))
    assert queue.claim(stranger, 600) is not None
    assert queue.claim("me", 600) is None
    assert os.getpid() != 999999


def test_a_case_that_kills_its_runner_every_time_is_set_aside(queue: Queue) -> None:
    cid, _ = queue.add_request(req("m1"))
    for _ in range(3):
        held = queue.claim("doomed", 60, max_attempts=3)
        assert held is not None
        expire(queue, cid)  # the runner died mid-case
    assert queue.claim("next", 60, max_attempts=3) is None
    case = queue.get_case(cid)
    assert case is not None and case.state == CaseState.FAILED
    assert "set aside" in (case.reason or "") and queue.audit_trail(cid)[-1].event == "poison"
    assert queue.failed_case_ids() == [cid]  # ops can `cases retry` it


def test_defer_waits_without_spending_an_attempt(queue: Queue) -> None:
    cid, _ = queue.add_request(req("m1"))
    held = queue.claim("a", 60)
    assert held is not None and held.attempts == 1
    queue.defer(held.lease, delay=30, why="submit in flight", actor="a", run_id="r")
    assert queue.claim("a", 60) is None
    case = queue.get_case(cid)
    assert case is not None and case.attempts == 0 and case.state == CaseState.QUEUED


def test_the_heartbeat_renews_and_notices_a_takeover(queue: Queue) -> None:
    cid, _ = queue.add_request(req("m1"))
    held = queue.claim("a", 2)
    assert held is not None
    lease = held.lease
    beat = Heartbeat(queue, lease_seconds=60, interval=3600)  # beats only when we say so
    beat.hold(lease)
    beat.beat()
    case = queue.get_case(cid)
    assert case is not None and case.locked_until is not None
    assert case.locked_until > utcnow() + timedelta(seconds=50) and not lease.lost.is_set()
    expire(queue, cid)
    assert queue.claim("b", 60) is not None
    beat.beat()
    assert lease.lost.is_set()


def test_highest_priority_is_claimed_first(queue: Queue) -> None:
    queue.add_request(req("m1", order="ORD-100001"))
    urgent, _ = queue.add_request(req("m2", order="ORD-100002", priority=5))
    held = queue.claim("a", 60)
    assert held is not None and held.id == urgent


def test_a_contact_about_a_finished_case_is_new_work(queue: Queue) -> None:
    cid, _ = queue.add_request(req("m1"))
    held = queue.claim("a", 60)
    assert held is not None
    queue.finish(held.lease, state=CaseState.DONE, outcome="refunded", reason="paid",
                 actor="a", run_id="r")
    follow, new = queue.add_request(req("m2", reason_text="also refund the boots"))
    assert new and follow != cid
    case = queue.get_case(follow)
    assert case is not None and case.follows == cid and case.state == CaseState.QUEUED
    assert "finished" in queue.audit_trail(follow)[0].detail
    again, _ = queue.add_request(req("m3"))
    assert again == follow  # later contacts join the open follow-up
    old = queue.get_case(cid)
    assert old is not None and old.state == CaseState.DONE and len(old.requests) == 1


def test_doubts_are_stored_with_the_contact(queue: Queue) -> None:
    cid, _ = queue.add_request(req("m1", doubts=("the amount has a minus sign: -20.00",),
                                   language="de"))
    case = queue.get_case(cid)
    assert case is not None and case.doubts == ["the amount has a minus sign: -20.00"]
    assert case.requests[0].language == "de"


def test_two_intakes_at_once_never_fail_on_a_duplicate(queue: Queue) -> None:
    reqs = [req(f"m{i}", order=f"ORD-{100000 + i % 7}") for i in range(60)]
    errors: list[BaseException] = []

    def intake() -> None:
        try:
            Queue(queue.url).add_requests(reqs, "run", batch=7)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=intake) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    cases = queue.cases()
    assert len(cases) == 7 and sum(len(c.requests) for c in cases) == 60
