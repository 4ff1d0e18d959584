"""Leases, fencing and refund intents: what keeps two runners from paying one case twice.

Lease expiry and dead-holder takeover (the replacement for orphan recovery), release,
the poison count, every fenced write refused with a stale token (and changing nothing),
the per-customer refunds the limit counts, and claim loops that always end. Each test
runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from bots.models import RefundRequest
from bots.queue import (
    Case,
    CaseState,
    CustomerLimit,
    CustomerLimitReached,
    IntentState,
    Lease,
    LeaseLost,
    Queue,
    RefundIntent,
    runner_id,
    utcnow,
)
from bots.queue.leases import Leases

D = Decimal


@pytest.fixture
def queue(queue_url: str) -> Queue:
    return Queue(queue_url)


def add(queue: Queue, n: int = 1, *, email: str = "ada@example.com", priority: int = 0) -> int:
    req = RefundRequest(channel="email", source_id=f"m{n}-{email}",
                        received_at=datetime(2026, 11, 28, tzinfo=UTC), reason_text="refund",
                        customer_email=email, order_number=f"ORD-{100000 + n}",
                        priority=priority)
    return queue.add_request(req)[0]


def set_lease_end(queue: Queue, case_id: int, seconds_from_now: float) -> None:
    with queue.session() as s:
        row = s.get(Case, case_id)
        assert row is not None
        row.locked_until = utcnow() + timedelta(seconds=seconds_from_now)


def intent(queue: Queue, lease: Lease, amount: str = "10.00",
           email: str | None = "ada@example.com", **kw: Any) -> RefundIntent:
    return queue.open_intent(lease, order_number="ORD-1", transaction_id="TX-1",
                             amount=D(amount), run_id="r", customer_email=email, **kw)


@pytest.fixture
def dead_owner() -> Iterator[str]:
    child = subprocess.Popen(["true"])
    child.wait()
    yield runner_id("w1", pid=child.pid)


# -- expiry and takeover ---------------------------------------------------------------------


@pytest.mark.parametrize(("seconds_left", "claimable"), [(5, False), (-1, True)])
def test_a_lease_is_claimable_only_once_it_ran_out(queue: Queue, seconds_left: float,
                                                   claimable: bool) -> None:
    cid = add(queue)
    first = queue.claim("a", 60)
    assert first is not None
    set_lease_end(queue, cid, seconds_left)
    again = queue.claim("b", 60)
    assert (again is not None) is claimable
    if again is not None:
        assert again.attempts == 2 and again.lease_token == first.lease_token + 1
        trail = queue.audit_trail(cid)
        assert trail[-1].detail == (f"attempt 2, lease token {again.lease_token}; taken over "
                                    f"from a (lease ran out or holder dead)")
        assert trail[-1].from_state == CaseState.PROCESSING
        first_claim = [a for a in trail if a.event == "claimed"][0]
        assert (first_claim.from_state, first_claim.to_state) == (CaseState.QUEUED,
                                                                  CaseState.PROCESSING)



def _at(queue: Queue, case_id: int, **times: datetime | None) -> None:
    with queue.session() as s:
        row = s.get(Case, case_id)
        assert row is not None
        for name, value in times.items():
            setattr(row, name, value)


def test_the_boundaries_a_retry_is_due_at_its_time_a_lease_holds_to_its_end(
        queue: Queue, monkeypatch: pytest.MonkeyPatch, dead_owner: str) -> None:
    now = datetime(2026, 12, 3, 7, 0, 0, 123456, tzinfo=UTC)
    monkeypatch.setattr("bots.queue.leases.utcnow", lambda: now)
    waiting, live, dead = add(queue, 1), add(queue, 2), add(queue, 3)
    _at(queue, waiting, next_attempt_at=now + timedelta(seconds=1))
    for cid, owner in ((live, runner_id("alive")), (dead, dead_owner)):
        taken = queue.claim(owner, 60)
        assert taken is not None and taken.id == cid
        _at(queue, cid, locked_until=now)  # the lease's last instant
    _at(queue, waiting, next_attempt_at=now)  # the retry's very time
    retried = queue.claim("w", 60, exclude=[live, dead])
    assert retried is not None and retried.id == waiting  # due at its time
    takeover = queue.claim("w", 60)  # a lease at its last instant is not expired...
    assert takeover is not None and takeover.id == dead  # ...but a dead holder's is taken
    assert queue.claim("w", 60) is None  # the live holder keeps its case


def test_a_dead_holders_case_is_taken_over_before_its_lease_ends(queue: Queue,
                                                                 dead_owner: str) -> None:
    cid = add(queue)
    assert queue.claim(dead_owner, 3600) is not None
    taken = queue.claim("b", 60)
    assert taken is not None and taken.id == cid and taken.locked_by == "b"


def test_dead_holders_cases_are_taken_over_oldest_first(queue: Queue, dead_owner: str) -> None:
    a, b = add(queue, 1), add(queue, 2)
    for cid, seconds in ((a, 3600), (b, 1800)):  # the older case's lease ends later
        taken = queue.claim(dead_owner, 60)
        assert taken is not None and taken.id == cid
        set_lease_end(queue, cid, seconds)
    order = [c.id for c in iter(lambda: queue.claim("w", 60), None)]
    assert order == [a, b]


def test_a_candidate_that_changed_since_it_was_read_is_not_taken(
        queue: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a race on PostgreSQL's takeover path looks like: the candidate read is stale."""
    cid = add(queue)
    held = queue.claim("a", 60)
    assert held is not None
    token = held.lease_token
    for seen in ((held.locked_by, token - 1),  # another runner claimed it since
                 ("gone", token)):  # its holder changed since: not the dead one read
        monkeypatch.setattr(Leases, "_candidates",
                            lambda self, s, now, exclude, seen=seen: [(cid, *seen)])
        assert queue.claim("b", 60) is None
    case = queue.get_case(cid)
    assert case is not None and (case.locked_by, case.lease_token) == ("a", token)


def test_a_live_holders_case_is_not_taken_over(queue: Queue) -> None:
    add(queue)
    assert queue.claim(runner_id("alive"), 3600) is not None  # this very process
    assert queue.claim("b", 60) is None
    assert queue.claim("c", 60) is None


@pytest.mark.parametrize(("attempts_before", "poisoned"), [(1, False), (2, True)])
def test_a_case_that_killed_its_runner_max_attempts_times_is_set_aside(
        queue: Queue, attempts_before: int, poisoned: bool) -> None:
    cid = add(queue)
    last = None
    for n in range(attempts_before):
        last = queue.claim(f"dies-{n}", 60)
        assert last is not None
        set_lease_end(queue, cid, -1)
    taken = queue.claim("b", 60, run_id="run-b", max_attempts=2)
    case = queue.get_case(cid)
    assert case is not None
    if poisoned:
        [poison] = [a for a in queue.audit_trail(cid) if a.event == "poison"]
        assert (poison.run_id, poison.actor, poison.from_state, poison.to_state) == (
            "run-b", "b", CaseState.PROCESSING, CaseState.FAILED)
        assert poison.detail == case.reason
        assert taken is None and case.state == CaseState.FAILED and case.outcome == "failed"
        assert case.reason is not None and case.reason.startswith("set aside")
        assert case.last_error == case.reason  # what the console and `cases show` print
        # no holder any more, and the last runner's token is stale: it can write nothing
        assert (case.locked_by, case.locked_until) == (None, None)
        assert last is not None and case.lease_token == last.lease_token + 1
        assert "poison" in [a.event for a in queue.audit_trail(cid)]
    else:
        assert taken is not None and case.attempts == 2


def test_a_claim_loop_over_poisoned_cases_ends(queue: Queue) -> None:
    ids = [add(queue, n) for n in range(3)]
    for _ in ids:
        assert queue.claim("dies", 60) is not None
    for cid in ids:
        set_lease_end(queue, cid, -1)
    fresh = add(queue, 9)
    taken = queue.claim("b", 60, max_attempts=1)
    assert taken is not None and taken.id == fresh  # past the three set aside
    assert queue.claim("b", 60, max_attempts=1) is None
    assert [c.state for c in queue.cases()] == [CaseState.FAILED] * 3 + [CaseState.PROCESSING]


def test_a_claim_loop_takes_each_case_once_then_stops(queue: Queue) -> None:
    ids = {add(queue, n) for n in range(5)}
    taken = []
    for _ in range(len(ids) + 1):  # bounded: one more than there is
        case = queue.claim("w", 60)
        if case is None:
            break
        taken.append(case.id)
    assert sorted(taken) == sorted(ids) and queue.claim("w", 60) is None


def test_claims_take_the_highest_priority_first_then_the_oldest(queue: Queue) -> None:
    low, high, high2 = add(queue, 1), add(queue, 2, priority=5), add(queue, 3, priority=5)
    order = [c.id for c in iter(lambda: queue.claim("w", 60), None)]
    assert order == [high, high2, low]


def test_excluded_cases_are_not_claimed(queue: Queue) -> None:
    a, b = add(queue, 1), add(queue, 2)
    taken = queue.claim("w", 60, exclude=[a])
    assert taken is not None and taken.id == b and queue.claim("w", 60, exclude=[a]) is None


# -- release, renew, defer ---------------------------------------------------------------------


def test_release_gives_the_case_back_due_at_once(queue: Queue) -> None:
    cid = add(queue)
    held = queue.claim("w", 60)
    assert held is not None
    queue.retry_later(held.lease, delay=0, error="x", actor="w", run_id="r")
    held = queue.claim("w", 60)
    assert held is not None and held.attempts == 2
    queue.release(held.lease, actor="w", run_id="r", why="dry run")
    case = queue.get_case(cid)
    assert case is not None
    assert (case.state, case.attempts, case.locked_by, case.locked_until,
            case.next_attempt_at) == (CaseState.QUEUED, 1, None, None, None)
    assert queue.next_due_at() is None
    with pytest.raises(LeaseLost):  # released: the old lease writes nothing more
        queue.note(held.lease, event="x", detail="y", actor="w", run_id="r")
    again = queue.claim("w2", 60)
    assert again is not None and again.id == cid


def test_renew_extends_our_lease_and_marks_a_lost_one(queue: Queue) -> None:
    cid = add(queue)
    held = queue.claim("a", 60)
    assert held is not None
    set_lease_end(queue, cid, 1)
    assert queue.renew(held.lease, 120) and not held.lease.lost.is_set()
    case = queue.get_case(cid)
    assert case is not None and case.locked_until is not None
    assert case.locked_until > utcnow() + timedelta(seconds=100)
    set_lease_end(queue, cid, -1)
    assert queue.claim("b", 60) is not None
    lease = held.lease  # (each `case.lease` is a new Lease: keep the one you hold)
    assert not queue.renew(lease, 120) and lease.lost.is_set()


def test_defer_spends_no_attempt(queue: Queue) -> None:
    cid = add(queue)
    held = queue.claim("w", 60)
    assert held is not None
    queue.defer(held.lease, delay=30, why="in flight", actor="w", run_id="r")
    case = queue.get_case(cid)
    assert case is not None and (case.state, case.attempts) == (CaseState.QUEUED, 0)
    assert queue.claim("w", 60) is None  # not before the delay
    due = queue.next_due_at()
    assert due is not None and 25 < (due - utcnow()).total_seconds() <= 30


# -- fencing: a stale token writes nothing -----------------------------------------------------


def _state(queue: Queue, cid: int) -> tuple[object, ...]:
    case = queue.get_case(cid)
    assert case is not None
    return ((case.state, case.outcome, case.reason, case.attempts, case.locked_by,
             case.locked_until, case.next_attempt_at, case.order_number, case.decision,
             case.lease_token, case.merged_into, case.approved_amount),
            [(i.id, i.state, i.refund_number, i.submit_started_at, i.submit_answered_at)
             for i in queue.intents(cid)],
            len(queue.audit_trail(cid)))


WRITES: dict[str, Callable[[Queue, Lease, int], object]] = {
    "finish": lambda q, lease, i: q.finish(lease, state=CaseState.DONE, outcome="refunded",
                                           reason="r", actor="a", run_id="r"),
    "retry_later": lambda q, lease, i: q.retry_later(lease, delay=0, error="e", actor="a",
                                                     run_id="r"),
    "defer": lambda q, lease, i: q.defer(lease, delay=0, why="w", actor="a", run_id="r"),
    "release": lambda q, lease, i: q.release(lease, actor="a", run_id="r", why="w"),
    "note": lambda q, lease, i: q.note(lease, event="e", detail="d", actor="a", run_id="r"),
    "merge": lambda q, lease, i: q.merge(lease, "order:ORD-100002", actor="a", run_id="r"),
    "set_order": lambda q, lease, i: q.set_order(lease, "ORD-999999"),
    "record_decision": lambda q, lease, i: q.record_decision(lease, "{}"),
    "open_intent": lambda q, lease, i: intent(q, lease),
    "begin_submit": lambda q, lease, i: q.begin_submit(lease, i, lease_seconds=300,
                                                       needed_seconds=10),
    "submit_answered": lambda q, lease, i: q.submit_answered(lease, i),
    "resolve_intent": lambda q, lease, i: q.resolve_intent(
        lease, i, state=IntentState.CONFIRMED, refund_number="RF-1", run_id="r"),
}


@pytest.mark.parametrize("write", sorted(WRITES))
def test_a_write_with_a_stale_token_raises_and_changes_nothing(queue: Queue,
                                                               write: str) -> None:
    cid = add(queue)
    add(queue, 2)  # a merge target
    old = queue.claim("a", 60)
    assert old is not None and old.id == cid
    pending = intent(queue, old.lease)
    set_lease_end(queue, cid, -1)
    new = queue.claim("b", 60)
    assert new is not None and new.id == cid
    before = _state(queue, cid)
    stale = old.lease
    with pytest.raises(LeaseLost, match=rf"case {cid}: lease token {stale.token} is no longer "
                                        r"ours \(the lease ran out and another runner"):
        WRITES[write](queue, stale, pending.id)
    assert stale.lost.is_set()
    assert _state(queue, cid) == before
    WRITES[write](queue, new.lease, pending.id)  # the holder's own write goes through


def test_a_finished_case_takes_no_more_writes(queue: Queue) -> None:
    add(queue)
    held = queue.claim("a", 60)
    assert held is not None
    queue.finish(held.lease, state=CaseState.DONE, outcome="rejected", reason="r", actor="a",
                 run_id="r")
    with pytest.raises(LeaseLost):
        intent(queue, held.lease)


# -- intents ---------------------------------------------------------------------------------


def test_begin_submit_needs_time_to_spare_and_a_pending_intent(queue: Queue) -> None:
    add(queue)
    held = queue.claim("a", 60)
    assert held is not None
    i = intent(queue, held.lease)
    with pytest.raises(LeaseLost, match="shorter than the longest submit"):
        queue.begin_submit(held.lease, i.id, lease_seconds=59, needed_seconds=60)
    assert queue.intents(held.id)[0].submit_started_at is None
    started = queue.begin_submit(held.lease, i.id, lease_seconds=60, needed_seconds=60)
    assert queue.intents(held.id)[0].submit_started_at == started
    assert queue.resolve_intent(held.lease, i.id, state=IntentState.ABSENT, refund_number=None,
                                run_id="r")
    with pytest.raises(LeaseLost, match="no longer pending"):
        queue.begin_submit(held.lease, i.id, lease_seconds=60, needed_seconds=60)


def test_an_intent_is_resolved_once_only_from_pending(queue: Queue) -> None:
    add(queue)
    held = queue.claim("a", 60)
    assert held is not None
    i = intent(queue, held.lease)
    assert queue.resolve_intent(held.lease, i.id, state=IntentState.CONFIRMED,
                                refund_number="RF-1", run_id="r")
    assert not queue.resolve_intent(held.lease, i.id, state=IntentState.ABSENT,
                                    refund_number=None, run_id="r")
    queue.submit_answered(held.lease, i.id)  # no longer pending: nothing stamped
    [stored] = queue.intents(held.id)
    assert (stored.state, stored.refund_number, stored.submit_answered_at) == \
        (IntentState.CONFIRMED, "RF-1", None)


# -- per-customer refunds --------------------------------------------------------------------


def _paid_case(queue: Queue, n: int, amount: str, *, state: str | None,
               email: str = "ada@example.com", intent_email: str | None = "ada@example.com"
               ) -> int:
    cid = add(queue, n, email=email)
    held = queue.claim(f"w{n}", 60, exclude=[c.id for c in queue.cases() if c.id != cid])
    assert held is not None and held.id == cid
    i = intent(queue, held.lease, amount, email=intent_email)
    if state is not None:
        queue.resolve_intent(held.lease, i.id, state=state,
                             refund_number=f"RF-{n}" if state == IntentState.CONFIRMED
                             else None, run_id="r")
    return cid


def test_customer_refunds_count_confirmed_and_pending_if_asked(queue: Queue) -> None:
    _paid_case(queue, 1, "10.00", state=IntentState.CONFIRMED)
    _paid_case(queue, 2, "20.00", state=None)  # pending: in flight
    _paid_case(queue, 3, "40.00", state=IntentState.ABSENT)
    _paid_case(queue, 4, "80.00", state=IntentState.CONFIRMED, email="bob@example.com",
               intent_email="bob@example.com")
    this = add(queue, 5)

    def amounts(**kw: Any) -> list[Decimal]:
        return sorted(a for _, a in queue.customer_refunds("ADA@example.com",
                                                           exclude_case=this, **kw))
    assert amounts() == [D("10.00")]
    assert amounts(include_pending=True) == [D("10.00"), D("20.00")]


def test_customer_refunds_leave_out_this_case(queue: Queue) -> None:
    cid = _paid_case(queue, 1, "10.00", state=IntentState.CONFIRMED)
    assert queue.customer_refunds("ada@example.com", exclude_case=cid) == []


def test_an_intent_without_an_email_counts_for_its_cases_customer(queue: Queue) -> None:
    _paid_case(queue, 1, "10.00", state=IntentState.CONFIRMED, intent_email=None)
    this = add(queue, 2)
    assert [a for _, a in queue.customer_refunds("ada@example.com", exclude_case=this)] == \
        [D("10.00")]


@pytest.mark.parametrize(("amount", "refused"), [("60.00", False), ("60.01", True)])
def test_the_customer_limit_on_an_intent_counts_pending_ones(queue: Queue, amount: str,
                                                             refused: bool) -> None:
    _paid_case(queue, 1, "15.00", state=IntentState.CONFIRMED)
    _paid_case(queue, 2, "25.00", state=None)  # pending
    _paid_case(queue, 3, "500.00", state=IntentState.ABSENT)  # never paid: does not count
    cid = add(queue, 4)
    held = queue.claim("w", 60)
    assert held is not None and held.id == cid
    limit = CustomerLimit("Ada@Example.com", D("100.00"), utcnow() - timedelta(days=30))
    if refused:
        with pytest.raises(CustomerLimitReached, match=r"to 100\.01 \(confirmed and in flight"):
            intent(queue, held.lease, amount, customer_limit=limit)
        assert queue.intents(cid) == []
    else:
        assert intent(queue, held.lease, amount, customer_limit=limit).amount == D(amount)


def test_the_customer_limit_counts_only_its_period(queue: Queue) -> None:
    _paid_case(queue, 1, "90.00", state=IntentState.CONFIRMED)
    cid = add(queue, 2)
    held = queue.claim("w", 60)
    assert held is not None and held.id == cid
    later = CustomerLimit("ada@example.com", D("100.00"), utcnow() + timedelta(seconds=5))
    assert intent(queue, held.lease, "50.00", customer_limit=later) is not None
    earlier = CustomerLimit("ada@example.com", D("100.00"), utcnow() - timedelta(days=1))
    with pytest.raises(CustomerLimitReached):
        intent(queue, held.lease, "50.00", customer_limit=earlier)


def test_refunds_since_counts_confirmed_ones_store_wide(queue: Queue) -> None:
    start = utcnow() - timedelta(seconds=1)
    _paid_case(queue, 1, "10.00", state=IntentState.CONFIRMED)
    _paid_case(queue, 2, "10.00", state=None)
    _paid_case(queue, 3, "10.00", state=IntentState.CONFIRMED, email="bob@example.com")
    assert queue.refunds_since(start) == 2
    assert queue.refunds_since(utcnow() + timedelta(seconds=5)) == 0


def test_refunds_since_leaves_out_intents_found_absent(queue: Queue) -> None:
    start = utcnow() - timedelta(seconds=1)
    _paid_case(queue, 1, "10.00", state=IntentState.ABSENT)  # resolved since, never paid
    _paid_case(queue, 2, "10.00", state=IntentState.CONFIRMED)
    assert queue.refunds_since(start) == 1


def _resolved_at(queue: Queue, cid: int) -> datetime:
    [stored] = queue.intents(cid)
    assert stored.resolved_at is not None
    return stored.resolved_at


def test_a_refund_confirmed_at_the_very_start_of_a_period_counts_in_it(queue: Queue) -> None:
    paid = _paid_case(queue, 1, "90.00", state=IntentState.CONFIRMED)
    since = _resolved_at(queue, paid)
    assert queue.refunds_since(since) == 1
    assert queue.refunds_since(since + timedelta(microseconds=1)) == 0
    cid = add(queue, 2)
    held = queue.claim("w", 60)
    assert held is not None and held.id == cid
    with pytest.raises(CustomerLimitReached):  # 90 at the limit's first instant + 10.01
        intent(queue, held.lease, "10.01",
               customer_limit=CustomerLimit("ada@example.com", D("100.00"), since))
    after = CustomerLimit("ada@example.com", D("100.00"), since + timedelta(microseconds=1))
    assert intent(queue, held.lease, "100.00", customer_limit=after).amount == D("100.00")


def test_a_confirmed_refund_counts_when_it_was_confirmed_a_pending_one_when_opened(
        queue: Queue) -> None:
    confirmed = _paid_case(queue, 1, "10.00", state=IntentState.CONFIRMED)
    pending = _paid_case(queue, 2, "20.00", state=None)
    long_ago = utcnow() - timedelta(days=40)
    with queue.session() as s:  # both intents opened 40 days ago
        for row in s.query(RefundIntent).all():
            row.created_at = long_ago
    this = add(queue, 3)
    at = dict((a, t) for t, a in queue.customer_refunds("ada@example.com", exclude_case=this,
                                                        include_pending=True))
    assert at[D("10.00")] == _resolved_at(queue, confirmed) > long_ago + timedelta(days=39)
    assert at[D("20.00")] == long_ago
    assert queue.intents(pending)[0].resolved_at is None


def test_the_customer_limit_leaves_out_this_cases_own_refunds(queue: Queue) -> None:
    cid = add(queue, 1)
    held = queue.claim("w", 60)
    assert held is not None and held.id == cid
    first = intent(queue, held.lease, "80.00")
    queue.resolve_intent(held.lease, first.id, state=IntentState.CONFIRMED,
                         refund_number="RF-1", run_id="r")
    limit = CustomerLimit("ada@example.com", D("100.00"), utcnow() - timedelta(days=1))
    # the same case's second partial refund: what it may still pay is policy's business
    assert intent(queue, held.lease, "80.00", customer_limit=limit).amount == D("80.00")


def test_intents_for_a_run_are_those_it_opened_or_resolved(queue: Queue) -> None:
    def opened(n: int, run: str) -> tuple[Lease, RefundIntent]:
        cid = add(queue, n)
        held = queue.claim(f"w{n}", 60, exclude=[c.id for c in queue.cases() if c.id != cid])
        assert held is not None and held.id == cid
        return held.lease, queue.open_intent(held.lease, order_number="ORD-1",
                                             transaction_id="TX-1", amount=D("5.00"),
                                             run_id=run)
    _, a = opened(1, "r1")  # opened by r1, still pending
    lease, b = opened(2, "r0")  # opened by r0, resolved by r1
    queue.resolve_intent(lease, b.id, state=IntentState.ABSENT, refund_number=None,
                         run_id="r1")
    _, c = opened(3, "r0")  # neither
    assert [i.id for i in queue.intents_for_run("r1")] == [a.id, b.id]
    assert [i.id for i in queue.intents_for_run("r0")] == [b.id, c.id]
    assert queue.intents_for_run("r9") == []


def _two_intents_beside_another_case(queue: Queue) -> tuple[int, Any, int, Any, Any, Any]:
    """A paid case with its intent, and another case held with two intents of its own:
    (other case, its intent, this case, this case as claimed, first, second intent)."""
    other_case = _paid_case(queue, 1, "10.00", state=None)
    other = queue.intents(other_case)[0]
    cid = add(queue, 2)
    held = queue.claim("w", 60, exclude=[other_case])
    assert held is not None and held.id == cid
    first, second = intent(queue, held.lease), intent(queue, held.lease)
    return other_case, other, cid, held, first, second


def test_submit_answered_stamps_only_that_intent_of_this_case(queue: Queue) -> None:
    other_case, other, cid, held, first, second = _two_intents_beside_another_case(queue)
    queue.submit_answered(held.lease, second.id)
    queue.submit_answered(held.lease, other.id)  # not this case's: nothing happens
    stamped = {i.id: i.submit_answered_at is not None for i in queue.intents(cid)}
    assert stamped == {first.id: False, second.id: True}
    assert queue.intents(other_case)[0].submit_answered_at is None


def test_begin_submit_stamps_only_that_intent_of_this_case(queue: Queue) -> None:
    other_case, other, cid, held, first, second = _two_intents_beside_another_case(queue)
    queue.begin_submit(held.lease, second.id, lease_seconds=300, needed_seconds=10)
    stamped = {i.id: i.submit_started_at is not None for i in queue.intents(cid)}
    assert stamped == {first.id: False, second.id: True}
    with pytest.raises(LeaseLost, match="no longer pending"):  # not this case's intent
        queue.begin_submit(held.lease, other.id, lease_seconds=300, needed_seconds=10)
    assert queue.intents(other_case)[0].submit_started_at is None


def test_an_intent_written_before_emails_were_kept_counts_for_its_cases_customer(
        queue: Queue) -> None:
    _paid_case(queue, 1, "10.00", state=IntentState.CONFIRMED, email="Ada@Example.com")
    _paid_case(queue, 2, "20.00", state=IntentState.CONFIRMED, email="bob@example.com")
    with queue.session() as s:  # intents of 0.1 carry no email of their own
        for row in s.query(RefundIntent).all():
            row.customer_email = None
    this = add(queue, 3)
    assert [a for _, a in queue.customer_refunds("ada@EXAMPLE.com", exclude_case=this)] == \
        [D("10.00")]
    assert [a for _, a in queue.customer_refunds("bob@example.com", exclude_case=this)] == \
        [D("20.00")]


def test_an_intent_key_is_found_inside_a_reference_someone_edited(queue: Queue) -> None:
    from bots.reports.reconcile import reference_words

    cid = add(queue)
    held = queue.claim("w", 60)
    assert held is not None
    key = intent(queue, held.lease).key
    case_digits = queue.get_case(cid).ref.replace("-", "")  # type: ignore[union-attr]
    assert key.startswith(case_digits + "-")
    assert key in reference_words(f"refund{key}xyz")  # glued to other words, still found


def test_resolving_stamps_only_that_intent_of_this_case_and_records_it(queue: Queue) -> None:
    other_case, other, cid, held, first, second = _two_intents_beside_another_case(queue)
    assert queue.resolve_intent(held.lease, second.id, state=IntentState.CONFIRMED,
                                refund_number="RF-7", run_id="r5")
    assert _last(queue, cid) == ("r5", "w", CaseState.PROCESSING, CaseState.PROCESSING,
                                 "intent_confirmed", f"key {second.key}, refund RF-7")
    assert queue.resolve_intent(held.lease, first.id, state=IntentState.ABSENT,
                                refund_number=None, run_id="r5")
    assert _last(queue, cid)[4:] == ("intent_absent", f"key {first.key}")
    assert not queue.resolve_intent(held.lease, other.id, state=IntentState.ABSENT,
                                    refund_number=None, run_id="r5")  # not this case's
    assert queue.intents(other_case)[0].state == IntentState.PENDING


def test_finishing_is_recorded_and_its_outbox_written_in_the_same_transaction(
        queue: Queue) -> None:
    cid = add(queue)
    held = queue.claim("w", 60)
    assert held is not None
    seen: list[object] = []

    def outbox(s: Any, case: Case) -> None:
        seen.append(s.get(Case, case.id).state)  # the session that finishes the case

    queue.finish(held.lease, state=CaseState.ESCALATED, outcome=None, reason="a human decides",
                 actor="w", run_id="r9", outbox=outbox)
    assert seen == [CaseState.ESCALATED]
    assert _last(queue, cid) == ("r9", "w", CaseState.PROCESSING, CaseState.ESCALATED,
                                 CaseState.ESCALATED, "a human decides")


def test_an_intent_is_recorded_for_the_cases_customer_when_none_is_named(queue: Queue) -> None:
    cid = add(queue, email="Ada@Example.com")
    held = queue.claim("w", 60)
    assert held is not None
    opened = intent(queue, held.lease, "12.50", email=None)
    assert queue.intents(cid)[0].customer_email == "ada@example.com"
    assert _last(queue, cid) == ("r", "w", CaseState.PROCESSING, CaseState.PROCESSING,
                                 "intent_recorded", f"refund 12.50 on TX-1, key {opened.key}")
    phone_only = queue.add_request(RefundRequest(
        channel="phone", source_id="call-1", received_at=datetime(2026, 11, 28, tzinfo=UTC),
        reason_text="refund", customer_phone="+49301234567", order_number="ORD-100009"))[0]
    held = queue.claim("w", 60, exclude=[cid])
    assert held is not None and held.id == phone_only
    intent(queue, held.lease, email=None)
    assert queue.intents(phone_only)[0].customer_email is None  # unknown, never a made-up one


def test_intent_keys_are_every_intents_key(queue: Queue) -> None:
    assert queue.intent_keys() == set()
    a = _paid_case(queue, 1, "10.00", state=None)
    b = _paid_case(queue, 2, "10.00", state=IntentState.ABSENT)
    assert queue.intent_keys() == {queue.intents(a)[0].key, queue.intents(b)[0].key}


# -- the audit trail of every fenced write -----------------------------------------------------


def _last(queue: Queue, cid: int) -> tuple[object, ...]:
    row = queue.audit_trail(cid)[-1]
    return (row.run_id, row.actor, row.from_state, row.to_state, row.event, row.detail)


def test_each_way_back_to_the_queue_is_recorded_with_its_run_and_reason(queue: Queue) -> None:
    cid = add(queue)
    held = queue.claim("w", 60)
    assert held is not None
    queue.retry_later(held.lease, delay=2.25, error="portal 500", actor="w", run_id="r1")
    assert _last(queue, cid) == ("r1", "w", CaseState.PROCESSING, CaseState.QUEUED,
                                 "retry_scheduled", "in 2.2s after: portal 500")
    set_lease_end(queue, cid, -1)
    with queue.session() as s:
        row = s.get(Case, cid)
        assert row is not None
        row.next_attempt_at = None
    held = queue.claim("w", 60)
    assert held is not None
    queue.defer(held.lease, delay=30, why="a submit may be in flight", actor="w", run_id="r2")
    assert _last(queue, cid) == ("r2", "w", CaseState.PROCESSING, CaseState.QUEUED,
                                 "deferred", "for 30s: a submit may be in flight")
    with queue.session() as s:
        row = s.get(Case, cid)
        assert row is not None
        row.next_attempt_at = None
    held = queue.claim("w", 60)
    assert held is not None
    queue.release(held.lease, actor="w", run_id="r3", why="run stopping")
    assert _last(queue, cid) == ("r3", "w", CaseState.PROCESSING, CaseState.QUEUED,
                                 "released", "run stopping")


def test_a_claim_and_a_takeover_are_recorded_with_the_attempt_and_token(queue: Queue) -> None:
    cid = add(queue)
    first = queue.claim("a", 60, run_id="r1")
    assert first is not None and first.attempts == 1
    assert _last(queue, cid) == ("r1", "a", CaseState.QUEUED, CaseState.PROCESSING, "claimed",
                                 f"attempt 1, lease token {first.lease_token}")
    set_lease_end(queue, cid, -1)
    again = queue.claim("b", 60, run_id="r2")
    assert again is not None and again.lease_token == first.lease_token + 1
    assert _last(queue, cid) == (
        "r2", "b", CaseState.PROCESSING, CaseState.PROCESSING, "claimed",
        f"attempt 2, lease token {again.lease_token}; taken over from a "
        "(lease ran out or holder dead)")


def test_a_case_set_aside_as_poison_is_failed_unlocked_fenced_and_recorded(
        queue: Queue) -> None:
    cid = add(queue)
    held = queue.claim("dies", 60)
    assert held is not None
    set_lease_end(queue, cid, -1)
    assert queue.claim("b", 60, run_id="r9", max_attempts=1) is None
    case = queue.get_case(cid)
    assert case is not None
    reason = ("set aside: its last attempts never finished (1 in all; the runner died or "
              "stalled each time), so it may be what kills the runner. Look at the case and "
              "its screenshots, then `cases retry`.")
    assert (case.state, case.outcome, case.reason, case.last_error) == (
        CaseState.FAILED, "failed", reason, reason)
    assert (case.locked_by, case.locked_until, case.attempts) == (None, None, 1)
    assert case.lease_token == held.lease_token + 1  # the dead runner's writes are refused
    assert _last(queue, cid) == ("r9", "b", CaseState.PROCESSING, CaseState.FAILED, "poison",
                                 reason)
    with pytest.raises(LeaseLost):
        queue.note(held.lease, event="e", detail="d", actor="dies", run_id="r")


def test_a_note_is_recorded_with_its_run_and_the_state_it_leaves_alone(queue: Queue) -> None:
    cid = add(queue)
    held = queue.claim("w", 60)
    assert held is not None
    queue.note(held.lease, event="identified", detail="order found by email", actor="w",
               run_id="r7")
    assert _last(queue, cid) == ("r7", "w", CaseState.PROCESSING, CaseState.PROCESSING,
                                 "identified", "order found by email")


def test_a_merge_is_recorded_on_both_cases(queue: Queue) -> None:
    target = add(queue, 2)
    loose_req = RefundRequest(channel="email", source_id="loose",
                              received_at=datetime(2026, 11, 28, tzinfo=UTC),
                              reason_text="refund", customer_email="ada@example.com")
    loose = queue.add_request(loose_req)[0]
    held = queue.claim("w", 60, exclude=[target])
    assert held is not None and held.id == loose
    target_state = queue.get_case(target).state  # type: ignore[union-attr]
    assert queue.merge(held.lease, "order:ORD-100002", actor="w", run_id="r") == target
    refs = {c.id: c.ref for c in queue.cases()}
    assert _last(queue, loose) == ("r", "w", CaseState.PROCESSING, CaseState.MERGED, "merged",
                                   f"same order as {refs[target]}")
    assert _last(queue, target) == ("r", "w", target_state, target_state, "contact_linked",
                                    f"contacts of {refs[loose]} merged in")


def test_a_cases_intents_come_in_the_order_they_were_opened(queue: Queue) -> None:
    """The processor settles a case's intents oldest first. PostgreSQL returns a table's
    rows in no set order (an updated row moves to the end of the heap): only ORDER BY
    keeps the order, which this test checks there too."""
    add(queue)
    held = queue.claim("a", 60)
    assert held is not None
    first, second, third = (intent(queue, held.lease, amount) for amount in ("1", "2", "3"))
    assert queue.resolve_intent(held.lease, first.id, state=IntentState.ABSENT,
                                refund_number=None, run_id="r")
    assert queue.resolve_intent(held.lease, second.id, state=IntentState.CONFIRMED,
                                refund_number="RF-2", run_id="r")
    assert [i.id for i in queue.intents(held.id)] == [first.id, second.id, third.id]


def test_an_intent_key_never_reads_as_a_card_number() -> None:
    """Card masking blanks any 13-19 digits that pass Luhn: a key whose random part was
    all digits (`C000001-01099000`) lost itself in the audit text about four times in a
    thousand. Keys keep the form reconciliation reads (`C` + digits, `-`, 8 hex)."""
    import re

    from bots.intake.extract import mask_secrets
    from bots.queue.intents import intent_key

    old = "key C000001-01099000"
    assert mask_secrets(old) != old  # what the old form did
    form = re.compile(r"C\d{6,}-[0-9a-f]{8}")
    for case_id in (*range(1, 2_000), *range(999_000, 1_001_000, 7)):
        for _ in range(5):
            text = f"refund 12.00 on TX-1, key {intent_key(case_id)}"
            assert mask_secrets(text) == text, text
            assert form.fullmatch(text.rsplit(" ", 1)[1])
