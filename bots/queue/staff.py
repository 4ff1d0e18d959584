"""Ops staff and their work on escalated cases: users, roles, claims, four-eyes decisions.

Every route a person decides by (the console, `cases approve|reject`, `decisions import`)
goes through `Staff.decide`, so the same rules hold everywhere:

- the decider is an existing, active user who may decide (agent or supervisor; a viewer
  only looks);
- a case claimed by one agent is decided by that agent or a supervisor, nobody else;
- a decision made on what the case looked like earlier (its version: `updated_at`) is
  refused, never applied to facts the person did not see;
- above the four-eyes amount a decision that pays is only proposed; a second user confirms
  it (or refuses it) before it is applied;
- each check and the decision itself happen in one transaction (SQLite: the write lock;
  PostgreSQL: the case row locked), so two people clicking at once never decide twice.

Claims keep the case's version: taking a case does not make other people's views stale.
"""

from __future__ import annotations

import functools
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import ForeignKey, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.orm.attributes import set_committed_value
from werkzeug.security import check_password_hash, generate_password_hash

from bots.queue.audit import audit
from bots.queue.base import Store
from bots.queue.decisions import apply_human_decision, raise_reason
from bots.queue.schema import Base, Case, CaseState, Money, UTCDateTime, case_ref, utcnow

USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,49}")
PASSWORD_MIN = 10
STALE_TOLERANCE_SECONDS = 0.005  # a workbook keeps times to the millisecond at best
HASH_METHOD = "scrypt"  # werkzeug's default: memory-hard, no extra dependency


class Role(StrEnum):
    AGENT = "agent"  # claims and decides escalated cases
    SUPERVISOR = "supervisor"  # also assigns, decides any claimed case, retries failed ones
    VIEWER = "viewer"  # looks only


DECIDERS = (Role.AGENT, Role.SUPERVISOR)


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(50), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(300))
    active: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Changing the password ends every session signed with the old one (see console.auth).
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def is_supervisor(self) -> bool:
        return self.role == Role.SUPERVISOR

    @property
    def may_decide(self) -> bool:
        return bool(self.active) and self.role in DECIDERS


class ProposalState:
    PENDING = "pending"  # waiting for a second user
    CONFIRMED = "confirmed"  # a second user approved: the decision was applied
    REFUSED = "refused"  # a second user said no: the case waits for a new decision
    VOID = "void"  # the case changed before anyone confirmed


class ProposalRow(Base):
    """A decision above the four-eyes amount, waiting for a second user."""

    __tablename__ = "decision_proposals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    decision: Mapped[str] = mapped_column(String(20))
    amount: Mapped[Decimal | None] = mapped_column(Money)
    pays: Mapped[Decimal] = mapped_column(Money)  # what the decision would pay
    comment: Mapped[str] = mapped_column(Text, default="")
    proposed_by: Mapped[str] = mapped_column(String(50))
    case_version: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(20), default=ProposalState.PENDING, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(50))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class StaffError(Exception):
    """A person's action is refused: the message says why, in words they understand."""


@dataclass(frozen=True)
class Outcome:
    status: str  # "applied", "already applied", "proposed", "refused"
    message: str


def same_version(a: datetime | None, b: datetime | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs((a - b).total_seconds()) <= STALE_TOLERANCE_SECONDS


class Staff(Store):
    """Users, claims and decisions, on the queue's database."""

    @classmethod
    def on(cls, store: Store) -> Staff:
        """Staff on an open queue's engine (no second connection pool, no second migration)."""
        staff = cls.__new__(cls)
        staff.url, staff.engine = store.url, store.engine
        return staff

    # -- users -------------------------------------------------------------------------

    def add_user(self, username: str, role: str, password: str) -> UserRow:
        name = username.strip().lower()
        if not USERNAME.fullmatch(name):
            raise StaffError(f"user name {username[:60]!r}: 2-50 characters, lowercase "
                             "letters, digits, '.', '_' or '-'")
        role_ = _role(role)
        _check_password(password)
        with self.session() as s:
            if s.scalar(select(UserRow).where(UserRow.username == name)) is not None:
                raise StaffError(f"user {name} exists already")
            row = UserRow(username=name, role=role_,
                          password_hash=generate_password_hash(password, method=HASH_METHOD))
            s.add(row)
            return row

    def set_password(self, username: str, password: str) -> None:
        _check_password(password)
        with self.session() as s:
            row = self._user(s, username)
            row.password_hash = generate_password_hash(password, method=HASH_METHOD)
            row.password_changed_at = utcnow()

    def set_role(self, username: str, role: str) -> None:
        with self.session() as s:
            self._user(s, username).role = _role(role)

    def set_active(self, username: str, active: bool) -> None:
        with self.session() as s:
            row = self._user(s, username)
            row.active = int(active)
            row.password_changed_at = utcnow()  # ends the user's sessions

    def users(self) -> list[UserRow]:
        with self.session() as s:
            return list(s.scalars(select(UserRow).order_by(UserRow.username)))

    def user(self, username: str) -> UserRow | None:
        with self.session() as s:
            return s.scalar(select(UserRow).where(UserRow.username == username.strip().lower()))

    def user_by_id(self, user_id: int) -> UserRow | None:
        with self.session() as s:
            return s.get(UserRow, user_id)

    def authenticate(self, username: str, password: str) -> UserRow | None:
        """The active user with this password, else None (same work either way)."""
        row = self.user(username)
        hashed = row.password_hash if row is not None else _dummy_hash()
        ok = check_password_hash(hashed, password)
        return row if ok and row is not None and row.active else None

    def decider(self, username: str) -> UserRow:
        """The user named as the one deciding, who must exist and may decide."""
        row = self.user(username)
        if row is None:
            raise StaffError(f"no user {username.strip()[:60]!r}: create it with `refund-bots "
                             f"users add NAME --role agent` (decisions name a real person)")
        if not row.may_decide:
            raise StaffError(f"user {row.username} may not decide (role {row.role}"
                             + ("" if row.active else ", deactivated") + ")")
        return row

    @staticmethod
    def _user(s: Session, username: str) -> UserRow:
        row = s.scalar(select(UserRow).where(UserRow.username == username.strip().lower()))
        if row is None:
            raise StaffError(f"no user {username.strip()[:60]!r}")
        return row

    # -- claims ------------------------------------------------------------------------

    def claim(self, case_id: int, username: str) -> None:
        """Take an escalated case: from now on only you (or a supervisor) decide it."""
        with self.session() as s:
            user = self._acting(s, username)
            case = self._escalated(s, case_id)
            if case.assigned_to == user.username:
                return
            if case.assigned_to and not user.is_supervisor:
                raise StaffError(f"{case.ref} is claimed by {case.assigned_to}: ask them or "
                                 "a supervisor to hand it over")
            self._set_assignee(s, case, user.username, user.username, "claimed")

    def release(self, case_id: int, username: str) -> None:
        with self.session() as s:
            user = self._acting(s, username)
            case = self._escalated(s, case_id)
            if case.assigned_to != user.username and not user.is_supervisor:
                raise StaffError(f"{case.ref} is not yours to release")
            self._set_assignee(s, case, None, user.username, "released")

    def assign(self, case_id: int, to: str, by: str, comment: str = "") -> None:
        """A supervisor hands an escalated case to an agent (or supervisor)."""
        with self.session() as s:
            boss = self._acting(s, by)
            if not boss.is_supervisor:
                raise StaffError("only a supervisor assigns cases to others")
            target = self._user(s, to)
            if not target.may_decide:
                raise StaffError(f"user {target.username} may not decide cases")
            case = self._escalated(s, case_id)
            self._set_assignee(s, case, target.username, boss.username, "assigned", comment)

    @staticmethod
    def _set_assignee(s: Session, case: Case, to: str | None, by: str, event: str,
                      comment: str = "") -> None:
        # updated_at is written as it was: a claim changes nothing a decision rests on.
        s.execute(update(Case).where(Case.id == case.id)
                  .values(assigned_to=to, updated_at=case.updated_at)
                  .execution_options(synchronize_session=False))
        detail = f"{case.assigned_to or 'unassigned'} -> {to or 'unassigned'}"
        set_committed_value(case, "assigned_to", to)
        audit(s, case.id, None, by, case.state, case.state, event,
              detail + (f": {comment}" if comment else ""))

    # -- decisions ---------------------------------------------------------------------

    def decide(self, case_id: int, *, username: str, decision: str, amount: Decimal | None,
               comment: str, version: datetime | None, four_eyes_above: Decimal | None,
               run_id: str | None = None, order_number: str | None = None,
               raise_limit: Decimal | None = None) -> Outcome:
        """Decide an escalated case, or propose the decision for a second user's approval.

        `version` is the case's `updated_at` as the person saw it (None: they act on the
        case as it is now, e.g. the command line). Refusals are Outcome("refused", why).
        """
        decision = decision.strip().lower()
        try:
            return self._decide(case_id, username=username, decision=decision, amount=amount,
                                comment=comment, version=version,
                                four_eyes_above=four_eyes_above, run_id=run_id,
                                order_number=order_number, raise_limit=raise_limit)
        except StaffError as exc:
            return Outcome("refused", str(exc))

    def _decide(self, case_id: int, *, username: str, decision: str, amount: Decimal | None,
                comment: str, version: datetime | None, four_eyes_above: Decimal | None,
                run_id: str | None, order_number: str | None,
                raise_limit: Decimal | None) -> Outcome:
        with self.session() as s:
            user = self._acting(s, username)
            case = _locked(s, case_id)
            if order_number and (case.order_number or "").upper() != order_number.upper():
                raise StaffError(f"{case.ref} is for order {case.order_number or '(none)'}, "
                                 f"not {order_number}")
            if case.state != CaseState.ESCALATED:
                # the queue knows whether this very decision was applied already
                status = apply_human_decision(s, case, decision=decision, amount=amount,
                                              agent=user.username, comment=comment,
                                              run_id=run_id)
                if status == "already applied":
                    return Outcome(status, f"{case.ref}: this decision was applied already")
                raise StaffError(f"{case.ref} is not waiting for a decision (it is "
                                 f"{case.state})")
            if version is not None and not same_version(version, case.updated_at):
                raise StaffError(f"{case.ref} changed since you looked at it (new contact, "
                                 "new facts or another decision): look again and decide anew")
            if case.assigned_to and case.assigned_to != user.username \
                    and not user.is_supervisor:
                raise StaffError(f"{case.ref} is claimed by {case.assigned_to}: only they or "
                                 "a supervisor decide it")
            if (waiting := self._pending(s, case.id)) is not None:
                if (waiting.proposed_by, waiting.decision, waiting.amount) == (
                        user.username, decision, amount):
                    return Outcome("already proposed", f"{case.ref}: this decision waits for "
                                   "a second person's approval already")
                raise StaffError(f"{case.ref} has a decision waiting for a second approval")
            pays = Decimal("0.00") if decision == "reject" else (amount or
                                                                 case.approved_amount)
            if decision != "reject" and not pays:
                raise StaffError("approve without an amount, and the bot proposed none: "
                                 "enter the amount")
            if not case.assigned_to:
                self._set_assignee(s, case, user.username, user.username, "claimed")
            raised = raise_reason(case, amount, raise_limit) if decision != "reject" else ""
            if raised or (decision != "reject" and four_eyes_above is not None
                          and pays is not None and pays > four_eyes_above):
                s.add(ProposalRow(case_id=case.id, decision=decision, amount=amount,
                                  pays=pays, comment=comment, proposed_by=user.username,
                                  case_version=case.updated_at))
                audit(s, case.id, run_id, user.username, case.state, case.state,
                      "four_eyes_requested", f"{decision} {pays} by {user.username}"
                      + (f": {comment}" if comment else "")
                      + (f" ({raised}: a second person must approve)" if raised else
                         f" (above {four_eyes_above}: a second person must approve)"))
                return Outcome("proposed", f"{case.ref}: {decision} of {pays} waits for a "
                               "second person's approval (four eyes)")
            status = apply_human_decision(s, case, decision=decision, amount=amount,
                                          agent=user.username, comment=comment,
                                          run_id=run_id)
            return Outcome(status, f"{case.ref}: {decision} {status}")

    def confirm(self, case_id: int, *, username: str, approve: bool, comment: str = "",
                run_id: str | None = None) -> Outcome:
        """The second pair of eyes: approve (apply) or refuse the waiting proposal."""
        try:
            return self._confirm(case_id, username=username, approve=approve, comment=comment,
                                 run_id=run_id)
        except StaffError as exc:
            return Outcome("refused", str(exc))

    def _confirm(self, case_id: int, *, username: str, approve: bool, comment: str,
                 run_id: str | None) -> Outcome:
        with self.session() as s:
            user = self._acting(s, username)
            case = _locked(s, case_id)
            proposal = self._pending(s, case_id)
            if proposal is None:
                raise StaffError(f"{case.ref} has no decision waiting for approval")
            if proposal.proposed_by == user.username:
                raise StaffError("four eyes: a second person must approve your own proposal")
            now = utcnow()
            if case.state != CaseState.ESCALATED or not same_version(
                    proposal.case_version, case.updated_at):
                proposal.state, proposal.decided_by, proposal.decided_at = (
                    ProposalState.VOID, user.username, now)
                audit(s, case.id, run_id, user.username, case.state, case.state,
                      "four_eyes_void", "the case changed after the proposal")
                return Outcome("refused", f"{case.ref} changed after the decision was "
                               "proposed: the proposal is void, decide anew")
            proposal.decided_by, proposal.decided_at = user.username, now
            words = f" ({comment})" if comment else ""
            if not approve:
                proposal.state = ProposalState.REFUSED
                audit(s, case.id, run_id, user.username, case.state, case.state,
                      "four_eyes_refused", f"{proposal.decision} {proposal.pays} by "
                      f"{proposal.proposed_by} refused by {user.username}{words}")
                return Outcome("refused", f"{case.ref}: proposal refused; the case waits "
                               "for a new decision")
            proposal.state = ProposalState.CONFIRMED
            audit(s, case.id, run_id, user.username, case.state, case.state,
                  "four_eyes_confirmed", f"{proposal.decision} {proposal.pays} by "
                  f"{proposal.proposed_by} approved by {user.username}{words}")
            text = proposal.comment + f" (second approval: {user.username})"
            status = apply_human_decision(s, case, decision=proposal.decision,
                                          amount=proposal.amount,
                                          agent=proposal.proposed_by,
                                          comment=text.strip(), run_id=run_id)
            return Outcome(status, f"{case.ref}: {proposal.decision} {status} "
                           f"(four eyes: {proposal.proposed_by} + {user.username})")

    def pending_proposal(self, case_id: int) -> ProposalRow | None:
        with self.session() as s:
            return self._pending(s, case_id)

    def pending_proposals(self) -> dict[int, ProposalRow]:
        with self.session() as s:
            rows = s.scalars(select(ProposalRow).where(
                ProposalRow.state == ProposalState.PENDING))
            return {p.case_id: p for p in rows}

    @staticmethod
    def _pending(s: Session, case_id: int) -> ProposalRow | None:
        return s.scalar(select(ProposalRow).where(ProposalRow.case_id == case_id,
                                                  ProposalRow.state == ProposalState.PENDING)
                        .order_by(ProposalRow.id.desc()).limit(1))

    def _acting(self, s: Session, username: str) -> UserRow:
        row = s.scalar(select(UserRow).where(UserRow.username == username.strip().lower()))
        if row is None:
            raise StaffError(f"no user {username.strip()[:60]!r}: create it with `refund-bots "
                             "users add NAME --role agent` (decisions name a real person)")
        if not row.may_decide:
            raise StaffError(f"user {row.username} may not decide (role {row.role}"
                             + ("" if row.active else ", deactivated") + ")")
        return row

    @staticmethod
    def _escalated(s: Session, case_id: int) -> Case:
        case = _locked(s, case_id)
        if case.state != CaseState.ESCALATED:
            raise StaffError(f"{case.ref} is not waiting for a decision (it is {case.state})")
        return case


def _locked(s: Session, case_id: int) -> Case:
    """The case row, locked for this transaction (SQLite: the write lock is held already)."""
    case = s.scalar(select(Case).where(Case.id == case_id).with_for_update())
    if case is None:
        raise StaffError(f"unknown case {case_ref(case_id)}")
    return case


def _role(role: str) -> Role:
    try:
        return Role(role.strip().lower())
    except ValueError:
        raise StaffError(f"role {role[:30]!r}: one of agent, supervisor, viewer") from None


def _check_password(password: str) -> None:
    if len(password) < PASSWORD_MIN:
        raise StaffError(f"a password needs at least {PASSWORD_MIN} characters")


@functools.cache
def _dummy_hash() -> str:
    """Checked when the user name is unknown: a wrong name costs what a wrong password does."""
    return generate_password_hash(secrets.token_urlsafe(16), method=HASH_METHOD)
