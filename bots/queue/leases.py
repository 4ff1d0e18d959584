"""The consumer side: claiming a case under a fenced lease, and every write a runner makes.

A runner holds a case by a lease: owner, expiry, and a fencing token that grows by one at
every claim. Every write a runner makes about its case carries the token it claimed with
(`UPDATE ... WHERE id = ? AND lease_token = ?`); zero rows means another runner has taken
the case over, and the write raises `LeaseLost` instead of happening. Leases are renewed
by a heartbeat (see `bots.work.heartbeat`); a case whose lease ran out, or whose holder
is provably dead, is claimable again. There is no global processing lock: any number of
runners, on any number of machines, share one queue.

Claiming on PostgreSQL uses `SELECT ... FOR UPDATE SKIP LOCKED`, so runners never wait
for each other's candidates; on SQLite the write lock serialises claims.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session, selectinload

from bots.errors import SystemException
from bots.queue.audit import audit
from bots.queue.base import Store, rowcount
from bots.queue.identity import holder_is_dead
from bots.queue.schema import Case, CaseState, Lease, utcnow

CANDIDATES = 20  # due cases looked at per claim on SQLite (PostgreSQL locks one at a time)


class _Poison:
    """A case set aside as failed because every attempt at it died."""


POISON = _Poison()


class LeaseLost(SystemException):
    """Another runner holds this case now (our lease ran out or was taken over).

    The runner abandons the case at once, writing nothing to the queue or the legacy apps.
    """


def _due(now: datetime) -> ColumnElement[bool]:
    return or_(
        (Case.state == CaseState.QUEUED)
        & or_(Case.next_attempt_at.is_(None), Case.next_attempt_at <= now),
        (Case.state == CaseState.PROCESSING) & (Case.locked_until < now),
    )


class Leases(Store):
    def claim(self, worker: str, lease_seconds: float, run_id: str | None = None,
              exclude: Collection[int] = (), max_attempts: int | None = None) -> Case | None:
        """Lease the next due case to `worker` (highest priority, then oldest), or None.

        A case left `processing` by a runner whose lease ran out, or that is provably
        dead, is claimable again; the processor then settles its refund intents first.
        A case whose last `max_attempts` attempts all ended that way (it kills or stalls
        its runner every time: poison) is set aside as failed with that reason.
        """
        while True:
            now = utcnow()
            set_aside = False
            with self.session() as s:
                for case_id, holder, token in self._candidates(s, now, exclude):
                    taken = self._take(s, case_id, holder, token, worker, lease_seconds, run_id,
                                       max_attempts, now)
                    if taken is POISON:
                        set_aside = True
                        break  # committed when the transaction ends: look again after
                    if isinstance(taken, Case):
                        return taken
            if not set_aside:
                return None

    def _candidates(self, s: Session, now: datetime, exclude: Collection[int]
                    ) -> list[tuple[int, str | None, int]]:
        cols = select(Case.id, Case.locked_by, Case.lease_token)
        query = cols.where(_due(now))
        if exclude:  # a dry run releases what it decided: do not decide it twice
            query = query.where(Case.id.not_in(list(exclude)))
        query = query.order_by(Case.priority.desc(), Case.id)
        if self.dialect == "postgresql":
            query = query.limit(1).with_for_update(skip_locked=True)
        else:
            query = query.limit(CANDIDATES)
        found = [(i, h, t) for i, h, t in s.execute(query)]
        if not found:  # no due case: maybe one whose holder is provably dead
            held = s.execute(cols.where(Case.state == CaseState.PROCESSING,
                                        Case.locked_until >= now).order_by(Case.id)).all()
            found = [(i, h, t) for i, h, t in held
                     if h and holder_is_dead(h) and i not in exclude]
        return found

    def _take(self, s: Session, case_id: int, holder: str | None, token: int, worker: str,
              lease_seconds: float, run_id: str | None, max_attempts: int | None,
              now: datetime) -> Case | _Poison | None:
        """Claim one candidate: the case, None if another runner won it, POISON if set aside."""
        still = and_(Case.id == case_id, Case.lease_token == token,
                     or_(_due(now), (Case.state == CaseState.PROCESSING)
                         & (Case.locked_by == holder)))
        before = s.execute(select(Case.state, Case.attempts).where(still)).first()
        if before is None:
            return None
        abandoned = before.state == CaseState.PROCESSING
        if abandoned and max_attempts is not None and before.attempts >= max_attempts:
            reason = (f"set aside: its last attempts never finished ({before.attempts} in "
                      f"all; the runner died or stalled each time), so it may be what kills "
                      f"the runner. Look at the case and its screenshots, then `cases retry`.")
            s.execute(update(Case).where(still).values(
                state=CaseState.FAILED, outcome="failed", reason=reason, last_error=reason,
                locked_by=None, locked_until=None, lease_token=Case.lease_token + 1)
                .execution_options(synchronize_session=False))
            audit(s, case_id, run_id, worker, CaseState.PROCESSING, CaseState.FAILED,
                  "poison", reason)
            return POISON
        won = rowcount(s.execute(
            update(Case).where(still)
            .values(state=CaseState.PROCESSING, locked_by=worker,
                    locked_until=now + timedelta(seconds=lease_seconds),
                    attempts=Case.attempts + 1, lease_token=Case.lease_token + 1)
            .execution_options(synchronize_session=False)))
        if won != 1:
            return None
        case = s.scalar(select(Case).options(selectinload(Case.requests))
                        .where(Case.id == case_id).execution_options(populate_existing=True))
        if case is None:  # pragma: no cover - we just updated it
            return None
        detail = f"attempt {case.attempts}, lease token {case.lease_token}"
        if abandoned:
            detail += f"; taken over from {holder} (lease ran out or holder dead)"
        audit(s, case_id, run_id, worker, before.state, CaseState.PROCESSING, "claimed", detail)
        return case

    def renew(self, lease: Lease, lease_seconds: float) -> bool:
        """Extend a lease we still hold; False (and the lease marked lost) when we do not."""
        with self.session() as s:
            ok = rowcount(s.execute(
                update(Case).where(*_held(lease))
                .values(locked_until=utcnow() + timedelta(seconds=lease_seconds))
                .execution_options(synchronize_session=False))) == 1
        if not ok:
            lease.lost.set()
        return ok

    # -- fenced writes -------------------------------------------------------------------

    def finish(self, lease: Lease, *, state: str, outcome: str | None, reason: str,
               actor: str, run_id: str | None,
               outbox: Callable[[Session, Case], object] | None = None, **fields: Any) -> None:
        """End the case; `outbox` adds what to tell the customer in the same transaction."""
        with self.session() as s:
            case = hold(s, lease)
            case.state, case.outcome, case.reason = state, outcome, reason
            case.locked_by = case.locked_until = case.next_attempt_at = None
            for name, value in fields.items():
                setattr(case, name, value)
            audit(s, case.id, run_id, actor, CaseState.PROCESSING, state, outcome or state,
                  reason)
            if outbox is not None:
                outbox(s, case)

    def retry_later(self, lease: Lease, *, delay: float, error: str, actor: str,
                    run_id: str | None) -> None:
        with self.session() as s:
            case = hold(s, lease)
            case.state, case.last_error = CaseState.QUEUED, error
            case.locked_by = case.locked_until = None
            case.next_attempt_at = utcnow() + timedelta(seconds=delay)
            audit(s, case.id, run_id, actor, CaseState.PROCESSING, CaseState.QUEUED,
                  "retry_scheduled", f"in {delay:.1f}s after: {error}")

    def defer(self, lease: Lease, *, delay: float, why: str, actor: str,
              run_id: str | None) -> None:
        """Put a case back to wait (a submit may still be in flight): not an attempt."""
        with self.session() as s:
            case = hold(s, lease)
            case.state, case.attempts = CaseState.QUEUED, max(0, case.attempts - 1)
            case.locked_by = case.locked_until = None
            case.next_attempt_at = utcnow() + timedelta(seconds=delay)
            audit(s, case.id, run_id, actor, CaseState.PROCESSING, CaseState.QUEUED,
                  "deferred", f"for {delay:.0f}s: {why}")

    def release(self, lease: Lease, *, actor: str, run_id: str | None, why: str) -> None:
        """Give a leased case back untouched (run stopping): it stays due at once."""
        with self.session() as s:
            case = hold(s, lease)
            case.state = CaseState.QUEUED
            case.attempts = max(0, case.attempts - 1)
            # Due at once, and not a waiting retry: a past retry time left here kept a dry
            # run (which excludes the cases it released) waiting for it forever.
            case.locked_by = case.locked_until = case.next_attempt_at = None
            audit(s, case.id, run_id, actor, CaseState.PROCESSING, CaseState.QUEUED,
                  "released", why)

    def note(self, lease: Lease, *, event: str, detail: str, actor: str,
             run_id: str | None) -> None:
        with self.session() as s:
            case = hold(s, lease)
            audit(s, case.id, run_id, actor, case.state, case.state, event, detail)

    def merge(self, lease: Lease, into_key: str, *, actor: str, run_id: str | None) -> int | None:
        """Fold a customer-keyed case into the case for its order, if there is one."""
        with self.session() as s:
            case = hold(s, lease)
            target = s.scalar(select(Case).where(Case.case_key == into_key))
            if target is None or target.id == case.id:
                return None
            for row in list(case.requests):
                row.case_id = target.id
            case.state, case.merged_into = CaseState.MERGED, target.id
            case.locked_by = case.locked_until = None
            audit(s, case.id, run_id, actor, CaseState.PROCESSING, CaseState.MERGED, "merged",
                  f"same order as {target.ref}")
            audit(s, target.id, run_id, actor, target.state, target.state, "contact_linked",
                  f"contacts of {case.ref} merged in")
            return target.id

    def set_order(self, lease: Lease, order_number: str) -> None:
        with self.session() as s:
            hold(s, lease).order_number = order_number

    def record_decision(self, lease: Lease, facts_json: str) -> None:
        """Keep what the bot saw and decided (see bots.decide.snapshot), before acting on it."""
        with self.session() as s:
            hold(s, lease).decision = facts_json


def _held(lease: Lease) -> tuple[ColumnElement[bool], ...]:
    return (Case.id == lease.case_id, Case.lease_token == lease.token,
            Case.state == CaseState.PROCESSING)


def hold(s: Session, lease: Lease) -> Case:
    """The leased case, write-locked for this transaction; LeaseLost if it is not ours now.

    The fencing check is itself a write, so on every backend the row stays ours until the
    transaction ends: no other runner can take the case between this check and our writes.
    """
    won = rowcount(s.execute(update(Case).where(*_held(lease)).values(updated_at=utcnow())
                             .execution_options(synchronize_session=False)))
    if won != 1:
        lease.lost.set()
        raise LeaseLost(f"case {lease.case_id}: lease token {lease.token} is no longer ours "
                        f"(the lease ran out and another runner took the case over)")
    case = s.get(Case, lease.case_id, populate_existing=True)
    if case is None:  # pragma: no cover - we just updated it
        raise LeaseLost(f"case {lease.case_id} is gone")
    return case
