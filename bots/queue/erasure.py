"""Erasing a customer's personal data while the books stay whole.

Names, addresses, phone numbers, handles and message texts of the customer are removed;
the email becomes a pseudonym (the same for every record of that customer, so per-customer
limits and history still add up, but it no longer names anyone). Amounts, order and refund
numbers, decisions and the audit trail's structure stay. Audit texts that could quote the
customer (their contacts) are erased through `erase_detail`, which keeps their salted hash:
`audit verify` still passes. The erasure itself is an audit record, with who and why.

Files outside the queue (the mailbox, exports, `runs/outbox/*.jsonl`, old workbooks) are
the deployment's to purge: `retention_days` tells which cases are due.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, or_, select

from bots.queue import Queue
from bots.queue.audit import ERASED, audit, erase_detail
from bots.queue.schema import (
    AuditRow,
    Case,
    CaseState,
    NotificationRow,
    RefundIntent,
    RequestRow,
    utcnow,
)

CONTACT_EVENTS = ("case_opened", "contact_linked", "followup_opened")


class ErasureError(ValueError):
    """An erasure that is refused (no agent, no reason, nobody found): the message says why."""


@dataclass(frozen=True)
class Erased:
    cases: int
    requests: int
    notifications: int
    audit: int


def pseudonym(email: str) -> str:
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:16]
    return f"erased-{digest}@invalid"


def forget_customer(queue: Queue, email: str, *, agent: str, comment: str) -> Erased:
    if not agent.strip():
        raise ErasureError("say who you are (--agent): the audit trail records it")
    if not comment.strip():
        raise ErasureError("say why (--comment/-m): the audit trail records it")
    mail = email.strip().lower()
    if "@" not in mail:
        raise ErasureError(f"not an email address: {email!r}")
    alias = pseudonym(mail)
    with queue.session() as s:
        reqs = list(s.scalars(select(RequestRow).where(or_(
            func.lower(RequestRow.customer_email) == mail,
            func.lower(RequestRow.reply_to) == mail))))
        case_ids = {r.case_id for r in reqs} | set(s.scalars(
            select(Case.id).where(func.lower(Case.customer_email) == mail)))
        if not case_ids:
            raise ErasureError(f"no case or contact of {email} in the queue")
        cases = list(s.scalars(select(Case).where(Case.id.in_(case_ids))))
        reqs = list(s.scalars(select(RequestRow).where(RequestRow.case_id.in_(case_ids))))
        for r in reqs:
            r.customer_email = alias if r.customer_email else None
            r.reply_to = alias if r.reply_to else None
            r.customer_name = r.customer_phone = r.customer_handle = None
            r.auth_results = None
            r.reason_text = ERASED
            r.source_ref = ERASED if r.source_ref else r.source_ref
        for c in cases:
            c.customer_email = alias if c.customer_email else None
            c.customer_name = None
        for intent in s.scalars(select(RefundIntent).where(RefundIntent.case_id.in_(case_ids))):
            intent.customer_email = alias if intent.customer_email else None
        notes = list(s.scalars(select(NotificationRow).where(
            NotificationRow.case_id.in_(case_ids))))
        for n in notes:
            n.recipient, n.body = alias, ERASED
        trail = list(s.scalars(select(AuditRow).where(AuditRow.case_id.in_(case_ids))))
        erased = 0
        for a in trail:
            if a.salt is not None and (a.event in CONTACT_EVENTS or mail in a.detail.lower()):
                erase_detail(s, a)
                erased += 1
        for c in cases:
            audit(s, c.id, None, agent.strip(), c.state, c.state, "personal_data_erased",
                  f"personal data of {alias} erased by {agent.strip()}: {comment.strip()}")
        return Erased(len(cases), len(reqs), len(notes), erased)


def expired_customers(queue: Queue, retention_days: int) -> list[str]:
    """Emails whose every case ended more than `retention_days` ago (none still open)."""
    cutoff = utcnow() - timedelta(days=retention_days)
    with queue.session() as s:
        rows = s.execute(select(func.lower(Case.customer_email), Case.state, Case.updated_at)
                         .where(Case.customer_email.is_not(None))).all()
    latest: dict[str, bool] = {}
    for mail, state, updated in rows:
        if mail.startswith("erased-"):
            continue
        due = state in (CaseState.DONE, CaseState.MERGED) and updated < cutoff
        latest[mail] = latest.get(mail, True) and due
    return sorted(m for m, due in latest.items() if due)
