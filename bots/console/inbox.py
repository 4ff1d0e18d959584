"""The queries behind the console's pages: the escalation inbox, one case's evidence, the queue.

Filters run in SQL, pages are bounded, and the contacts of a page's cases come in one
extra query, so the inbox answers at once on a queue of tens of thousands of cases.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import selectinload

from bots.decide import snapshot
from bots.models import ChargeFacts, Decision, OrderFacts
from bots.queue import (
    Case,
    CaseState,
    NotificationRow,
    NotificationState,
    Queue,
    RequestRow,
    RunRow,
    utcnow,
)
from bots.runs import RUN_ID

PAGE = 50


@dataclass(frozen=True)
class InboxFilter:
    text: str = ""  # order number, email, name, phone or handle (substring)
    channel: str = ""
    reason: str = ""  # words of the escalation reason
    assignee: str = ""  # a user name, "none" (unclaimed) or "" (anyone)
    overdue: bool = False


@dataclass(frozen=True)
class InboxRow:
    case: Case
    waiting_since: datetime
    age: timedelta
    due: datetime
    overdue: bool
    proposal_by: str | None


def inbox(queue: Queue, where: InboxFilter, sla: timedelta, proposals: dict[int, Any],
          page: int = 0, now: datetime | None = None) -> tuple[list[InboxRow], int]:
    """One page of escalated cases (oldest first: the SLA runs out first there)."""
    now = now or utcnow()
    q = _filtered(select(Case).where(Case.state == CaseState.ESCALATED), where, now - sla)
    count = _filtered(select(func.count(Case.id)).where(Case.state == CaseState.ESCALATED),
                      where, now - sla)
    with queue.session() as s:
        total = s.scalar(count) or 0
        cases = list(s.scalars(q.options(selectinload(Case.requests))
                               .order_by(Case.updated_at, Case.id)
                               .limit(PAGE).offset(page * PAGE)))
    rows = [InboxRow(c, c.updated_at, now - c.updated_at, c.updated_at + sla,
                     now - c.updated_at > sla, getattr(proposals.get(c.id), "proposed_by", None))
            for c in cases]
    return rows, total


def _filtered(q: Select[Any], where: InboxFilter, overdue_before: datetime) -> Select[Any]:
    contacts = select(RequestRow.case_id)
    if text := where.text.strip().lower():
        like = f"%{_escape(text)}%"
        q = q.where(or_(func.lower(Case.order_number).like(like, escape="\\"),
                        func.lower(Case.customer_email).like(like, escape="\\"),
                        func.lower(Case.customer_name).like(like, escape="\\"),
                        Case.id.in_(contacts.where(or_(
                            func.lower(RequestRow.customer_phone).like(like, escape="\\"),
                            func.lower(RequestRow.customer_email).like(like, escape="\\"),
                            func.lower(RequestRow.customer_handle).like(like, escape="\\"))))))
    if where.channel:
        q = q.where(Case.id.in_(contacts.where(RequestRow.channel == where.channel.lower())))
    if reason := where.reason.strip().lower():
        q = q.where(func.lower(Case.reason).like(f"%{_escape(reason)}%", escape="\\"))
    if where.assignee == "none":
        q = q.where(Case.assigned_to.is_(None))
    elif where.assignee:
        q = q.where(Case.assigned_to == where.assignee)
    if where.overdue:
        q = q.where(Case.updated_at < overdue_before)
    return q


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# -- one case's evidence ------------------------------------------------------------------


@dataclass
class Evidence:
    """What the bot saw when it decided, ready for a template (None: no snapshot)."""

    order: OrderFacts | None = None
    charge: ChargeFacts | None = None
    decision: Decision | None = None
    asked: list[str] = field(default_factory=list)
    reason_category: str = ""
    decided_on: str = ""
    raw: str = ""  # a snapshot this version cannot read, shown as it is
    screenshots: list[tuple[str, str]] = field(default_factory=list)  # (run id, file name)
    traces: list[tuple[str, str]] = field(default_factory=list)


def evidence(case: Case, runs_dir: Path) -> Evidence:
    ev = Evidence()
    if case.decision:
        try:
            order, charge, claim, decision, today = snapshot.load(case.decision)
        except Exception:  # noqa: BLE001 - another version's snapshot: show it raw
            ev.raw = case.decision[:4000]
        else:
            ev.order, ev.charge, ev.decision = order, charge, decision
            ev.asked = [f"{a:,.2f}" for a in claim.amounts]
            ev.reason_category, ev.decided_on = claim.reason_category, today.isoformat()
    ev.screenshots = artifacts(runs_dir, "screenshots", case.ref)
    ev.traces = artifacts(runs_dir, "traces", case.ref)
    return ev


def artifacts(runs_dir: Path, kind: str, ref: str) -> list[tuple[str, str]]:
    """The failed attempts' files of a case, in every run folder (newest run first)."""
    found = [(p.parent.parent.name, p.name)
             for p in Path(runs_dir).glob(f"*/{kind}/{ref}-attempt*")
             if RUN_ID.fullmatch(p.parent.parent.name)]
    return sorted(found, reverse=True)


# -- the queue page -----------------------------------------------------------------------

AGE_BUCKETS = (("< 1 h", timedelta(hours=1)), ("1-4 h", timedelta(hours=4)),
               ("4-24 h", timedelta(hours=24)), ("1-3 days", timedelta(days=3)),
               ("> 3 days", timedelta.max))
OPEN_STATES = (CaseState.QUEUED, CaseState.PROCESSING, CaseState.ESCALATED, CaseState.FAILED)


def depth(queue: Queue, now: datetime | None = None) -> dict[str, Counter[str]]:
    """Open cases by state and by how long they have waited (since their last change)."""
    now = now or utcnow()
    with queue.session() as s:
        rows = s.execute(select(Case.state, Case.updated_at)
                         .where(Case.state.in_(OPEN_STATES))).all()
    out: dict[str, Counter[str]] = {state: Counter() for state in OPEN_STATES}
    for state, changed in rows:
        age = now - changed
        bucket = next(name for name, limit in AGE_BUCKETS if age < limit)
        out[state][bucket] += 1
    return out


def failed_cases(queue: Queue, limit: int = 200) -> list[Case]:
    with queue.session() as s:
        return list(s.scalars(select(Case).options(selectinload(Case.requests))
                              .where(Case.state == CaseState.FAILED)
                              .order_by(Case.updated_at.desc()).limit(limit)))


def undeliverable(queue: Queue, limit: int = 200) -> list[NotificationRow]:
    """Messages to customers the bot gave up sending: nobody told them."""
    with queue.session() as s:
        return list(s.scalars(select(NotificationRow)
                              .where(NotificationRow.state == NotificationState.GAVE_UP)
                              .order_by(NotificationRow.updated_at.desc()).limit(limit)))


def runs(queue: Queue, limit: int = 100) -> list[RunRow]:
    return queue.runs(limit)
