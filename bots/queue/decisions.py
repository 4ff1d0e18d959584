"""People's decisions on cases: approve/partial/reject an escalation, reassign, retry.

These touch only cases no runner holds (escalated or failed), so they need no lease; each
is applied once and written to the audit trail with the agent's name and words.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from bots.models import money
from bots.queue.audit import audit, masked
from bots.queue.base import Store
from bots.queue.schema import AuditRow, Case, CaseState


class Decisions(Store):
    def human_decision(self, case_id: int, *, decision: str, amount: Decimal | None, agent: str,
                       comment: str, run_id: str | None,
                       four_eyes_above: Decimal | None = None) -> str:
        """Apply a human's decision on an escalated case, once.

        approve/partial: the case is queued again with the amount the human set (or the
        bot's proposal) and the next processing run pays exactly that, capped at what
        remains refundable. reject: the case ends, with the agent's words as reason.
        Four eyes (issue #12): an amount above the bot's proposal or
        above what the customer asked, and above `four_eyes_above`, is only applied when a
        second agent approves the same amount; the first approval waits in the audit trail.
        Returns "applied", "already applied", "not escalated", "needs a second agent"
        (recorded, waiting) or "same agent" (the second approval must be someone else's).
        """
        decision = decision.strip().lower()
        if decision not in ("approve", "partial", "reject"):
            raise ValueError(f"unknown decision {decision!r}")
        comment = masked(comment)  # an agent may paste the customer's card or CVV
        with self.session() as s:
            case = s.get(Case, case_id)
            if case is None:
                return "not escalated"
            if _decided_since_escalation(s, case_id, decision):
                return "already applied"
            if case.state != CaseState.ESCALATED:
                return "not escalated"
            if decision != "reject" and (why := raise_reason(case, amount, four_eyes_above)):
                amount = money(amount) if amount is not None else None
                first = _pending_approval(s, case_id, decision, amount)
                if first is None or first.actor == agent:
                    if first is None:
                        audit(s, case.id, run_id, agent, case.state, case.state,
                              "approval_pending", f"{decision} by {agent} ({amount}) {why}: "
                              f"waits for a second agent" + (f": {comment}" if comment else ""))
                        return "needs a second agent"
                    return "same agent"
                comment = f"{comment} (second agent; first: {first.actor})".strip()
            return apply_human_decision(s, case, decision=decision, amount=amount, agent=agent,
                                        comment=comment, run_id=run_id)

    def assign(self, case_id: int, *, agent: str, by: str, comment: str,
               run_id: str | None) -> bool:
        """Hand an escalated case to another agent (the audit says who and why)."""
        with self.session() as s:
            case = s.get(Case, case_id)
            if case is None or case.state != CaseState.ESCALATED:
                return False
            before, case.assigned_to = case.assigned_to, agent
            audit(s, case.id, run_id, by, case.state, case.state, "reassigned",
                  f"{before or 'unassigned'} -> {agent}" + (f": {comment}" if comment else ""))
            return True

    def retry(self, case_id: int, *, agent: str, comment: str, run_id: str | None) -> bool:
        """Put a case the bot gave up on (system failures) back in the queue, attempts reset.

        For after an outage: the next processing run takes it up again, and settles
        any refund a failed attempt may have left in the portal before paying.
        """
        with self.session() as s:
            case = s.get(Case, case_id)
            if case is None or case.state != CaseState.FAILED:
                return False
            case.state, case.next_attempt_at, case.attempts = CaseState.QUEUED, None, 0
            case.outcome = None
            audit(s, case.id, run_id, agent, CaseState.FAILED, CaseState.QUEUED,
                  "retry_requested", f"by {agent}" + (f": {comment}" if comment else "")
                  + f" (last error: {case.last_error})")
            return True


# issue #16 (console): the body of `human_decision`, callable inside a transaction that has
# already checked the deciding user's claim and the case's version (bots.queue.staff).
def apply_human_decision(s: Session, case: Case | None, *, decision: str,
                         amount: Decimal | None, agent: str, comment: str,
                         run_id: str | None) -> str:
    """`Decisions.human_decision` inside the caller's transaction (same answers)."""
    decision = decision.strip().lower()
    if decision not in ("approve", "partial", "reject"):
        raise ValueError(f"unknown decision {decision!r}")
    if case is None:
        return "not escalated"
    if _decided_since_escalation(s, case.id, decision):
        return "already applied"
    if case.state != CaseState.ESCALATED:
        return "not escalated"
    comment = masked(comment)  # an agent may paste the customer's card or CVV, on any route
    case.human_decision, case.human_agent, case.human_comment = decision, agent, comment
    detail = f"{decision} by {agent}" + (f" ({amount})" if amount is not None else "")
    detail += f": {comment}" if comment else ""
    if decision == "reject":
        case.state, case.outcome = CaseState.DONE, "rejected"
        case.reason = f"Rejected by {agent}: {comment}" if comment else \
            f"Rejected by {agent}."
        case.approved_amount = Decimal("0.00")
    else:
        case.state, case.next_attempt_at, case.attempts = CaseState.QUEUED, None, 0
        if amount is not None:
            case.approved_amount = amount
    audit(s, case.id, run_id, agent, CaseState.ESCALATED, case.state, "human_decision",
          detail)
    return "applied"


def _decided_since_escalation(s: Session, case_id: int, decision: str) -> bool:
    """Has this decision been applied since the case last entered `escalated`?

    Importing the same decisions file twice must apply nothing the second time, but a
    case escalated again later (e.g. after an approval without an amount) can be
    decided again.
    """
    trail = list(s.scalars(select(AuditRow).where(AuditRow.case_id == case_id)
                           .order_by(AuditRow.id)))
    entered = max((i for i, a in enumerate(trail) if a.to_state == CaseState.ESCALATED
                   and a.from_state != CaseState.ESCALATED), default=-1)
    return any(a.event == "human_decision" and a.detail.split(" ", 1)[0] == decision
               for a in trail[entered + 1:])


def raise_reason(case: Case, amount: Decimal | None, limit: Decimal | None) -> str:
    """Why `amount` needs four eyes: above the limit and the proposal or the customer's ask."""
    if amount is None or limit is None or amount <= limit:
        return ""
    asked = [r.requested_amount for r in case.requests if r.requested_amount is not None]
    reasons = []
    if case.approved_amount is not None and amount > case.approved_amount:
        reasons.append(f"the bot proposed {case.approved_amount}")
    if asked and amount > max(asked):
        reasons.append(f"the customer asked for {max(asked)}")
    if not reasons:
        return ""
    return f"is above what {' and '.join(reasons)} (four-eyes limit {limit})"


def _pending_approval(s: Session, case_id: int, decision: str,
                      amount: Decimal | None) -> AuditRow | None:
    """The first agent's approval of exactly this amount since the case was escalated."""
    trail = list(s.scalars(select(AuditRow).where(AuditRow.case_id == case_id)
                           .order_by(AuditRow.id)))
    entered = max((i for i, a in enumerate(trail) if a.to_state == CaseState.ESCALATED
                   and a.from_state != CaseState.ESCALATED), default=-1)
    head = f"{decision} by "
    return next((a for a in trail[entered + 1:] if a.event == "approval_pending"
                 and a.detail.startswith(head) and f"({amount})" in a.detail), None)
