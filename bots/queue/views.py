"""Reading the queue: cases for people and reports, runs, quarantine.

Lists are paged and filtered in SQL (with the contacts loaded in one extra query), so
`cases list` answers at once on a queue of tens of thousands of cases.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.orm import selectinload

from bots.queue.base import Store
from bots.queue.identity import holder_is_dead
from bots.queue.schema import AuditRow, Case, CaseState, QuarantineRow, RequestRow, RunRow, utcnow


@dataclass(frozen=True)
class CaseFilter:
    """What `cases list` (and the console) may filter on; None means any."""

    states: Sequence[str] | None = None
    channel: str | None = None
    customer: str | None = None  # email, phone or name, case-insensitive substring
    order_number: str | None = None
    older_than: datetime | None = None  # created before
    newer_than: datetime | None = None  # created after


class Views(Store):
    def pending_count(self) -> int:
        with self.session() as s:
            return s.scalar(
                select(func.count()).select_from(Case).where(Case.state.in_(CaseState.OPEN))
            ) or 0

    def next_due_at(self) -> datetime | None:
        """When the earliest waiting retry becomes due (None: nothing waits)."""
        with self.session() as s:
            return s.scalar(
                select(func.min(Case.next_attempt_at)).where(
                    Case.state == CaseState.QUEUED, Case.next_attempt_at.is_not(None)
                )
            )

    def cases(self, states: Sequence[str] | None = None) -> list[Case]:
        """Every case (in these states), with its contacts. For reports: unpaged."""
        with self.session() as s:
            q = select(Case).options(selectinload(Case.requests)).order_by(Case.id)
            if states:
                q = q.where(Case.state.in_(states))
            return list(s.scalars(q))

    def cases_page(self, where: CaseFilter, *, limit: int = 50, offset: int = 0
                   ) -> tuple[list[Case], int]:
        """One page of cases (newest first) and how many match in all."""
        with self.session() as s:
            q = _filtered(select(Case), where)
            total = s.scalar(_filtered(select(func.count(Case.id)), where)) or 0
            page = list(s.scalars(q.options(selectinload(Case.requests))
                                  .order_by(Case.id.desc()).limit(limit).offset(offset)))
            return page, total

    def find_cases_by_order(self, order_number: str) -> list[Case]:
        with self.session() as s:
            return list(s.scalars(
                select(Case).options(selectinload(Case.requests))
                .where(func.upper(Case.order_number) == order_number.strip().upper())
                .order_by(Case.id)))

    def get_case(self, case_id: int) -> Case | None:
        with self.session() as s:
            return s.scalar(select(Case).options(selectinload(Case.requests))
                            .where(Case.id == case_id))

    def failed_case_ids(self) -> list[int]:
        with self.session() as s:
            return list(s.scalars(select(Case.id).where(Case.state == CaseState.FAILED)
                                  .order_by(Case.id)))

    def cases_touched(self, run_id: str) -> list[Case]:
        """Cases with any audit event in the run, with their requests loaded."""
        with self.session() as s:
            ids = select(AuditRow.case_id).where(AuditRow.run_id == run_id).distinct()
            return list(s.scalars(
                select(Case).options(selectinload(Case.requests))
                .where(Case.id.in_(ids), Case.state != CaseState.MERGED).order_by(Case.id)
            ))

    def quarantined(self, run_id: str | None = None) -> list[QuarantineRow]:
        with self.session() as s:
            q = select(QuarantineRow).order_by(QuarantineRow.id)
            if run_id is not None:
                q = q.where(QuarantineRow.run_id == run_id)
            return list(s.scalars(q))

    # -- runs -------------------------------------------------------------------------

    def start_run(self, run_id: str, command: str, owner: str | None = None) -> None:
        with self.session() as s:
            s.add(RunRow(run_id=run_id, command=command, owner=owner))

    def finish_run(self, run_id: str, status: str, stats: dict[str, Any]) -> None:
        with self.session() as s:
            run = s.get(RunRow, run_id)
            if run is not None:
                run.finished_at, run.status = utcnow(), status
                run.stats = json.dumps(stats, default=str)

    def mark_killed_runs(self) -> list[str]:
        """Runs still `running` whose runner is provably dead: marked `killed`, not left."""
        with self.session() as s:
            rows = s.execute(select(RunRow.run_id, RunRow.owner)
                             .where(RunRow.status == "running", RunRow.owner.is_not(None))).all()
            dead = [run_id for run_id, owner in rows if owner and holder_is_dead(owner)]
            if dead:
                s.execute(update(RunRow).where(RunRow.run_id.in_(dead), RunRow.status == "running")
                          .values(status="killed", finished_at=utcnow())
                          .execution_options(synchronize_session=False))
            return dead

    def get_run(self, run_id: str) -> RunRow | None:
        with self.session() as s:
            return s.get(RunRow, run_id)

    def last_run_id(self) -> str | None:
        with self.session() as s:
            return s.scalar(select(RunRow.run_id).order_by(RunRow.started_at.desc()).limit(1))

    def runs(self, limit: int = 20) -> list[RunRow]:
        with self.session() as s:
            return list(s.scalars(select(RunRow).order_by(RunRow.started_at.desc()).limit(limit)))


def _filtered(q: Select[Any], where: CaseFilter) -> Select[Any]:
    if where.states:
        q = q.where(Case.state.in_(list(where.states)))
    if where.order_number:
        q = q.where(func.upper(Case.order_number) == where.order_number.strip().upper())
    if where.older_than is not None:
        q = q.where(Case.created_at < where.older_than)
    if where.newer_than is not None:
        q = q.where(Case.created_at > where.newer_than)
    contacts = select(RequestRow.case_id)
    if where.channel:
        q = q.where(Case.id.in_(contacts.where(RequestRow.channel == where.channel.lower())))
    if where.customer:
        like = f"%{where.customer.strip().lower()}%"
        q = q.where(or_(func.lower(Case.customer_email).like(like),
                        func.lower(Case.customer_name).like(like),
                        Case.id.in_(contacts.where(or_(
                            func.lower(RequestRow.customer_phone).like(like),
                            func.lower(RequestRow.customer_handle).like(like))))))
    return q
