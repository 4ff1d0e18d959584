"""The processing bot: the queue's consumer.

For each case: find the order, find the charge, settle any refund the bot may
already have submitted, decide, submit exactly once, note the order, finish.
Every step that changes the outside world is preceded by a durable record of
the intent, so a crash between any two lines is recoverable without paying twice.

A case is held under a fenced lease (see `bots.queue.leases`), renewed by a heartbeat
thread: every queue write carries the lease token, the lease is checked right before the
portal's submit click and before the order note, and a runner that lost its lease
abandons the case without another write. Any number of processors, in any number of
processes on any number of machines, can work one queue.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from playwright.async_api import Error as PlaywrightError
from sqlalchemy.orm import Session

from bots.config import Settings
from bots.decide import heard, snapshot
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
from bots.errors import (
    AmbiguousOutcome,
    AppUnavailable,
    BusinessException,
    LoginRefused,
    NoAnswer,
    RefundRefused,
    SelectorMissing,
    SessionExpired,
    SubmitInFlight,
    SystemException,
    TooLateToSubmit,
    UnknownPage,
    UnreadableValue,
)
from bots.legacy.artifacts import scrub_zip
from bots.legacy.session import BotSession, Worker, find_order_and_charge
from bots.models import ChargeFacts, Decision, OrderFacts, Outcome
from bots.notify import Notifier, OrderCustomer
from bots.queue import (
    Case,
    CaseState,
    CustomerLimit,
    CustomerLimitReached,
    IntentState,
    Lease,
    LeaseLost,
    Queue,
    RefundIntent,
    case_ref,
    runner_id,
    utcnow,
)
from bots.runs import RunFolder
from bots.work.crashpoints import crash_point
from bots.work.heartbeat import Heartbeat


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
    abandoned: int = 0  # cases another runner took over while we held them
    login_refused: str = ""  # an app refused the password: the run stopped (exit 1)

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
        self._customers: dict[int, OrderCustomer] = {}  # issue #12: only they are told facts
        self.today = today or date.today()
        self.on_case = on_case or (lambda case, outcome: None)
        self.stats = ProcessStats()
        self._consecutive_failures = 0
        self._stop = False
        self._secrets: list[str] = []
        self._owners: dict[str, str] = {}  # worker name -> its lease owner identity
        self.heartbeat = Heartbeat(queue, settings.processing.lease_seconds)
        timeout_s = settings.browser.timeout_ms / 1000
        # The longest a submit can take on our side (page load, fill, click, confirmation,
        # each retried in place), and how long one may still be running on the portal's.
        self.submit_seconds = timeout_s * (settings.processing.step_retries + 2) + 10
        self.grace_seconds = (settings.processing.submit_grace_seconds
                              if settings.processing.submit_grace_seconds is not None
                              else max(30.0, 4 * timeout_s))

    def stop(self) -> None:
        """Finish the cases in hand, claim no more (SIGTERM, Ctrl-C, circuit breaker)."""
        self._stop = True

    async def process(self, session: BotSession) -> ProcessStats:
        self._secrets = session.secrets()
        started = asyncio.get_running_loop().time()
        workers = [await session.worker(f"{self.run.run_id}/w{i + 1}",
                                        tracing=self.settings.browser.trace_failures)
                   for i in range(self.settings.processing.workers)]
        with self.heartbeat:
            await asyncio.gather(*(self._work(session, w) for w in workers))
        for w in workers:
            await w.context.close()
        self.stats.seconds = asyncio.get_running_loop().time() - started
        return self.stats

    # -- the worker loop ---------------------------------------------------------------

    async def _work(self, session: BotSession, worker: Worker) -> None:
        p = self.settings.processing
        owner = self._owners.setdefault(worker.name, runner_id(worker.name))
        logged_in = False
        while not self._stop:
            case = await asyncio.to_thread(
                self.queue.claim, owner, p.lease_seconds, self.run.run_id,
                exclude=self.proposals.keys(), max_attempts=p.max_attempts)
            if case is None:
                if not await self._wait_for_retry():
                    return
                continue
            lease = case.lease
            self.heartbeat.hold(lease)
            try:
                if not logged_in:
                    try:
                        await session.login(worker)
                        logged_in = True
                    except (SystemException, PlaywrightError) as exc:
                        await self._system_failure(worker, case, lease, exc)
                        continue
                await self._attempt(worker, case, lease)
            except LeaseLost as exc:
                self._abandon(case, exc)
            except LoginRefused as exc:  # issue #12: not a case's failure, and never retried
                self._login_refused(lease, exc)
            finally:
                self.heartbeat.drop(lease)

    def _login_refused(self, lease: Lease, exc: LoginRefused) -> None:
        """Give the case back untouched and stop the run: a wrong password locks accounts."""
        with suppress(LeaseLost):
            self.queue.release(lease, actor=lease.owner, run_id=self.run.run_id,
                               why=f"the run stopped: {exc}")
        self.run.log.error("{}", exc)
        self.stats.login_refused = self.stats.login_refused or str(exc)
        self.stop()

    def _abandon(self, case: Case, exc: LeaseLost) -> None:
        """Another runner holds the case now: touch nothing more, in the queue or the apps."""
        self.run.log.bind(case=case.ref).warning("abandoned: {}", exc)
        self.stats.abandoned += 1

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

    async def _attempt(self, worker: Worker, case: Case, lease: Lease) -> None:
        log = self.run.log.bind(case=case.ref)
        if worker.tracing:
            await worker.context.tracing.start_chunk(title=f"{case.ref} attempt {case.attempts}")
        try:
            result = await self._handle(worker, case, lease)
        except (LeaseLost, LoginRefused):
            if worker.tracing:
                with suppress(Exception):
                    await worker.context.tracing.stop_chunk()
            raise
        except SubmitInFlight as exc:
            if worker.tracing:
                await worker.context.tracing.stop_chunk()
            self.queue.defer(lease, delay=exc.wait_seconds, why=str(exc), actor=lease.owner,
                             run_id=self.run.run_id)
            log.info("waiting {:.0f}s: {}", exc.wait_seconds, exc)
            return
        except BusinessException as exc:
            result = Finished("rejected", str(exc))
        except (Escalation, AmbiguousOutcome) as exc:
            result = Finished("escalated", str(exc), state=CaseState.ESCALATED)
        except (SystemException, PlaywrightError, Exception) as exc:  # noqa: BLE001
            await self._system_failure(worker, case, lease, exc)
            return
        if worker.tracing:
            await worker.context.tracing.stop_chunk()  # success: nothing to keep
        self._consecutive_failures = 0
        if self.dry_run and result.outcome != "merged":
            self.proposals[case.id] = result
            self.queue.release(lease, actor=lease.owner, run_id=self.run.run_id,
                               why=f"dry run: would be {result.outcome}"
                                   + (f" ({result.approved})" if result.approved else "")
                                   + f": {result.reason}")
            log.info("dry run: would be {}: {}", result.outcome, result.reason)
            self._count(case, result.outcome)
            return
        if result.outcome == "merged":
            log.info("{}", result.reason)  # case.order_number: None, it was the customer's
            return
        self.queue.finish(lease, state=result.state, outcome=result.outcome,
                          reason=result.reason, actor=lease.owner, run_id=self.run.run_id,
                          approved_amount=result.approved, refund_number=result.refund_number,
                          outbox=self._outbox(case, result))
        log.info("{}: {}", result.outcome, result.reason)
        await self._send(case)
        self._count(case, result.outcome)

    def _outbox(self, case: Case, result: Finished) -> Callable[[Session, Case], object] | None:
        """What to tell every contact, recorded in the transaction that finishes the case."""
        notifier = self.notifier
        if notifier is None:
            return None
        kind = result.outcome
        if kind in ("refunded", "partial") and case.human_decision in ("approve", "partial"):
            kind = "approved"
        card = self._cards.pop(case.id, "")
        currency = self._currencies.pop(case.id, None) or case.currency
        customer = self._customers.pop(case.id, None)
        last4 = "".join(ch for ch in card if ch.isdigit())[-4:] or None

        def record(s: Session, held: Case) -> object:
            return notifier.record(s, held, outcome=kind, amount=result.approved,
                                   currency=currency, refund_number=result.refund_number,
                                   reason=result.reason, card_last4=last4,
                                   run_id=self.run.run_id, customer=customer)

        return record

    async def _send(self, case: Case) -> None:
        """Send what the case's contacts are owed now; what fails is retried by later runs."""
        if self.notifier is None:
            return
        try:
            results = await asyncio.to_thread(self.notifier.send_due, case_id=case.id)
        except Exception as exc:  # noqa: BLE001 - a sending problem must not undo a refund
            self.run.log.bind(case=case.ref).error("notification failed: {}", exc)
            self.stats.notifications["failed"] += 1
            return
        for r in results:
            self.stats.notifications[r.state.value] += 1
            if r.state.value in ("failed", "gave_up"):
                self.run.log.bind(case=case.ref).warning("notify {} {} {}: {}", r.channel,
                                                         r.to, r.state.value, r.error)

    def _count(self, case: Case, outcome: str) -> None:
        self.stats.processed += 1
        self.stats.outcomes[outcome] += 1
        self.on_case(case, outcome)

    async def _system_failure(self, worker: Worker, case: Case, lease: Lease,
                              exc: BaseException) -> None:
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
            extra: dict[str, Any] = {}  # a human's approved amount is kept for a retry
            if paid is not None:  # the money went out; only the follow-up steps failed
                reason = (f"Refund {paid.refund_number} of {paid.amount} was issued, but the "
                          f"follow-up failed: {reason}")
                extra = {"refund_number": paid.refund_number, "approved_amount": paid.amount}
            self.queue.finish(lease, state=CaseState.FAILED, outcome="failed", reason=reason,
                              actor=lease.owner, run_id=self.run.run_id, last_error=error,
                              **extra)
            self._count(case, "failed")
        else:
            delay = min(p.backoff_max_seconds, p.backoff_seconds * 2 ** (case.attempts - 1))
            self.queue.retry_later(lease, delay=delay * random.uniform(0.5, 1.5), error=error,
                                   actor=lease.owner, run_id=self.run.run_id)
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

    async def _handle(self, worker: Worker, case: Case, lease: Lease) -> Finished:
        # issue 17: a voicemail's machine-heard order number must be confirmed first
        if case.human_decision is None and (why := heard.before_lookup(case.requests)):
            raise Escalation(why)
        order_number = case.order_number or await self._identify(worker, case, lease)
        if order_number != case.order_number:
            target = self.queue.merge(lease, f"order:{order_number}", actor=lease.owner,
                                      run_id=self.run.run_id)
            if target is not None:
                return Finished("merged", f"merged into {case_ref(target)}, the case for "
                                          f"order {order_number}")
            self.queue.set_order(lease, order_number)
        order, charge_lookup = await find_order_and_charge(  # issue 14: both at once
            worker.orders, worker.payments, order_number)
        if case.human_decision is None and (
                why := heard.order_not_confirmed(case.requests, order_number, order)):
            raise Escalation(why)  # issue 17: never act on a misheard number alone
        if order is None:
            raise BusinessException(f"Order {order_number} was not found in the order system.")
        self._cards[case.id] = order.payment_card
        self._currencies[case.id] = order.currency
        self._customers[case.id] = OrderCustomer(order.email, order.phone)
        charge = charge_lookup.get()
        if charge is None:
            raise Escalation(f"No charge for order {order_number} in the payment portal.")

        settled = self._settle_intents(lease, case, charge)
        if settled is not None:
            if self.dry_run:
                return Finished("refunded", f"Already refunded ({settled.refund_number}).",
                                approved=settled.amount, refund_number=settled.refund_number)
            return await self._complete(worker, case, lease, order, settled)
        claim = self._claim(case, order)
        if case.human_decision in ("approve", "partial"):
            decision = self._human(case, order, charge)
        else:
            self._unsure(case)
            self._stranger(case, order)  # issue #12
            since = utcnow() - timedelta(days=self.policy.customer_limit_days)
            recent = sum((a for at, a in self.queue.customer_refunds(
                order.email, exclude_case=case.id, include_pending=True) if at >= since),
                Decimal("0.00"))
            decision = decide(self.policy, claim, order, charge, self.today, recent)
            decision = await self._screen(worker, case, order, charge, decision)
        if not self.dry_run:
            self.queue.record_decision(lease, snapshot.dump(order, charge, claim, decision,
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
        try:
            intent = await self._submit(worker, case, lease, order, charge, decision)
        except CustomerLimitReached as exc:
            return Finished("escalated", f"{reason} {exc}", state=CaseState.ESCALATED,
                            approved=decision.amount)
        return await self._complete(worker, case, lease, order, intent, decision)

    def _unsure(self, case: Case) -> None:
        """What the bot cannot decide alone, before any rule runs: it escalates, with why."""
        if case.follows is not None:
            raise Escalation(f"The customer wrote again about {case_ref(case.follows)}, which "
                             f"is already finished: a human answers the follow-up.")
        if doubts := case.doubts:
            raise Escalation("Not sure what the customer asks: " + "; ".join(doubts)
                             + (" " if doubts[-1].endswith(".") else ". ")
                             + "A human decides.")

    def _stranger(self, case: Case, order: OrderFacts) -> None:
        """A contact whose email or phone is not the order's customer's: a human checks who asks.

        (Issue #12.) Nothing is decided, paid or told on a stranger's word; contacts with only
        a handle cannot be checked and are only ever sent the neutral "received" note.
        """
        owner = OrderCustomer(order.email, order.phone)
        strangers = sorted({r.customer_email or r.customer_phone or "" for r in case.requests
                            if (r.customer_email or r.customer_phone) and not owner.owns(r)})
        if strangers:
            raise Escalation(f"Request from {', '.join(strangers)}, which is not the contact of "
                             f"order {order.order_number}'s customer: a human checks who asks "
                             f"before anything is decided or told.")

    async def _identify(self, worker: Worker, case: Case, lease: Lease) -> str:
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
            if why := heard.no_caller_match(case.requests, value):  # issue 17
                raise Escalation(why)
            raise BusinessException(f"No order found for {value}.")
        if len(found) > 1:
            raise Escalation(f"{value} has {len(found)} orders and the request names none "
                             f"({', '.join(found[:5])}).")
        self.queue.note(lease, event="identified", actor=lease.owner, run_id=self.run.run_id,
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
            reasons.append(f"Capped at {amount} (approved: {case.approved_amount}), what "
                           f"remains refundable on the charge.")
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

    def _settle_intents(self, lease: Lease, case: Case, charge: ChargeFacts,
                        answered: int | None = None) -> RefundIntent | None:
        """Resolve intents left by an earlier attempt against the portal's refund history.

        Returns the confirmed intent if the case was in fact already refunded. A pending
        intent whose key is not in the history is declared absent only when no submit can
        still land: it was never clicked (`submit_started_at` unset: the stamp is fenced),
        the portal answered that submit (`answered`), or the in-flight grace period has
        passed and the charge's balance is where it was. Otherwise the case waits
        (SubmitInFlight) or, when the balance moved without our key, escalates.
        """
        confirmed = None
        for intent in self.queue.intents(case.id):
            if intent.state == IntentState.PENDING:
                self._settle_one(lease, intent, charge, answered=intent.id == answered)
            if intent.state == IntentState.CONFIRMED:
                confirmed = intent
        return confirmed

    def _settle_one(self, lease: Lease, intent: RefundIntent, charge: ChargeFacts, *,
                    answered: bool) -> None:
        hit = next((r for r in charge.refunds if intent.key in r.reference), None)
        answered = answered or intent.submit_answered_at is not None
        if hit is None and intent.submit_started_at is not None and not answered:
            age = (utcnow() - intent.submit_started_at).total_seconds()
            if age < self.grace_seconds:
                raise SubmitInFlight(
                    f"refund {intent.key} of {intent.amount} was submitted {age:.0f}s ago and is "
                    f"not in the portal's history yet: it may still be running there; looking "
                    f"again after the {self.grace_seconds:.0f}s grace period",
                    self.grace_seconds - age + 1)
            if intent.remaining_before is not None and charge.remaining != intent.remaining_before:
                raise AmbiguousOutcome(
                    f"Refund {intent.key} of {intent.amount} was submitted but is not in the "
                    f"portal's history, yet the charge's refundable balance moved from "
                    f"{intent.remaining_before} to {charge.remaining}: whether it went through "
                    f"is unclear. A human must check the portal before anything is paid.")
        state = IntentState.CONFIRMED if hit else IntentState.ABSENT
        number = hit.refund_id if hit else None
        self.queue.resolve_intent(lease, intent.id, state=state, refund_number=number,
                                  run_id=self.run.run_id)
        intent.state, intent.refund_number = state, number

    async def _submit(self, worker: Worker, case: Case, lease: Lease, order: OrderFacts,
                      charge: ChargeFacts, decision: Decision) -> RefundIntent:
        """Record the intent, check the lease right before the click, submit, record the number.

        If the session expired under the submit, log in again and look for the intent's
        key in the history before trying once more: never a blind retry.
        """
        reason = self._claim(case).reason_category
        p = self.settings.processing
        limit = (CustomerLimit(order.email, self.policy.customer_auto_approve_limit,
                               utcnow() - timedelta(days=self.policy.customer_limit_days))
                 if self.policy.customer_auto_approve_limit is not None and order.email
                 and case.human_decision not in ("approve", "partial") else None)
        for _ in range(2):
            intent = self.queue.open_intent(
                lease, order_number=charge.order_number, transaction_id=charge.transaction_id,
                amount=decision.amount, run_id=self.run.run_id, remaining_before=charge.remaining,
                customer_email=order.email, customer_limit=limit)
            crash_point("before_submit")

            clicked: list[bool] = []

            async def before_click(intent_id: int = intent.id, clicked: list[bool] = clicked
                                   ) -> float:
                if lease.lost.is_set():
                    raise LeaseLost(f"{case.ref}: lease lost before the submit click")
                checked = time.monotonic()
                await asyncio.to_thread(self.queue.begin_submit, lease, intent_id,
                                        lease_seconds=p.lease_seconds,
                                        needed_seconds=self.submit_seconds)
                clicked.append(True)
                crash_point("after_last_check")
                return self._click_deadline(checked)

            try:
                number = await worker.payments.submit_refund(
                    charge.transaction_id, decision.amount, reason, intent.key,
                    before_click=before_click)
            except (AppUnavailable, RefundRefused, SelectorMissing, TooLateToSubmit,
                    UnknownPage, UnreadableValue) as exc:
                # The portal answered the submit (an error page, a refusal, a page we do not
                # know): the request is over, so the next attempt reads a final history
                # instead of waiting out the grace. A submit that did not answer in time
                # (NoAnswer) may still be running there: it gets the grace.
                if isinstance(exc, TooLateToSubmit):  # said before a lost lease hides it
                    self.run.log.warning("{}: {}", case.ref, exc)
                if clicked and not isinstance(exc, NoAnswer):
                    self.queue.submit_answered(lease, intent.id)
                raise
            except SessionExpired:
                await worker.payments.login()
                fresh = await worker.payments.read_charge(charge.transaction_id)
                if self._settle_intents(lease, case, fresh, answered=intent.id) is not None:
                    return next(i for i in self.queue.intents(case.id)
                                if i.state == IntentState.CONFIRMED)
                charge = fresh
                continue
            crash_point("after_submit")
            self.queue.resolve_intent(lease, intent.id, state=IntentState.CONFIRMED,
                                      refund_number=number, run_id=self.run.run_id)
            intent.state, intent.refund_number = IntentState.CONFIRMED, number
            return intent
        raise SessionExpired("payment portal: session expired twice during the refund")

    def _click_deadline(self, checked: float) -> float:
        """Until when (monotonic) a submit checked at `checked` may still be committed.

        Another runner can declare this intent absent (and pay anew) only once the lease
        renewed by that check has run out *and* the in-flight grace since its stamp has
        passed; a click committed later than that, less the longest a submit takes to land,
        could pay twice. The page object declines the click, dialog or modal after it.
        """
        p = self.settings.processing
        return checked + max(p.lease_seconds, self.grace_seconds) - self.submit_seconds

    async def _complete(self, worker: Worker, case: Case, lease: Lease, order: OrderFacts,
                        intent: RefundIntent, decision: Decision | None = None) -> Finished:
        """After a confirmed refund: note the order (once), then close the case."""
        if intent.refund_number is None:  # pragma: no cover - confirmed intents carry one
            raise AmbiguousOutcome(f"refund intent {intent.key} is confirmed without a number")
        crash_point("after_record")
        note = (f"Refund {intent.refund_number} of {intent.amount} {order.currency} issued by "
                f"refund-bots for case {case.ref}.")
        if lease.lost.is_set():
            raise LeaseLost(f"{case.ref}: lease lost before the order note")
        if await worker.orders.add_note(order.order_number, note, marker=intent.refund_number):
            self.queue.note(lease, event="order_noted", detail=note, actor=lease.owner,
                            run_id=self.run.run_id)
        crash_point("after_note")
        if decision is None:  # settled from an earlier attempt's intent
            full = intent.amount >= order.total
            reason = f"Refund {intent.refund_number} found in the portal from an earlier attempt."
        else:
            full, reason = decision.outcome is Outcome.REFUND, " ".join(decision.reasons)
        return Finished("refunded" if full else "partial", reason, approved=intent.amount,
                        refund_number=intent.refund_number)
