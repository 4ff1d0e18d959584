"""The processing bot: the queue's consumer.

For each case: find the order, find the charge, settle any refund the bot may
already have submitted, decide, submit exactly once, note the order, finish.
Every step that changes the outside world is preceded by a durable record of
the intent, so a crash between any two lines is recoverable without paying twice.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from playwright.async_api import Error as PlaywrightError

from bots.config import Settings
from bots.decide import snapshot
from bots.decide.line_items import items_asked
from bots.decide.policy import Claim, Policy, claim_from, decide
from bots.decide.signals import (
    Contact,
    SignalContext,
    SignalSettings,
    assess,
    escalate_decision,
    store_window_start,
)
from bots.errors import AmbiguousOutcome, BusinessException, SessionExpired, SystemException
from bots.legacy.artifacts import scrub_zip
from bots.legacy.session import BotSession, Worker
from bots.models import ChargeFacts, Decision, OrderFacts, Outcome
from bots.notify import Notifier
from bots.queue import Case, CaseState, IntentState, Queue, RefundIntent, utcnow
from bots.runs import RunFolder
from bots.work.crashpoints import crash_point


class Escalation(Exception):
    """The bot must not decide alone: the case waits for a human."""


@dataclass
class ProcessStats:
    processed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    system_errors: int = 0
    circuit_open: bool = False
    notifications: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def seconds_per_case(self) -> float:
        return self.seconds / self.processed if self.processed else 0.0


@dataclass
class Finished:
    outcome: str
    reason: str
    state: str = CaseState.DONE
    approved: Decimal | None = None
    refund_number: str | None = None


class Processor:
    def __init__(self, settings: Settings, queue: Queue, policy: Policy, run: RunFolder, *,
                 signals: SignalSettings | None = None, today: date | None = None,
                 dry_run: bool = False, notifier: Notifier | None = None,
                 on_case: Callable[[Case, str], None] | None = None) -> None:
        self.settings, self.queue, self.policy, self.run = settings, queue, policy, run
        self.signals = signals
        self.dry_run = dry_run  # decide everything, submit and write nothing
        self.proposals: dict[int, Finished] = {}
        self.notifier = notifier
        self._cards: dict[int, str] = {}  # masked card shown on the order, for the message
        self._currencies: dict[int, str] = {}  # the order's currency: customers often omit it
        self.today = today or date.today()
        self.on_case = on_case or (lambda case, outcome: None)
        self.stats = ProcessStats()
        self._consecutive_failures = 0
        self._stop = False
        self._secrets: list[str] = []

    def stop(self) -> None:
        """Finish the cases in hand, claim no more (SIGTERM, Ctrl-C, circuit breaker)."""
        self._stop = True

    async def process(self, session: BotSession) -> ProcessStats:
        self._secrets = session.secrets()
        started = asyncio.get_running_loop().time()
        workers = [await session.worker(f"{self.run.run_id}/w{i + 1}",
                                        tracing=self.settings.browser.trace_failures)
                   for i in range(self.settings.processing.workers)]
        await asyncio.gather(*(self._work(session, w) for w in workers))
        for w in workers:
            await w.context.close()
        self.stats.seconds = asyncio.get_running_loop().time() - started
        return self.stats

    # -- the worker loop ---------------------------------------------------------------

    async def _work(self, session: BotSession, worker: Worker) -> None:
        p = self.settings.processing
        logged_in = False
        while not self._stop:
            case = self.queue.claim(worker.name, p.lease_seconds, self.run.run_id,
                                    exclude=self.proposals.keys())
            if case is None:
                if not await self._wait_for_retry():
                    return
                continue
            if not logged_in:
                try:
                    await session.login(worker)
                    logged_in = True
                except (SystemException, PlaywrightError) as exc:
                    await self._system_failure(worker, case, exc)
                    continue
            await self._attempt(worker, case)

    async def _wait_for_retry(self) -> bool:
        """Sleep until the next retry is due if that is soon; False when the work is done."""
        due = self.queue.next_due_at()
        if due is None:
            return False
        wait = (due - utcnow()).total_seconds()
        if wait > self.settings.processing.backoff_max_seconds:
            return False  # left queued with its reason for the next run
        await asyncio.sleep(max(0.05, min(wait, 1.0)))
        return True

    async def _attempt(self, worker: Worker, case: Case) -> None:
        log = self.run.log.bind(case=case.ref)
        if worker.tracing:
            await worker.context.tracing.start_chunk(title=f"{case.ref} attempt {case.attempts}")
        try:
            result = await self._handle(worker, case)
        except BusinessException as exc:
            result = Finished("rejected", str(exc))
        except (Escalation, AmbiguousOutcome) as exc:
            result = Finished("escalated", str(exc), state=CaseState.ESCALATED)
        except (SystemException, PlaywrightError, Exception) as exc:  # noqa: BLE001
            await self._system_failure(worker, case, exc)
            return
        if worker.tracing:
            await worker.context.tracing.stop_chunk()  # success: nothing to keep
        self._consecutive_failures = 0
        if self.dry_run and result.outcome != "merged":
            self.proposals[case.id] = result
            self.queue.release(case.id, actor=worker.name, run_id=self.run.run_id,
                               why=f"dry run: would be {result.outcome}"
                                   + (f" ({result.approved})" if result.approved else "")
                                   + f": {result.reason}")
            log.info("dry run: would be {}: {}", result.outcome, result.reason)
            self._count(case, result.outcome)
            return
        if result.outcome == "merged":
            log.info("merged into the case for order {}", case.order_number)
            return
        self.queue.finish(case.id, state=result.state, outcome=result.outcome,
                          reason=result.reason, actor=worker.name, run_id=self.run.run_id,
                          approved_amount=result.approved, refund_number=result.refund_number)
        log.info("{}: {}", result.outcome, result.reason)
        await self._notify(case, result)
        self._count(case, result.outcome)

    async def _notify(self, case: Case, result: Finished) -> None:
        """Answer every contact of the case on its channel (once, however often we run)."""
        if self.notifier is None:
            return
        kind = result.outcome
        if kind in ("refunded", "partial") and case.human_decision in ("approve", "partial"):
            kind = "approved"
        card = self._cards.pop(case.id, "")
        currency = self._currencies.pop(case.id, None) or case.currency
        last4 = "".join(ch for ch in card if ch.isdigit())[-4:] or None
        try:
            results = await asyncio.to_thread(
                self.notifier.notify_case, case, outcome=kind, amount=result.approved,
                currency=currency, refund_number=result.refund_number,
                reason=result.reason, card_last4=last4, run_id=self.run.run_id)
        except Exception as exc:  # noqa: BLE001 - a broken template must not undo a refund
            self.run.log.bind(case=case.ref).error("notification failed: {}", exc)
            self.stats.notifications["failed"] += 1
            return
        for r in results:
            self.stats.notifications[r.state.value] += 1
            if r.state.value == "failed":
                self.run.log.bind(case=case.ref).warning("notify {} {} failed: {}", r.channel,
                                                         r.to, r.error)

    def _count(self, case: Case, outcome: str) -> None:
        self.stats.processed += 1
        self.stats.outcomes[outcome] += 1
        self.on_case(case, outcome)

    async def _system_failure(self, worker: Worker, case: Case, exc: BaseException) -> None:
        """Keep the evidence, then retry later or give up on the case after max attempts."""
        p = self.settings.processing
        error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        self.run.log.bind(case=case.ref).warning("attempt {} failed: {}", case.attempts, error)
        if not isinstance(exc, SystemException | PlaywrightError):
            self.run.log.opt(exception=exc).error("unexpected error (treated as system error)")
        await self._save_evidence(worker, case)
        self.stats.system_errors += 1
        self._consecutive_failures += 1
        if case.attempts >= p.max_attempts:
            paid = next((i for i in self.queue.intents(case.id)
                         if i.state == IntentState.CONFIRMED), None)
            reason = f"gave up after {case.attempts} attempts: {error}"
            extra = {}
            if paid is not None:  # the money went out; only the follow-up steps failed
                reason = (f"Refund {paid.refund_number} of {paid.amount} was issued, but the "
                          f"follow-up failed: {reason}")
                extra = {"refund_number": paid.refund_number, "approved_amount": paid.amount}
            self.queue.finish(case.id, state=CaseState.FAILED, outcome="failed", reason=reason,
                              actor=worker.name, run_id=self.run.run_id, last_error=error,
                              **extra)
            self._count(case, "failed")
        else:
            delay = min(p.backoff_max_seconds, p.backoff_seconds * 2 ** (case.attempts - 1))
            self.queue.retry_later(case.id, delay=delay * random.uniform(0.5, 1.5), error=error,
                                   actor=worker.name, run_id=self.run.run_id)
        if self._consecutive_failures >= p.circuit_breaker and not self._stop:
            self.run.log.error("circuit breaker: {} system errors in a row, stopping the run",
                               self._consecutive_failures)
            self.stats.circuit_open = True
            self.stop()

    async def _save_evidence(self, worker: Worker, case: Case) -> None:
        stem = f"{case.ref}-attempt{case.attempts}"
        for app in (worker.orders, worker.payments):
            with suppress(Exception):  # a dead page must not hide the real error
                await app.page.screenshot(
                    path=self.run.artifact("screenshots", f"{stem}-{app.app_name}.png"),
                    full_page=True, timeout=5_000)
        if worker.tracing:
            path = self.run.artifact("traces", f"{stem}.zip")
            try:
                await worker.context.tracing.stop_chunk(path=path)
                scrub_zip(path, self._secrets)
            except Exception:  # noqa: BLE001
                pass

    # -- one case ----------------------------------------------------------------------

    async def _handle(self, worker: Worker, case: Case) -> Finished:
        order_number = case.order_number or await self._identify(worker, case)
        if order_number != case.order_number:
            target = self.queue.merge(case.id, f"order:{order_number}", actor=worker.name,
                                      run_id=self.run.run_id)
            if target is not None:
                return Finished("merged", f"merged into case {target}")
            self.queue.set_order(case.id, order_number)
        order = await worker.orders.find_order(order_number)
        if order is None:
            raise BusinessException(f"Order {order_number} was not found in the order system.")
        self._cards[case.id] = order.payment_card
        self._currencies[case.id] = order.currency
        charge = await worker.payments.find_charge(order_number)
        if charge is None:
            raise Escalation(f"No charge for order {order_number} in the payment portal.")

        settled = self._settle_intents(case, charge)
        if settled is not None:
            if self.dry_run:
                return Finished("refunded", f"Already refunded ({settled.refund_number}).",
                                approved=settled.amount, refund_number=settled.refund_number)
            return await self._complete(worker, case, order, settled)
        claim = self._claim(case, order)
        if case.human_decision in ("approve", "partial"):
            decision = self._human(case, order, charge)
        else:
            since = utcnow() - timedelta(days=self.policy.customer_limit_days)
            recent = sum((a for at, a in self.queue.customer_refunds(order.email,
                                                                     exclude_case=case.id)
                          if at >= since), Decimal("0.00"))
            decision = decide(self.policy, claim, order, charge, self.today, recent)
            decision = await self._screen(worker, case, order, charge, decision)
        if not self.dry_run:
            self.queue.record_decision(case.id, snapshot.dump(order, charge, claim, decision,
                                                              self.today))
        reason = " ".join(decision.reasons)
        if decision.outcome is Outcome.REJECT:
            return Finished("rejected", reason, approved=Decimal("0.00"))
        if decision.outcome is Outcome.ESCALATE or not decision.pays:
            return Finished("escalated", reason, state=CaseState.ESCALATED,
                            approved=decision.amount)
        if self.dry_run:
            return Finished("refunded" if decision.outcome is Outcome.REFUND else "partial",
                            reason, approved=decision.amount)
        intent = await self._submit(worker, case, charge, decision)
        return await self._complete(worker, case, order, intent, decision)

    async def _identify(self, worker: Worker, case: Case) -> str:
        """Find the order for a request that named none: by email, else by phone.

        Email and phone are strong evidence when they lead to exactly one order; a
        social handle or a name alone is weak evidence and never refunds: it escalates.
        How the match was made is written to the audit trail.
        """
        phone = next((r.customer_phone for r in case.requests if r.customer_phone), None)
        field, value = ("email", case.customer_email) if case.customer_email else ("phone", phone)
        if not value:
            raise Escalation("The request names no order, email or phone (only a name or a "
                             "handle): a human must identify the customer.")
        found = [h.order_number for h in await worker.orders.search_orders(field, value)]
        if not found:
            raise BusinessException(f"No order found for {value}.")
        if len(found) > 1:
            raise Escalation(f"{value} has {len(found)} orders and the request names none "
                             f"({', '.join(found[:5])}).")
        self.queue.note(case.id, event="identified", actor=worker.name, run_id=self.run.run_id,
                        detail=f"order {found[0]} found by {field} search ({value}): the only "
                               f"order for this {field}, high confidence")
        return found[0]

    def _human(self, case: Case, order: OrderFacts, charge: ChargeFacts) -> Decision:
        """A human approved: pay what they set, never more than remains refundable."""
        who = f"{case.human_agent}" + (f": {case.human_comment}" if case.human_comment else "")
        if case.approved_amount is None:
            return Decision(Outcome.ESCALATE, Decimal("0.00"),
                            (f"Approved by {who}, but no amount was given.",))
        amount = min(case.approved_amount, charge.remaining)
        if amount <= 0:
            return Decision(Outcome.REJECT, Decimal("0.00"),
                            (f"Approved by {who}, but nothing remains refundable on the charge.",))
        reasons = [f"Approved by {who}."]
        if amount < case.approved_amount:
            reasons.append(f"Capped at {amount}, what remains refundable on the charge.")
        partial = case.human_decision == "partial" or amount < order.total
        return Decision(Outcome.PARTIAL if partial else Outcome.REFUND, amount, tuple(reasons))

    async def _screen(self, worker: Worker, case: Case, order: OrderFacts, charge: ChargeFacts,
                      decision: Decision) -> Decision:
        """Fraud and abuse signals for a decision that pays: they can only escalate it."""
        if not decision.pays or self.signals is None:
            return decision
        now = datetime.combine(self.today, utcnow().timetz())
        history = await worker.orders.search_orders("email", order.email)
        ctx = SignalContext(
            order=order, charge=charge, contacts=tuple(Contact.of(r) for r in case.requests),
            amount=decision.amount, now=now,
            customer_refunds=self.queue.customer_refunds(order.email, exclude_case=case.id),
            store_refunds_in_window=self.queue.refunds_since(
                store_window_start(self.signals, now)),
            customer_order_count=len(history),
            customer_order_totals=[h.total for h in history],
        )
        return escalate_decision(decision, assess(self.signals, ctx))

    def _claim(self, case: Case, order: OrderFacts | None = None) -> Claim:
        """What the case's contacts ask for; with the order, which of its lines too."""
        reqs = case.requests
        items = items_asked([r.reason_text for r in reqs], order.items) if order else ()
        return claim_from([r.requested_amount for r in reqs], [r.currency for r in reqs],
                          [r.reason_category for r in reqs], items)

    # -- exactly once ------------------------------------------------------------------

    def _settle_intents(self, case: Case, charge: ChargeFacts) -> RefundIntent | None:
        """Resolve intents left by an earlier attempt against the portal's refund history.

        Returns the confirmed intent if the case was in fact already refunded.
        """
        confirmed = None
        for intent in self.queue.intents(case.id):
            if intent.state == IntentState.PENDING:
                hit = next((r for r in charge.refunds if intent.key in r.reference), None)
                state = IntentState.CONFIRMED if hit else IntentState.ABSENT
                self.queue.resolve_intent(intent.id, state=state,
                                          refund_number=hit.refund_id if hit else None,
                                          run_id=self.run.run_id)
                intent.state, intent.refund_number = state, hit.refund_id if hit else None
            if intent.state == IntentState.CONFIRMED:
                confirmed = intent
        return confirmed

    async def _submit(self, worker: Worker, case: Case, charge: ChargeFacts,
                      decision: Decision) -> RefundIntent:
        """Record the intent, submit, record the refund number.

        If the session expired under the submit, log in again and look for the
        intent's key in the history before trying once more: never a blind retry.
        """
        reason = self._claim(case).reason_category
        for _ in range(2):
            intent = self.queue.open_intent(case.id, order_number=charge.order_number,
                                            transaction_id=charge.transaction_id,
                                            amount=decision.amount, run_id=self.run.run_id)
            crash_point("before_submit")
            try:
                number = await worker.payments.submit_refund(
                    charge.transaction_id, decision.amount, reason, intent.key)
            except SessionExpired:
                await worker.payments.login()
                fresh = await worker.payments.read_charge(charge.transaction_id)
                if self._settle_intents(case, fresh) is not None:
                    return next(i for i in self.queue.intents(case.id)
                                if i.state == IntentState.CONFIRMED)
                charge = fresh
                continue
            crash_point("after_submit")
            self.queue.resolve_intent(intent.id, state=IntentState.CONFIRMED,
                                      refund_number=number, run_id=self.run.run_id)
            intent.state, intent.refund_number = IntentState.CONFIRMED, number
            return intent
        raise SessionExpired("payment portal: session expired twice during the refund")

    async def _complete(self, worker: Worker, case: Case, order: OrderFacts,
                        intent: RefundIntent, decision: Decision | None = None) -> Finished:
        """After a confirmed refund: note the order (once), then close the case."""
        assert intent.refund_number is not None
        crash_point("after_record")
        note = (f"Refund {intent.refund_number} of {intent.amount} {order.currency} issued by "
                f"refund-bots for case {case.ref}.")
        if await worker.orders.add_note(order.order_number, note, marker=intent.refund_number):
            self.queue.note(case.id, event="order_noted", detail=note, actor=worker.name,
                            run_id=self.run.run_id)
        crash_point("after_note")
        if decision is None:  # settled from an earlier attempt's intent
            full = intent.amount >= order.total
            reason = f"Refund {intent.refund_number} found in the portal from an earlier attempt."
        else:
            full, reason = decision.outcome is Outcome.REFUND, " ".join(decision.reasons)
        return Finished("refunded" if full else "partial", reason, approved=intent.amount,
                        refund_number=intent.refund_number)
