"""Users, claims and four-eyes decisions: the rules every decision route shares."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from test_escalations import escalated_case

from bots.queue import CaseState, Queue
from bots.queue.staff import ProposalState, Staff, StaffError

PW = "correct horse battery"


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    return Queue(f"sqlite:///{tmp_path / 'q.sqlite'}")


@pytest.fixture
def staff(queue: Queue) -> Staff:
    st = Staff(queue.url)
    for name, role in (("ana", "agent"), ("bo", "agent"), ("sue", "supervisor"),
                       ("vic", "viewer")):
        st.add_user(name, role, PW)
    return st


def decide(staff: Staff, case_id: int, who: str, decision: str = "approve",
           amount: str | None = None, **kw: object):  # noqa: ANN201
    args: dict = {"comment": "checked", "version": None, "four_eyes_above": None, **kw}
    return staff.decide(case_id, username=who, decision=decision,
                        amount=Decimal(amount) if amount else None, **args)


def test_passwords_are_hashed_and_checked(staff: Staff) -> None:
    row = staff.user("ana")
    assert row is not None and row.password_hash.startswith("scrypt:") and PW not in \
        row.password_hash
    assert staff.authenticate("ana", PW) is not None
    assert staff.authenticate("ana", PW + "x") is None
    assert staff.authenticate("nobody", PW) is None
    staff.set_active("ana", False)
    assert staff.authenticate("ana", PW) is None


@pytest.mark.parametrize(("name", "role", "password"), [
    ("Ana Smith", "agent", PW), ("x", "agent", PW), ("eve", "admin", PW), ("eve", "agent", "short"),
    ("ana", "agent", PW),  # exists already
])
def test_bad_users_are_refused_with_why(staff: Staff, name: str, role: str,
                                        password: str) -> None:
    with pytest.raises(StaffError):
        staff.add_user(name, role, password)


def test_only_existing_deciders_decide(queue: Queue, staff: Staff) -> None:
    case = escalated_case(queue, 1)
    assert decide(staff, case, "nobody").status == "refused"
    out = decide(staff, case, "vic")
    assert out.status == "refused" and "viewer" in out.message
    assert queue.get_case(case).state == CaseState.ESCALATED  # type: ignore[union-attr]


def test_a_claimed_case_is_decided_by_its_assignee_or_a_supervisor(queue: Queue,
                                                                   staff: Staff) -> None:
    a, b = escalated_case(queue, 1), escalated_case(queue, 2)
    before = queue.get_case(a).updated_at  # type: ignore[union-attr]
    staff.claim(a, "ana")
    assert queue.get_case(a).updated_at == before  # type: ignore[union-attr]  # no stale views
    with pytest.raises(StaffError, match="claimed by ana"):
        staff.claim(a, "bo")
    out = decide(staff, a, "bo")
    assert out.status == "refused" and "claimed by ana" in out.message
    assert decide(staff, a, "ana").status == "applied"
    assert decide(staff, a, "ana").status == "already applied"
    staff.claim(b, "ana")
    assert decide(staff, b, "sue", "reject").status == "applied"
    trail = [(r.actor, r.event) for r in queue.audit_trail(b)]
    assert ("ana", "claimed") in trail and ("sue", "human_decision") in trail


def test_only_supervisors_assign(queue: Queue, staff: Staff) -> None:
    case = escalated_case(queue, 1)
    with pytest.raises(StaffError, match="supervisor"):
        staff.assign(case, "bo", by="ana")
    staff.assign(case, "bo", by="sue", comment="fraud desk")
    assert queue.get_case(case).assigned_to == "bo"  # type: ignore[union-attr]
    with pytest.raises(StaffError):
        staff.assign(case, "vic", by="sue")  # a viewer cannot be given cases


def test_a_stale_decision_is_refused(queue: Queue, staff: Staff) -> None:
    case = escalated_case(queue, 1)
    seen = queue.get_case(case).updated_at  # type: ignore[union-attr]
    out = decide(staff, case, "ana", version=seen - timedelta(minutes=5))
    assert out.status == "refused" and "changed since you looked" in out.message
    assert decide(staff, case, "ana", version=seen).status == "applied"


def test_four_eyes_above_the_amount(queue: Queue, staff: Staff) -> None:
    case = escalated_case(queue, 1)  # the bot proposed 94.97
    limit = Decimal("50.00")
    out = decide(staff, case, "ana", four_eyes_above=limit)
    assert out.status == "proposed"
    assert queue.get_case(case).state == CaseState.ESCALATED  # type: ignore[union-attr]
    assert decide(staff, case, "ana", four_eyes_above=limit).status == "already proposed"
    assert decide(staff, case, "sue", "reject").status == "refused"  # one waits already
    own = staff.confirm(case, username="ana", approve=True)
    assert own.status == "refused" and "second person" in own.message
    assert staff.confirm(case, username="vic", approve=True).status == "refused"
    done = staff.confirm(case, username="bo", approve=True)
    assert done.status == "applied", done.message
    after = queue.get_case(case)
    assert after is not None and after.state == CaseState.QUEUED
    assert after.human_agent == "ana" and "second approval: bo" in (after.human_comment or "")
    assert staff.confirm(case, username="sue", approve=True).status == "refused"  # none waits


def test_below_the_amount_and_rejections_need_one_person(queue: Queue, staff: Staff) -> None:
    a, b = escalated_case(queue, 1), escalated_case(queue, 2)
    limit = Decimal("50.00")
    assert decide(staff, a, "ana", "partial", "40.00", four_eyes_above=limit).status == "applied"
    assert decide(staff, b, "ana", "reject", four_eyes_above=limit).status == "applied"


def test_a_refused_or_outdated_proposal_is_not_applied(queue: Queue, staff: Staff) -> None:
    a, b = escalated_case(queue, 1), escalated_case(queue, 2)
    limit = Decimal("10.00")
    assert decide(staff, a, "ana", four_eyes_above=limit).status == "proposed"
    assert staff.confirm(a, username="bo", approve=False, comment="no").status == "refused"
    assert staff.pending_proposal(a) is None
    assert queue.get_case(a).state == CaseState.ESCALATED  # type: ignore[union-attr]
    # the case changes (e.g. re-escalated with new facts) before the second look
    assert decide(staff, b, "ana", four_eyes_above=limit).status == "proposed"
    with queue.session() as s:
        from bots.queue import Case, utcnow
        s.get(Case, b).updated_at = utcnow() + timedelta(seconds=5)  # type: ignore[union-attr]
    out = staff.confirm(b, username="bo", approve=True)
    assert out.status == "refused" and "void" in out.message
    with staff.session() as s:
        from bots.queue.staff import ProposalRow
        assert {p.state for p in s.query(ProposalRow)} == {ProposalState.REFUSED,
                                                           ProposalState.VOID}
