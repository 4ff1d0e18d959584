"""The audit trail: every state change and decision, who made it and why. Append-only."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from bots.queue.base import Store
from bots.queue.schema import AuditRow


def masked(text: str) -> str:
    """Cards, CVVs and credentials hidden: agents' comments and notes quote customers too."""
    from bots.intake.extract import mask_secrets  # lazily: the queue needs it only here

    return mask_secrets(text) if text else text


def audit(s: Session, case_id: int, run_id: str | None, actor: str, before: str | None,
          after: str | None, event_name: str, detail: str) -> None:
    s.add(AuditRow(case_id=case_id, run_id=run_id, actor=masked(actor[:200]), from_state=before,
                   to_state=after, event=event_name, detail=masked(detail)))


class AuditTrail(Store):
    def audit_trail(self, case_id: int) -> list[AuditRow]:
        with self.session() as s:
            return list(s.scalars(
                select(AuditRow).where(AuditRow.case_id == case_id).order_by(AuditRow.id)
            ))
