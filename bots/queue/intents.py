"""Refund intents: the durable record that makes a refund exactly-once.

An intent (case, amount, key) is committed before the portal's submit is clicked; the key
goes into the portal's reference field. Right before the click, `begin_submit` checks,
fenced, that the runner still holds the case with time to spare and stamps the moment
(`submit_started_at`): until that stamp exists no click can have happened. After the
confirmation page the refund number is recorded. Every step is conditional on the
runner's lease token, and an intent is resolved (confirmed/absent) only from `pending`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.orm import Session

from bots.queue.audit import audit
from bots.queue.base import Store, rowcount
from bots.queue.leases import LeaseLost, hold
from bots.queue.schema import Case, IntentState, Lease, RefundIntent, case_ref, utcnow


class CustomerLimitReached(Exception):
    """Paying this would take the customer past the per-customer limit, counting refunds
    already confirmed and those in flight (pending intents) by any runner."""


@dataclass(frozen=True)
class CustomerLimit:
    email: str
    limit: Decimal
    since: datetime


def intent_key(case_id: int) -> str:
    """`C000001-b4f09a31`: the reference the bot writes on a refund, to find it again.

    The random part starts with a letter. Eight random hex digits were all digits about
    one time in forty, and then the case number, the hyphen and them read as a card
    number: card masking blanked the key out of the audit text about four keys in a
    thousand. Same form as before (`reconcile` reads both), so old references still match.
    """
    return (f"{case_ref(case_id).replace('-', '')}-{secrets.choice('abcdef')}"
            f"{secrets.token_hex(4)[1:]}")


class Intents(Store):
    def open_intent(self, lease: Lease, *, order_number: str, transaction_id: str,
                    amount: Decimal, run_id: str | None, remaining_before: Decimal | None = None,
                    customer_email: str | None = None,
                    customer_limit: CustomerLimit | None = None) -> RefundIntent:
        """Durably record that we are about to submit: committed before the click.

        With `customer_limit`, the customer's confirmed and pending refunds (other cases)
        are summed under a per-customer lock in the same transaction, so two runners can
        never each pay "the last 100 within the limit".
        """
        key = intent_key(lease.case_id)
        with self.session() as s:
            case = hold(s, lease)
            if customer_limit is not None:
                if self.dialect == "postgresql":
                    s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                              {"k": "customer:" + customer_limit.email.lower()})
                already = _customer_total(s, customer_limit, exclude_case=case.id)
                if already + amount > customer_limit.limit:
                    raise CustomerLimitReached(
                        f"Paying {amount} would bring this customer's refunds in "
                        f"{(utcnow() - customer_limit.since).days} days to "
                        f"{already + amount} (confirmed and in flight), above the "
                        f"per-customer limit of {customer_limit.limit}: a human decides.")
            intent = RefundIntent(case_id=case.id, key=key, order_number=order_number,
                                  transaction_id=transaction_id, amount=amount, run_id=run_id,
                                  remaining_before=remaining_before,
                                  customer_email=(customer_email or case.customer_email or
                                                  "").lower() or None)
            s.add(intent)
            audit(s, case.id, run_id, lease.owner, case.state, case.state, "intent_recorded",
                  f"refund {amount} on {transaction_id}, key {key}")
        return intent

    def begin_submit(self, lease: Lease, intent_id: int, *, lease_seconds: float,
                     needed_seconds: float) -> datetime:
        """The last check before the click: still ours, with time to spare; stamp the start.

        Renews the lease to `lease_seconds` from now (which must cover `needed_seconds`, the
        longest a submit can take) and stamps the intent's `submit_started_at`. Raises
        LeaseLost when the case is no longer ours or the intent was resolved meanwhile:
        then the runner must not click.
        """
        if lease_seconds < needed_seconds:
            raise LeaseLost(f"the lease ({lease_seconds:.0f}s) is shorter than the longest "
                            f"submit ({needed_seconds:.0f}s): not clicking; raise "
                            f"processing.lease_seconds")
        now = utcnow()
        with self.session() as s:
            case = hold(s, lease)
            case.locked_until = now + timedelta(seconds=lease_seconds)
            stamped = rowcount(s.execute(
                update(RefundIntent)
                .where(RefundIntent.id == intent_id, RefundIntent.case_id == case.id,
                       RefundIntent.state == IntentState.PENDING)
                .values(submit_started_at=now).execution_options(synchronize_session=False)))
            if stamped != 1:
                raise LeaseLost(f"intent {intent_id} is no longer pending: not clicking")
        return now

    def submit_answered(self, lease: Lease, intent_id: int) -> None:
        """The portal answered the submit (error page, login page, refusal): it is over."""
        with self.session() as s:
            case = hold(s, lease)
            s.execute(update(RefundIntent)
                      .where(RefundIntent.id == intent_id, RefundIntent.case_id == case.id,
                             RefundIntent.state == IntentState.PENDING)
                      .values(submit_answered_at=utcnow())
                      .execution_options(synchronize_session=False))

    def resolve_intent(self, lease: Lease, intent_id: int, *, state: str,
                       refund_number: str | None, run_id: str | None) -> bool:
        """Settle a pending intent (confirmed / absent); False if it was not pending."""
        with self.session() as s:
            case = hold(s, lease)
            done = rowcount(s.execute(
                update(RefundIntent)
                .where(RefundIntent.id == intent_id, RefundIntent.case_id == case.id,
                       RefundIntent.state == IntentState.PENDING)
                .values(state=state, refund_number=refund_number, resolved_at=utcnow(),
                        resolved_run_id=run_id)
                .execution_options(synchronize_session=False))) == 1
            if done:
                key = s.scalar(select(RefundIntent.key).where(RefundIntent.id == intent_id))
                audit(s, case.id, run_id, lease.owner, case.state, case.state,
                      f"intent_{state}",
                      f"key {key}" + (f", refund {refund_number}" if refund_number else ""))
            return done

    def intents(self, case_id: int) -> list[RefundIntent]:
        with self.session() as s:
            return list(s.scalars(select(RefundIntent).where(RefundIntent.case_id == case_id)
                                  .order_by(RefundIntent.id)))

    def intents_for_run(self, run_id: str) -> list[RefundIntent]:
        with self.session() as s:
            return list(s.scalars(
                select(RefundIntent)
                .where(or_(RefundIntent.run_id == run_id, RefundIntent.resolved_run_id == run_id))
                .order_by(RefundIntent.id)
            ))

    def customer_refunds(self, email: str, *, exclude_case: int,
                         include_pending: bool = False) -> list[tuple[datetime, Decimal]]:
        """The bot's refunds for a customer (other cases): confirmed, and in flight if asked.

        A pending intent counts at its creation time: it may already be paid.
        """
        states = [IntentState.CONFIRMED] + ([IntentState.PENDING] if include_pending else [])
        with self.session() as s:
            return _customer_refunds(s, email, states, exclude_case)

    def refunds_since(self, since: datetime) -> int:
        """How many refunds the bot confirmed store-wide since a moment."""
        with self.session() as s:
            return s.scalar(
                select(func.count()).select_from(RefundIntent).where(
                    RefundIntent.state == IntentState.CONFIRMED, RefundIntent.resolved_at >= since)
            ) or 0

    def intent_keys(self) -> set[str]:
        with self.session() as s:
            return set(s.scalars(select(RefundIntent.key)))


def _customer_refunds(s: Session, email: str, states: list[str], exclude_case: int
                      ) -> list[tuple[datetime, Decimal]]:
    # Intents written before 0.2 carry no customer email: theirs is the case's.
    mail = email.lower()
    rows = s.execute(
        select(RefundIntent.state, RefundIntent.resolved_at, RefundIntent.created_at,
               RefundIntent.amount)
        .join(Case, Case.id == RefundIntent.case_id)
        .where(RefundIntent.state.in_(states), RefundIntent.case_id != exclude_case,
               or_(func.lower(RefundIntent.customer_email) == mail,
                   RefundIntent.customer_email.is_(None) & (func.lower(Case.customer_email)
                                                            == mail)))).all()
    return [(_counted_at(state, resolved, created), amount)
            for state, resolved, created, amount in rows]


def _counted_at(state: str, resolved: datetime | None, created: datetime) -> datetime:
    """When a refund counts against a period: confirmed when resolved, in flight when opened."""
    return (resolved or created) if state == IntentState.CONFIRMED else created


def _customer_total(s: Session, limit: CustomerLimit, *, exclude_case: int) -> Decimal:
    rows = _customer_refunds(s, limit.email, [IntentState.CONFIRMED, IntentState.PENDING],
                             exclude_case)
    return sum((amount for at, amount in rows if at >= limit.since), Decimal("0.00"))
