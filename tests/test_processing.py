"""The processor, the module that pays, run against in-memory legacy apps (tests/fakes.py).

Every path that decides whether money leaves: settling what an earlier attempt left,
submitting exactly once through expired sessions and hangs, losing the lease before the
click, human approvals, retries and the circuit breaker, identifying the customer, dry
runs and notifications. The queue is real (SQLite in tmp_path; the exactly-once paths on
PostgreSQL too); the portal's own refund list is the ground truth.
"""

from __future__ import annotations

import asyncio
import inspect
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fakes import (
    PAYMENTS_SECRET,
    FakeOrdersApp,
    FakePaymentsApp,
    FakeSession,
    SubmitFault,
    World,
    system_error,
)
from loguru import logger
from playwright.async_api import Error as PlaywrightError
from sqlalchemy.orm import Session

from bots.config import Settings
from bots.decide import snapshot
from bots.decide.policy import Policy
from bots.decide.signals import SignalSettings
from bots.errors import LoginRefused, SystemException
from bots.legacy.artifacts import zip_contains
from bots.legacy.orders import OrdersApp
from bots.legacy.payments import PaymentsApp
from bots.models import Decision, LineItem, OrderFacts, Outcome, RefundRequest
from bots.notify import NotificationResult, NotifyState, OrderCustomer
from bots.queue import Case, CaseState, IntentState, Queue, RefundIntent, runner_id, utcnow
from bots.queue.schema import case_ref
from bots.runs import RunFolder
from bots.work.processing import Processor, ProcessStats

D = Decimal
TODAY = date.today()
ORDER = "ORD-100001"
EMAIL = "ada@example.com"


# -- the harness -------------------------------------------------------------------------


@dataclass
class FakeNotifier:
    """The notifier's outbox: what the processor records when it finishes a case, and what
    sending then reports (or how it fails, like an SMTP server that is down)."""

    fail: Exception | None = None
    results: list[NotificationResult] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)  # what record() was given
    sent_for: list[int | None] = field(default_factory=list)  # send_due's case ids

    def record(self, s: object, case: Case, **kwargs: Any) -> list[object]:
        self.calls.append({"case": case.id, "session": s, **kwargs})
        return []

    def send_due(self, *, case_id: int | None = None,
                 force: bool = False) -> list[NotificationResult]:
        self.sent_for.append(case_id)
        if self.fail is not None:
            raise self.fail
        return self.results


def make_order(number: str = ORDER, *, price: str = "40.00", email: str = EMAIL,
               phone: str = "+49301234567", delivered_days_ago: int = 5,
               shipping: str = "0.00", status: str = "delivered") -> OrderFacts:
    items = (LineItem("SKU-1", "Lamp", "home", D(price), 1),)
    return OrderFacts(
        order_number=number, customer_name="Ada Lovelace", email=email, phone=phone,
        order_date=TODAY - timedelta(days=delivered_days_ago + 3),
        delivery_date=TODAY - timedelta(days=delivered_days_ago), status=status, items=items,
        shipping_fee=D(shipping), currency="EUR", payment_card="VISA **** **** **** 4242",
        total=D(price) + D(shipping))


class Bots:
    """A queue, both fake legacy apps, and a way to run a processor over them."""

    def __init__(self, tmp_path: Path, queue_url: str | None = None) -> None:
        self.tmp_path = tmp_path
        self.url = queue_url or f"sqlite:///{tmp_path / 'q.sqlite'}"
        self.queue = Queue(self.url)
        self.world = World()
        self.policy = Policy(auto_approve_limit=D("500.00"))
        self.processing: dict[str, Any] = {"backoff_seconds": 0, "backoff_max_seconds": 0,
                                           "submit_grace_seconds": 0}
        self.browser: dict[str, Any] = {"timeout_ms": 1000, "trace_failures": False}
        self.notifier: FakeNotifier | None = FakeNotifier()
        self.signals: SignalSettings | None = None
        self.processor: Processor | None = None
        self.session: FakeSession | None = None
        self.on_case: Any = None  # called with each case the run counts, and its outcome
        self._sources = 0

    @property
    def portal(self):  # noqa: ANN201 - the fake portal
        return self.world.portal

    @property
    def orders(self):  # noqa: ANN201 - the fake order system
        return self.world.orders

    def settings(self) -> Settings:
        app = {"url": "http://legacy.invalid", "username": "bot", "password_secret": "X",
               "selectors": "selectors/orders.yaml"}
        return Settings.model_validate({
            "orders": app, "payments": app, "runs_dir": str(self.tmp_path / "runs"),
            "processing": self.processing, "browser": self.browser, "signals": None})

    def sell(self, number: str = ORDER, *, price: str = "40.00", **kw: Any) -> OrderFacts:
        """An order in the order system with its charge in the portal."""
        order = self.orders.add(make_order(number, price=price, **kw))
        self.portal.add_charge(number, order.total)
        return order

    def ask(self, order: str | None = ORDER, *, email: str | None = EMAIL,
            amount: str | None = None, reason: str = "damaged", channel: str = "email",
            reason_text: str = "please refund", **kw: Any) -> int:
        self._sources += 1
        req = RefundRequest(channel=channel, source_id=f"m{self._sources}",
                            received_at=datetime.now(UTC), reason_text=reason_text,
                            customer_email=email, order_number=order,
                            requested_amount=D(amount) if amount else None,
                            reason_category=reason, **kw)
        return self.queue.add_request(req)[0]

    def run(self, *, dry_run: bool = False) -> ProcessStats:
        run = RunFolder.create(self.tmp_path / "runs")
        self.processor = Processor(self.settings(), self.queue, self.policy, run,
                                   signals=self.signals, today=TODAY, dry_run=dry_run,
                                   notifier=self.notifier,  # type: ignore[arg-type]
                                   on_case=self.on_case)
        self.session = FakeSession(self.world)
        try:
            return asyncio.run(self.processor.process(self.session))  # type: ignore[arg-type]
        finally:
            run.close()

    def built(self, **kwargs: Any) -> Processor:
        """A processor as `run` builds it (with these arguments), not run."""
        run = RunFolder.create(self.tmp_path / "runs")
        try:
            return Processor(self.settings(), self.queue, self.policy, run, **kwargs)
        finally:
            run.close()

    def case(self, case_id: int) -> Case:
        case = self.queue.get_case(case_id)
        assert case is not None
        return case

    def intents(self, case_id: int) -> list[RefundIntent]:
        return self.queue.intents(case_id)

    def events(self, case_id: int) -> list[str]:
        return [a.event for a in self.queue.audit_trail(case_id)]

    def crashed_attempt(self, case_id: int, amount: str = "40.00", *, clicked: bool = False,
                        seconds_ago: float = 0, answered: bool = False,
                        refund_in_portal: bool = False, expire: bool = True,
                        owner: str = "crashed-runner") -> RefundIntent:
        """An earlier runner opened an intent (and maybe clicked), then died."""
        held = self.queue.claim(owner, 300)
        assert held is not None and held.id == case_id
        charge = self.portal.charge_for(held.order_number or ORDER)
        assert charge is not None
        intent = self.queue.open_intent(
            held.lease, order_number=charge.order_number, transaction_id=charge.transaction_id,
            amount=D(amount), run_id="r0", remaining_before=charge.facts().remaining,
            customer_email=EMAIL)
        if clicked:
            self.queue.begin_submit(held.lease, intent.id, lease_seconds=300, needed_seconds=1)
            with self.queue.session() as s:
                row = s.get(RefundIntent, intent.id)
                assert row is not None
                row.submit_started_at = utcnow() - timedelta(seconds=seconds_ago)
        if answered:
            self.queue.submit_answered(held.lease, intent.id)
        if refund_in_portal:
            self.portal.refund_by_hand(charge.order_number, amount, reference=intent.key,
                                       operator="refund.bot")
        if expire:
            self.expire_lease(case_id)
        return intent

    def expire_lease(self, case_id: int) -> None:
        with self.queue.session() as s:
            row = s.get(Case, case_id)
            assert row is not None
            row.locked_until = utcnow() - timedelta(seconds=1)

    def take_over(self, case_id: int, owner: str = "other-runner") -> Case:
        """Another runner takes the case over (our lease ran out under us)."""
        self.expire_lease(case_id)
        taken = Queue(self.url).claim(owner, 300)
        assert taken is not None and taken.id == case_id
        return taken


@pytest.fixture
def bots(tmp_path: Path) -> Bots:
    return Bots(tmp_path)


@pytest.fixture
def any_bots(tmp_path: Path, queue_url: str) -> Bots:
    """The same harness on SQLite and on PostgreSQL."""
    return Bots(tmp_path, queue_url)


def paid(bots: Bots) -> list[tuple[str, Decimal]]:
    return [(r.order_number, r.amount) for r in bots.portal.refunds]


# -- the fakes stay true to the page objects ---------------------------------------------


@pytest.mark.parametrize(("fake", "real", "names"), [
    (FakeOrdersApp, OrdersApp, ["login", "find_order", "search_orders", "add_note"]),
    (FakePaymentsApp, PaymentsApp, ["login", "find_charge", "read_charge", "submit_refund",
                                    "list_refunds"]),
])
def test_fakes_have_the_page_objects_signatures(fake: type, real: type,
                                                names: list[str]) -> None:
    for name in names:
        assert inspect.signature(getattr(fake, name)) == inspect.signature(getattr(real, name))
        assert inspect.iscoroutinefunction(getattr(fake, name))
    assert fake.app_name == real.app_name


# -- the ordinary paths ------------------------------------------------------------------


def test_an_eligible_case_is_paid_once_noted_and_answered(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()
    stats = bots.run()
    case = bots.case(cid)
    assert (case.state, case.outcome, case.approved_amount) == ("done", "refunded", D("40.00"))
    assert paid(bots) == [(ORDER, D("40.00"))]
    [intent] = bots.intents(cid)
    assert intent.state == IntentState.CONFIRMED and case.refund_number == intent.refund_number
    assert bots.portal.refunds[0].reference == intent.key  # the key goes into the reference
    assert bots.orders.notes[ORDER] == [f"Refund {intent.refund_number} of 40.00 EUR issued "
                                        f"by refund-bots for case {case.ref}."]
    assert stats.processed == 1 and stats.outcomes == {"refunded": 1} and stats.abandoned == 0
    [call] = bots.notifier.calls  # type: ignore[union-attr]
    assert (call["outcome"], call["amount"], call["currency"], call["card_last4"]) == \
        ("refunded", D("40.00"), "EUR", "4242")
    assert call["refund_number"] == intent.refund_number
    assert call["customer"] == OrderCustomer(EMAIL, "+49301234567")  # who may be told facts
    assert call["reason"] == case.reason and call["run_id"] == bots.processor.run.run_id
    assert isinstance(call["session"], Session)  # the transaction that finishes the case
    assert case.decision is not None and "40.00" in case.decision
    order, charge, claim, decision, today = snapshot.load(case.decision)  # what it saw
    assert (order, today) == (bots.orders.orders[ORDER], TODAY)
    assert (charge.transaction_id, charge.order_number, charge.refunded) == (
        bots.portal.charge_for(ORDER).transaction_id, ORDER, D("0.00"))  # type: ignore
    assert claim.reason_category == "damaged" and decision.amount == D("40.00")
    assert case.reason == " ".join(decision.reasons)  # the policy's reasons, as decided
    assert all(w.context.closed for w in bots.session.workers)  # type: ignore[union-attr]


def test_a_finished_case_is_recorded_counted_and_logged_by_this_run(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()
    counted: list[tuple[int, str]] = []
    bots.on_case = lambda case, outcome: counted.append((case.id, outcome))
    bots.run()
    case = bots.case(cid)
    [finished] = [a for a in bots.queue.audit_trail(cid) if a.event == "refunded"]
    assert finished.run_id == bots.processor.run.run_id  # type: ignore[union-attr]
    assert counted == [(cid, "refunded")]
    assert f"| refunded: {case.reason}\n" in _run_log(bots)


def test_each_worker_claims_as_its_own_runner(bots: Bots) -> None:
    bots.processing["workers"] = 2
    bots.sell()
    bots.ask()
    bots.run()
    owners = bots.processor._owners  # type: ignore[union-attr]
    names = [w.name for w in bots.session.workers]  # type: ignore[union-attr]
    assert sorted(owners) == sorted(names) and len(set(owners.values())) == 2
    run_id = bots.processor.run.run_id  # type: ignore[union-attr]
    assert names == [f"{run_id}/w1", f"{run_id}/w2"]  # as the audit and the traces name them


def test_a_beat_in_the_middle_of_a_case_renews_its_lease_and_the_case_goes_on(
        bots: Bots, monkeypatch: pytest.MonkeyPatch) -> None:
    """The heartbeat renews through the run's own queue (its thread beats every third of
    a lease; here one beat is made to land while the order is being read)."""
    bots.sell()
    cid = bots.ask()
    renewed: list[tuple[datetime, datetime]] = []
    find_order = FakeOrdersApp.find_order

    async def slow_find(self: FakeOrdersApp, order_number: str) -> OrderFacts | None:
        before = bots.case(cid).locked_until
        bots.processor.heartbeat.beat()  # type: ignore[union-attr]
        after = bots.case(cid).locked_until
        assert before is not None and after is not None
        renewed.append((before, after))
        return await find_order(self, order_number)

    monkeypatch.setattr(FakeOrdersApp, "find_order", slow_find)
    bots.run()
    [(before, after)] = renewed
    assert after > before and bots.case(cid).outcome == "refunded"


def test_a_finished_case_is_no_longer_renewed(bots: Bots,
                                               logged: list[tuple[str | None, str, str]]
                                               ) -> None:
    """Once a case is finished its lease leaves the heartbeat: a later beat neither renews
    it nor warns ops that another runner took it over."""
    bots.sell()
    cid = bots.ask()
    bots.run()
    done = bots.case(cid)
    bots.processor.heartbeat.beat()  # type: ignore[union-attr]
    assert bots.case(cid).locked_until == done.locked_until
    assert not [text for _, level, text in logged if level == "WARNING"]


def test_a_processor_pays_unless_asked_for_a_dry_run_and_knows_its_day(
        bots: Bots) -> None:
    processor = bots.built()
    assert processor.dry_run is False and processor.today == date.today()


@pytest.mark.parametrize(("timeout_ms", "retries", "seconds"), [(1000, 0, 12), (15000, 2, 70)])
def test_the_longest_submit_is_each_step_retried_plus_ten_seconds(
        bots: Bots, timeout_ms: int, retries: int, seconds: float) -> None:
    """What the lease must still cover before the click: the page timeout for each try of
    the submit's steps (retries + 2), and 10 s more."""
    bots.browser["timeout_ms"] = timeout_ms
    bots.processing["step_retries"] = retries
    processor = bots.built(today=TODAY)
    assert processor.submit_seconds == seconds


def test_a_run_measures_its_own_duration(bots: Bots) -> None:
    bots.sell()
    bots.ask()
    stats = bots.run()
    assert 0 < stats.seconds < 60


def test_a_worker_logs_in_once_for_all_its_cases(bots: Bots) -> None:
    for n in (1, 2, 3):
        bots.sell(f"ORD-10000{n}")
        bots.ask(f"ORD-10000{n}")
    stats = bots.run()
    assert stats.outcomes == {"refunded": 3} and bots.orders.logins == 1


def test_a_failed_login_is_recorded_with_its_error(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()
    bots.orders.fail_login.append(SystemException("order system: login page did not load"))
    bots.run()
    retry = next(a for a in bots.queue.audit_trail(cid) if a.event == "retry_scheduled")
    assert retry.detail.endswith(" after: SystemException: order system: login page did "
                                 "not load"), retry.detail


def test_a_case_that_never_finished_its_last_attempts_is_set_aside_not_paid(
        bots: Bots) -> None:
    """The run passes its max_attempts to the claim: a case whose runner died each time
    may be what kills runners."""
    bots.processing["max_attempts"] = 1
    bots.sell()
    cid = bots.ask()
    held = bots.queue.claim("crashed-runner", 300)
    assert held is not None and held.id == cid
    bots.expire_lease(cid)
    bots.run()
    case = bots.case(cid)
    assert (case.state, case.outcome) == (CaseState.FAILED, "failed")
    assert "set aside" in (case.reason or "") and paid(bots) == []


def test_a_smaller_amount_asked_is_a_partial_refund(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask(amount="15.00")
    bots.run()
    assert (bots.case(cid).outcome, bots.case(cid).approved_amount) == ("partial", D("15.00"))
    assert paid(bots) == [(ORDER, D("15.00"))]


def test_a_policy_rejection_pays_nothing(bots: Bots) -> None:
    bots.sell(delivered_days_ago=60)
    cid = bots.ask()
    bots.run()
    case = bots.case(cid)
    assert (case.state, case.outcome, case.approved_amount) == ("done", "rejected", D("0.00"))
    assert "outside the 30-day refund window" in (case.reason or "")
    assert case.reason == " ".join(snapshot.load(case.decision or "")[3].reasons)
    assert paid(bots) == [] and bots.intents(cid) == []
    assert bots.notifier.calls[0]["outcome"] == "rejected"  # type: ignore[union-attr]


def test_an_unknown_order_is_rejected_with_the_reason(bots: Bots) -> None:
    cid = bots.ask("ORD-999999")
    bots.run()
    case = bots.case(cid)
    assert case.outcome == "rejected" and "ORD-999999 was not found" in (case.reason or "")


def test_an_order_without_a_charge_escalates(bots: Bots) -> None:
    bots.orders.add(make_order())
    cid = bots.ask()
    bots.run()
    case = bots.case(cid)
    assert case.state == CaseState.ESCALATED and "No charge for order" in (case.reason or "")


def test_above_the_auto_approve_limit_escalates_with_the_proposal(bots: Bots) -> None:
    bots.sell(price="500.01")
    cid = bots.ask()
    bots.run()
    case = bots.case(cid)
    assert (case.state, case.approved_amount) == (CaseState.ESCALATED, D("500.01"))
    assert "above the auto-approve limit" in (case.reason or "") and paid(bots) == []
    assert case.reason == " ".join(snapshot.load(case.decision or "")[3].reasons)


def test_at_the_auto_approve_limit_pays(bots: Bots) -> None:
    bots.sell(price="500.00")
    cid = bots.ask()
    bots.run()
    assert bots.case(cid).outcome == "refunded" and paid(bots) == [(ORDER, D("500.00"))]


def test_fraud_signals_escalate_a_payment(bots: Bots) -> None:
    bots.signals = SignalSettings()
    bots.sell()
    cid = bots.ask(email="mallory@example.net")  # not the buyer
    bots.run()
    case = bots.case(cid)
    assert case.state == CaseState.ESCALATED and "mallory@example.net" in (case.reason or "")
    assert paid(bots) == []


def test_fraud_signals_below_the_threshold_let_it_pay(bots: Bots) -> None:
    bots.signals = SignalSettings()
    bots.sell()
    cid = bots.ask()
    bots.run()
    assert bots.case(cid).outcome == "refunded"


def _fired(bots: Bots, cid: int) -> str:
    """The signals' summary sentence in the case's reason (escalation at a score of 1)."""
    reason = bots.case(cid).reason or ""
    return reason.split("Fraud signals scored ", 1)[1].split(";", 1)[0] if \
        "Fraud signals scored " in reason else ""


def test_the_customers_earlier_refunds_and_orders_feed_the_signals(bots: Bots) -> None:
    for n in (2, 3):  # two refunds for other orders of the same customer first
        bots.sell(f"ORD-10000{n}")
        bots.ask(f"ORD-10000{n}")
    bots.run()
    bots.signals = SignalSettings(escalate_at_score=1)
    bots.sell()
    cid = bots.ask()
    bots.run()
    assert bots.case(cid).state == CaseState.ESCALATED and len(paid(bots)) == 2
    # a third refund in 30 days (velocity 2) and 3 refunds on 3 orders (ratio 0.5)
    assert _fired(bots, cid) == "60 (escalation at 1): customer velocity, refund ratio"
    assert "3 refunds for this customer in the last 30 days counting this one (limit 2)" in \
        (bots.case(cid).reason or "")


def test_the_store_wide_refunds_feed_the_signals(bots: Bots) -> None:
    bots.sell("ORD-100002", email="bob@example.com")
    bots.ask("ORD-100002", email="bob@example.com")
    bots.run()
    bots.signals = SignalSettings(escalate_at_score=1, store_velocity=1)
    bots.sell()
    cid = bots.ask()
    bots.run()
    assert _fired(bots, cid) == "50 (escalation at 1): store velocity"
    reasons = snapshot.load(bots.case(cid).decision or "")[3].reasons  # the policy's and theirs
    assert len(reasons) == 3 and bots.case(cid).reason == " ".join(reasons)
    assert "2 refunds store-wide in the last 24 hours counting this one (limit 1)" in \
        (bots.case(cid).reason or "")


def test_the_amount_and_the_customers_usual_orders_feed_the_signals(bots: Bots) -> None:
    for n in (2, 3, 4):  # three small orders, never refunded
        bots.orders.add(make_order(f"ORD-10000{n}", price="10.00"))
    bots.signals = SignalSettings(escalate_at_score=1)
    bots.sell()
    cid = bots.ask(amount="35.00")
    bots.run()
    assert _fired(bots, cid) == "20 (escalation at 1): amount vs usual"
    assert ("Refund of 35.00 EUR is 3.5× this customer's usual order value (median 10.00 "
            "over 4 orders; limit 3×).") in (bots.case(cid).reason or "")


def test_a_claim_before_the_delivery_is_early(bots: Bots) -> None:
    bots.signals = SignalSettings(escalate_at_score=1)
    bots.sell(delivered_days_ago=-2)  # ordered yesterday, delivery expected tomorrow
    cid = bots.ask()
    bots.run()
    assert _fired(bots, cid) == "20 (escalation at 1): early claim"


def test_signals_never_touch_a_decision_that_pays_nothing(bots: Bots) -> None:
    bots.sell("ORD-100002", email="bob@example.com")
    bots.ask("ORD-100002", email="bob@example.com")
    bots.run()
    bots.signals = SignalSettings(escalate_at_score=1, store_velocity=1)  # would fire
    bots.sell(price="600.00")  # above the auto-approve limit: escalated by the policy
    cid = bots.ask()
    bots.run()
    case = bots.case(cid)
    assert case.state == CaseState.ESCALATED and "Fraud signals" not in (case.reason or "")


# -- what the bot cannot decide alone ------------------------------------------------------


def test_a_doubt_from_intake_escalates_with_its_words(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask(doubts=("a minus sign before the amount (-5 EUR)",))
    bots.run()
    case = bots.case(cid)
    assert case.state == CaseState.ESCALATED and paid(bots) == []
    assert case.outcome == "escalated" and bots.processor.stats.outcomes == {  # type: ignore
        "escalated": 1}
    assert case.reason == ("Not sure what the customer asks: a minus sign before the amount "
                           "(-5 EUR). A human decides.")


def test_a_follow_up_on_a_finished_case_escalates(bots: Bots) -> None:
    bots.sell()
    first = bots.ask()
    bots.run()
    second = bots.ask()
    assert second != first
    bots.run()
    case = bots.case(second)
    assert case.state == CaseState.ESCALATED and case.reason == (
        f"The customer wrote again about {bots.case(first).ref}, which is already finished: "
        f"a human answers the follow-up.")
    assert paid(bots) == [(ORDER, D("40.00"))]  # the first refund only


def test_several_doubts_are_all_named_and_a_full_stop_is_not_doubled(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask(doubts=("two amounts (20.00, 30.00)", "the order number is unclear."))
    bots.run()
    assert bots.case(cid).reason == (
        "Not sure what the customer asks: two amounts (20.00, 30.00); the order number is "
        "unclear. A human decides.")


def test_contacts_from_two_strangers_are_both_named_once(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask(email="mallory@example.net")
    bots.ask(email=None, customer_phone="+33612345678")  # joins the order's case
    bots.ask(email="mallory@example.net")
    bots.ask(email=None, customer_handle="@ada")  # a handle cannot be checked: not named
    bots.run()
    case = bots.case(cid)
    assert len(case.requests) == 4 and paid(bots) == []
    assert case.reason == (
        f"Request from +33612345678, mallory@example.net, which is not the contact of order "
        f"{ORDER}'s customer: a human checks who asks before anything is decided or told.")


def test_the_customer_by_phone_is_no_stranger(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask(email=None, customer_phone="+49 30 1234567")
    bots.run()
    assert bots.case(cid).outcome == "refunded"


def test_a_line_of_the_order_named_in_the_message_is_what_is_refunded(bots: Bots) -> None:
    order = OrderFacts(
        order_number=ORDER, customer_name="Ada Lovelace", email=EMAIL, phone="+49301234567",
        order_date=TODAY - timedelta(days=8), delivery_date=TODAY - timedelta(days=5),
        status="delivered", items=(LineItem("SKU-1", "Lamp", "home", D("40.00"), 1),
                                   LineItem("SKU-2", "Mug", "home", D("12.00"), 1)),
        shipping_fee=D("0.00"), currency="EUR", payment_card="VISA **** 4242", total=D("52.00"))
    bots.orders.add(order)
    bots.portal.add_charge(ORDER, order.total)
    cid = bots.ask(reason_text="the mug arrived broken")
    bots.run()
    case = bots.case(cid)
    assert (case.outcome, case.approved_amount) == ("partial", D("12.00"))
    assert paid(bots) == [(ORDER, D("12.00"))]


# -- identifying the customer --------------------------------------------------------------


def test_the_only_order_for_an_email_is_identified_and_paid(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask(order=None)
    bots.run()
    case = bots.case(cid)
    assert (case.order_number, case.outcome) == (ORDER, "refunded")
    trail = bots.queue.audit_trail(cid)
    [found] = [a for a in trail if a.event == "identified"]
    assert found.detail == (f"order {ORDER} found by email search ({EMAIL}): the only order "
                            f"for this email, high confidence")


def test_no_order_for_the_email_is_rejected(bots: Bots) -> None:
    bots.sell(email="someone.else@example.com")
    cid = bots.ask(order=None)
    bots.run()
    case = bots.case(cid)
    assert case.outcome == "rejected" and case.reason == f"No order found for {EMAIL}."


def test_several_orders_for_the_email_escalate(bots: Bots) -> None:
    bots.sell()
    bots.sell("ORD-100002")
    cid = bots.ask(order=None)
    bots.run()
    case = bots.case(cid)
    assert case.state == CaseState.ESCALATED and case.reason == (
        f"{EMAIL} has 2 orders and the request names none ({ORDER}, ORD-100002).")
    assert paid(bots) == []


def test_a_phone_alone_identifies_by_phone(bots: Bots) -> None:
    bots.sell(phone="+49301234567")
    cid = bots.ask(order=None, email=None, customer_phone="+49301234567")
    bots.run()
    assert bots.case(cid).order_number == ORDER and bots.case(cid).outcome == "refunded"


def test_six_orders_for_the_email_name_the_first_five(bots: Bots) -> None:
    numbers = [f"ORD-10000{n}" for n in range(1, 7)]
    for number in numbers:
        bots.sell(number)
    cid = bots.ask(order=None)
    bots.run()
    assert bots.case(cid).reason == (f"{EMAIL} has 6 orders and the request names none "
                                     f"({', '.join(numbers[:5])}).")


def test_the_identified_order_is_noted_by_this_run(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask(order=None)
    bots.run()
    [found] = [a for a in bots.queue.audit_trail(cid) if a.event == "identified"]
    assert found.run_id == bots.processor.run.run_id  # type: ignore[union-attr]


# -- a voicemail: what a machine heard is confirmed before anything is done (issue 17)


def test_a_voicemail_intake_was_unsure_about_escalates_before_any_lookup(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask(None, email=None, channel="voice", customer_phone="+49301234567",
                   source_ref="vm-7.wav", doubts=("no order number could be heard",))
    bots.run()
    case = bots.case(cid)
    assert (case.state, bots.orders.finds, paid(bots)) == (CaseState.ESCALATED, 0, [])
    assert case.reason == ("Not sure what the caller asks: no order number could be heard. "
                           "A human listens to the recording and decides.")


def test_a_voicemail_whose_caller_id_finds_no_order_escalates_not_rejects(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask(None, email=None, channel="voice", customer_phone="+33612345678",
                   source_ref="vm-8.wav")
    bots.run()
    case = bots.case(cid)
    assert case.state == CaseState.ESCALATED and paid(bots) == []
    assert case.reason == ("No order found for the caller id +33612345678, and no order "
                           "number could be heard for sure in the voicemail (vm-8.wav): a "
                           "human listens to it.")


def test_a_heard_order_number_of_another_phone_escalates(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask(email=None, channel="voice", customer_phone="+33612345678",
                   source_ref="vm-9.wav")
    bots.run()
    case = bots.case(cid)
    assert case.state == CaseState.ESCALATED and paid(bots) == []
    assert case.reason is not None and case.reason.startswith(
        f"Order {ORDER} was heard by machine in a voicemail (vm-9.wav), but the caller id "
        f"does not match")


def test_a_heard_order_number_the_caller_id_confirms_is_paid(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask(email=None, channel="voice", customer_phone="+49 30 1234567",
                   source_ref="vm-10.wav")
    bots.run()
    assert bots.case(cid).outcome == "refunded" and paid(bots) == [(ORDER, D("40.00"))]


def test_a_human_decision_on_a_voicemail_is_not_asked_again(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask(None, email=None, channel="voice", customer_phone="+49301234567",
                   source_ref="vm-11.wav", doubts=("no order number could be heard",))
    bots.run()
    bots.queue.human_decision(cid, decision="approve", amount=D("40.00"), agent="ana",
                              comment="heard it myself", run_id=None)
    bots.run()  # the human listened: the caller id identifies the order, the approval pays
    assert bots.case(cid).outcome == "refunded" and paid(bots) == [(ORDER, D("40.00"))]


def test_a_handle_alone_never_identifies(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask(order=None, email=None, customer_handle="@ada")
    bots.run()
    case = bots.case(cid)
    assert case.state == CaseState.ESCALATED and case.reason == (
        "The request names no order, email or phone (only a name or a handle): a human must "
        "identify the customer.")


def test_a_customer_case_merges_into_the_order_case(
        bots: Bots, logged: list[tuple[str | None, str, str]]) -> None:
    bots.sell()
    loose = bots.ask(order=None)  # claimed first: oldest
    order_case = bots.ask()
    stats = bots.run()
    assert bots.case(loose).state == CaseState.MERGED
    said = f"merged into {case_ref(order_case)}, the case for order {ORDER}"
    assert (case_ref(loose), "INFO", said) in logged  # the target, not "order None"
    assert len(bots.case(order_case).requests) == 2
    assert paid(bots) == [(ORDER, D("40.00"))] and stats.processed == 1
    assert stats.abandoned == 0 and stats.system_errors == 0  # merging is not losing the case
    [merged] = [a for a in bots.queue.audit_trail(loose) if a.event == "merged"]
    [claimed] = [a for a in bots.queue.audit_trail(loose) if a.event == "claimed"]
    assert (merged.actor, merged.run_id) == (claimed.actor, claimed.run_id)
    assert merged.run_id == bots.processor.run.run_id  # type: ignore[union-attr]


# -- settling what an earlier attempt left -------------------------------------------------


def test_a_pending_intent_found_in_the_portal_is_confirmed_not_paid_again(
        any_bots: Bots) -> None:
    bots = any_bots
    bots.sell()
    cid = bots.ask()
    intent = bots.crashed_attempt(cid, clicked=True, seconds_ago=5, refund_in_portal=True)
    bots.processing["submit_grace_seconds"] = 600  # found: no need to wait for anything
    bots.run()
    case = bots.case(cid)
    assert (case.outcome, case.approved_amount) == ("refunded", D("40.00"))
    assert "found in the portal from an earlier attempt" in (case.reason or "")
    assert paid(bots) == [(ORDER, D("40.00"))]
    [settled] = bots.intents(cid)
    assert settled.id == intent.id and settled.state == IntentState.CONFIRMED
    assert case.refund_number == settled.refund_number == bots.portal.refunds[0].refund_id
    assert len(bots.orders.notes[ORDER]) == 1


def test_a_partial_refund_found_in_the_portal_is_reported_partial(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask(amount="10.00")
    bots.crashed_attempt(cid, "10.00", clicked=True, refund_in_portal=True)
    bots.run()
    assert (bots.case(cid).outcome, bots.case(cid).approved_amount) == ("partial", D("10.00"))


def test_a_pending_intent_never_clicked_is_absent_and_paid_once(any_bots: Bots) -> None:
    bots = any_bots
    bots.sell()
    cid = bots.ask()
    bots.processing["submit_grace_seconds"] = 600  # never clicked: no grace needed
    bots.crashed_attempt(cid, clicked=False)
    bots.run()
    assert [i.state for i in bots.intents(cid)] == [IntentState.ABSENT, IntentState.CONFIRMED]
    assert paid(bots) == [(ORDER, D("40.00"))] and bots.case(cid).outcome == "refunded"


def test_a_submit_still_in_flight_waits_without_paying_or_spending_an_attempt(
        bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()
    bots.processing["submit_grace_seconds"] = 60
    bots.processing["backoff_max_seconds"] = 10  # the wait is longer: the run ends
    bots.crashed_attempt(cid, clicked=True, seconds_ago=30)
    stats = bots.run()
    case = bots.case(cid)
    assert case.state == CaseState.QUEUED and case.attempts == 1  # the crashed one only
    assert case.next_attempt_at is not None
    wait = (case.next_attempt_at - utcnow()).total_seconds()
    assert 15 < wait <= 31  # the rest of the grace, plus a second
    assert paid(bots) == [] and bots.portal.submits == []
    assert [i.state for i in bots.intents(cid)] == [IntentState.PENDING]
    assert stats.processed == 0 and "deferred" in bots.events(cid)


@pytest.mark.parametrize(("seconds_ago", "waits"), [(59, True), (61, False)])
def test_the_in_flight_grace_edge(bots: Bots, seconds_ago: int, waits: bool) -> None:
    bots.sell()
    cid = bots.ask()
    bots.processing["submit_grace_seconds"] = 60
    bots.processing["backoff_max_seconds"] = 0.5
    bots.crashed_attempt(cid, clicked=True, seconds_ago=seconds_ago)
    bots.run()
    assert (paid(bots) == []) is waits
    assert bots.case(cid).state == (CaseState.QUEUED if waits else CaseState.DONE)


def test_a_submit_past_the_grace_with_the_balance_unchanged_is_absent(any_bots: Bots) -> None:
    bots = any_bots
    bots.sell()
    cid = bots.ask()
    bots.processing["submit_grace_seconds"] = 60
    bots.crashed_attempt(cid, clicked=True, seconds_ago=120)
    bots.run()
    assert [i.state for i in bots.intents(cid)] == [IntentState.ABSENT, IntentState.CONFIRMED]
    assert paid(bots) == [(ORDER, D("40.00"))]


def test_a_submit_the_portal_answered_is_absent_without_waiting(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()
    bots.processing["submit_grace_seconds"] = 600
    bots.crashed_attempt(cid, clicked=True, seconds_ago=1, answered=True)
    bots.run()
    assert [i.state for i in bots.intents(cid)] == [IntentState.ABSENT, IntentState.CONFIRMED]
    assert paid(bots) == [(ORDER, D("40.00"))]


def test_a_balance_that_moved_without_our_key_escalates(any_bots: Bots) -> None:
    bots = any_bots
    bots.sell()
    cid = bots.ask()
    bots.crashed_attempt(cid, clicked=True, seconds_ago=120)
    bots.portal.refund_by_hand(ORDER, "40.00", reference="phoned in, no key")
    bots.run()
    case = bots.case(cid)
    assert case.state == CaseState.ESCALATED
    assert "whether it went through is unclear" in (case.reason or "")
    assert "from 40.00 to 0.00" in (case.reason or "")
    assert [i.state for i in bots.intents(cid)] == [IntentState.PENDING]
    assert len(bots.portal.refunds) == 1  # the agent's; the bot paid nothing


def test_a_dry_run_reports_a_refund_already_made(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()
    bots.crashed_attempt(cid, clicked=True, refund_in_portal=True)
    bots.run(dry_run=True)
    proposal = bots.processor.proposals[cid]  # type: ignore[union-attr]
    refund = bots.portal.refunds[0].refund_id
    assert (proposal.outcome, proposal.reason, proposal.approved, proposal.refund_number) == (
        "refunded", f"Already refunded ({refund}).", D("40.00"), refund)
    assert len(bots.portal.refunds) == 1


# -- submitting through expired sessions, hangs and refusals ------------------------------


def test_session_expired_before_the_click_logs_in_and_pays_once(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()
    bots.portal.on_submit.append(SubmitFault.EXPIRED_BEFORE_CLICK)
    stats = bots.run()
    assert paid(bots) == [(ORDER, D("40.00"))] and bots.case(cid).outcome == "refunded"
    assert [i.state for i in bots.intents(cid)] == [IntentState.ABSENT, IntentState.CONFIRMED]
    assert bots.portal.logins == 2 and stats.system_errors == 0


def test_session_expired_at_the_click_without_a_refund_pays_once(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()
    bots.processing["submit_grace_seconds"] = 600  # the answer is in: no waiting
    bots.portal.on_submit.append(SubmitFault.EXPIRED_AT_CLICK)
    bots.run()
    assert paid(bots) == [(ORDER, D("40.00"))] and len(bots.portal.submits) == 2
    assert [i.state for i in bots.intents(cid)] == [IntentState.ABSENT, IntentState.CONFIRMED]


def test_session_expired_after_the_refund_was_made_finds_it(any_bots: Bots) -> None:
    bots = any_bots
    bots.sell()
    cid = bots.ask()
    bots.portal.on_submit.append(SubmitFault.EXPIRED_AFTER_REFUND)
    bots.run()
    assert paid(bots) == [(ORDER, D("40.00"))] and len(bots.portal.submits) == 1
    [intent] = bots.intents(cid)
    assert intent.state == IntentState.CONFIRMED
    assert bots.case(cid).refund_number == intent.refund_number == "RF-000001"
    assert bots.case(cid).outcome == "refunded"


def test_session_expired_twice_is_a_system_error_then_pays_once(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()
    bots.portal.on_submit.extend([SubmitFault.EXPIRED_BEFORE_CLICK] * 2)
    stats = bots.run()
    assert stats.system_errors == 1 and "expired twice" in (bots.case(cid).last_error or "")
    assert paid(bots) == [(ORDER, D("40.00"))] and bots.case(cid).attempts == 2


def test_a_hang_after_the_refund_is_found_on_the_next_attempt(any_bots: Bots) -> None:
    bots = any_bots
    bots.sell()
    cid = bots.ask()
    bots.portal.on_submit.append(SubmitFault.HANG_AFTER_REFUND)
    stats = bots.run()
    assert stats.system_errors == 1 and paid(bots) == [(ORDER, D("40.00"))]
    assert [i.state for i in bots.intents(cid)] == [IntentState.CONFIRMED]
    assert bots.case(cid).outcome == "refunded"


def test_a_hang_within_the_grace_waits_instead_of_paying_again(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()
    bots.processing["submit_grace_seconds"] = 600
    bots.processing["backoff_max_seconds"] = 1
    bots.portal.on_submit.append(SubmitFault.HANG_BEFORE_REFUND)  # nobody can know that yet
    bots.run()
    assert bots.case(cid).state == CaseState.QUEUED and paid(bots) == []
    assert len(bots.portal.submits) == 1
    assert [i.state for i in bots.intents(cid)] == [IntentState.PENDING]


def test_a_hang_without_a_refund_is_paid_once_after_the_grace(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()
    bots.portal.on_submit.append(SubmitFault.HANG_BEFORE_REFUND)
    bots.run()
    assert paid(bots) == [(ORDER, D("40.00"))]
    assert [i.state for i in bots.intents(cid)] == [IntentState.ABSENT, IntentState.CONFIRMED]


@pytest.mark.parametrize("fault", [SubmitFault.REFUSED, SubmitFault.ERROR_500])
def test_a_submit_the_portal_answered_with_an_error_is_retried_at_once(
        bots: Bots, fault: SubmitFault) -> None:
    bots.sell()
    cid = bots.ask()
    bots.processing["submit_grace_seconds"] = 600  # answered: never waits for the grace
    bots.portal.on_submit.append(fault)
    stats = bots.run()
    assert stats.system_errors == 1 and paid(bots) == [(ORDER, D("40.00"))]
    first, second = bots.intents(cid)
    assert first.submit_answered_at is not None and first.state == IntentState.ABSENT
    assert second.state == IntentState.CONFIRMED


# -- the lease: another runner took over ---------------------------------------------------


def _trail_after_takeover(bots: Bots, case_id: int) -> list[str]:
    trail = bots.queue.audit_trail(case_id)
    taken = max(i for i, a in enumerate(trail) if a.event == "claimed")
    return [a.actor for a in trail[taken + 1:]]


def test_lease_lost_before_the_click_submits_and_writes_nothing(any_bots: Bots) -> None:
    bots = any_bots
    bots.sell()
    cid = bots.ask()
    bots.portal.on_form.append(lambda: bots.take_over(cid))
    stats = bots.run()
    assert bots.portal.submits == [] and paid(bots) == []
    assert stats.abandoned == 1 and stats.processed == 0
    case = bots.case(cid)
    assert (case.state, case.locked_by) == (CaseState.PROCESSING, "other-runner")
    [intent] = bots.intents(cid)
    assert intent.state == IntentState.PENDING and intent.submit_started_at is None
    assert _trail_after_takeover(bots, cid) == []  # not a line from us after the takeover
    assert bots.notifier.calls == [] and ORDER not in bots.orders.notes  # type: ignore


def test_a_runner_paused_after_its_last_check_declines_the_click(
        any_bots: Bots, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paused between the last check and the click past the deadline: nothing submitted;
    the submit counts as answered (so no grace to wait out) and the retry pays once."""
    bots = any_bots
    bots.sell()
    cid = bots.ask()
    deadlines: list[float] = []

    def deadline(self: Processor, checked: float) -> float:
        deadlines.append(checked)
        return checked - 1 if len(deadlines) == 1 else checked + 600

    monkeypatch.setattr(Processor, "_click_deadline", deadline)
    stats = bots.run()
    assert stats.system_errors == 1 and paid(bots) == [(ORDER, D("40.00"))]
    assert [s.made is not None for s in bots.portal.submits] == [True]
    first, second = bots.intents(cid)
    assert first.state == IntentState.ABSENT and first.submit_answered_at is not None
    assert second.state == IntentState.CONFIRMED and len(deadlines) == 2


@pytest.mark.parametrize(("lease", "grace"), [(300, 60), (60, 300), (100, 100)])
def test_the_click_deadline_is_what_another_runner_must_wait_less_a_submit(
        bots: Bots, lease: int, grace: int) -> None:
    bots.processing.update(lease_seconds=lease, submit_grace_seconds=grace)
    processor = bots.built(today=TODAY)
    assert processor.grace_seconds == grace
    assert processor._click_deadline(1000.0) == 1000.0 + max(lease, grace) - \
        processor.submit_seconds


@pytest.mark.parametrize(("timeout_ms", "grace"), [(1_000, 30.0), (7_500, 30.0),
                                                   (7_600, 30.4), (20_000, 80.0)])
def test_the_in_flight_grace_is_four_browser_timeouts_and_at_least_30_s(
        bots: Bots, timeout_ms: int, grace: float) -> None:
    """The README's default for `processing.submit_grace_seconds` (unset)."""
    bots.processing["submit_grace_seconds"] = None
    bots.browser["timeout_ms"] = timeout_ms
    processor = bots.built(today=TODAY)
    assert processor.grace_seconds == pytest.approx(grace)


def test_lease_lost_seen_by_the_heartbeat_stops_the_click(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()

    def taken_and_noticed() -> None:
        bots.take_over(cid)
        bots.processor.heartbeat.beat()  # type: ignore[union-attr]

    bots.portal.on_form.append(taken_and_noticed)
    stats = bots.run()
    assert bots.portal.submits == [] and stats.abandoned == 1
    assert bots.intents(cid)[0].submit_started_at is None
    assert f"| abandoned: {bots.case(cid).ref}: lease lost before the submit click\n" in \
        _run_log(bots)  # the whole line, as written


def test_lease_lost_after_the_click_the_next_runner_confirms_it(any_bots: Bots) -> None:
    bots = any_bots
    bots.sell()
    cid = bots.ask()
    bots.portal.at_click.append(lambda: bots.take_over(cid, "stalled-runner"))
    first = bots.run()
    assert first.abandoned == 1 and paid(bots) == [(ORDER, D("40.00"))]
    assert bots.intents(cid)[0].state == IntentState.PENDING  # our confirmation was fenced
    bots.expire_lease(cid)  # the runner that took it over stalls too
    bots.run()
    case = bots.case(cid)
    assert case.outcome == "refunded" and paid(bots) == [(ORDER, D("40.00"))]
    assert [i.state for i in bots.intents(cid)] == [IntentState.CONFIRMED]
    assert len(bots.orders.notes[ORDER]) == 1


def test_a_lease_in_doubt_writes_no_order_note(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()

    def database_gone() -> None:  # the heartbeat cannot renew: the lease is in doubt
        def fail(*_: object, **__: object) -> bool:
            raise OSError("database unreachable")
        bots.queue.renew = fail  # type: ignore[method-assign]
        bots.processor.heartbeat.beat()  # type: ignore[union-attr]

    bots.portal.at_click.append(database_gone)
    stats = bots.run()
    assert stats.abandoned == 1 and ORDER not in bots.orders.notes
    assert bots.intents(cid)[0].state == IntentState.CONFIRMED  # recorded while still ours
    assert f"| abandoned: {bots.case(cid).ref}: lease lost before the order note\n" in \
        _run_log(bots)


def test_a_crash_after_the_order_note_writes_no_second_note(
        bots: Bots, monkeypatch: pytest.MonkeyPatch) -> None:
    """The note is written, then the runner fails before the case is finished: the next
    attempt finds the refund in the portal and must not note the order again."""
    failed: list[str] = []

    def crash_point(name: str) -> None:
        if name == "after_note" and not failed:
            failed.append(name)
            raise system_error("order system: HTTP 503 after the note")

    monkeypatch.setattr("bots.work.processing.crash_point", crash_point)
    bots.sell()
    cid = bots.ask()
    stats = bots.run()
    assert failed == ["after_note"] and stats.system_errors == 1
    assert bots.case(cid).outcome == "refunded" and paid(bots) == [(ORDER, D("40.00"))]
    [note] = bots.orders.notes[ORDER]
    assert note.startswith(f"Refund {bots.case(cid).refund_number} of 40.00 EUR")
    [noted] = [a for a in bots.queue.audit_trail(cid) if a.event == "order_noted"]
    assert (noted.detail, noted.run_id) == (note, bots.processor.run.run_id)  # type: ignore


# -- human approvals ------------------------------------------------------------------------


def _escalated_then(bots: Bots, decision: str, amount: str | None, *,
                    price: str = "600.00") -> int:
    bots.sell(price=price)
    cid = bots.ask()
    bots.run()
    assert bots.case(cid).state == CaseState.ESCALATED
    assert bots.queue.human_decision(cid, decision=decision,
                                     amount=D(amount) if amount else None, agent="ana",
                                     comment="ok", run_id=None) == "applied"
    return cid


def test_a_human_approval_pays_the_proposal(bots: Bots) -> None:
    cid = _escalated_then(bots, "approve", None)
    bots.run()
    case = bots.case(cid)
    assert (case.outcome, case.approved_amount) == ("refunded", D("600.00"))
    assert paid(bots) == [(ORDER, D("600.00"))]
    assert "Approved by ana: ok." in (case.reason or "")
    assert bots.notifier.calls[-1]["outcome"] == "approved"  # type: ignore[union-attr]


def test_a_human_approval_is_capped_at_what_remains(bots: Bots) -> None:
    cid = _escalated_then(bots, "approve", "700.00")
    bots.portal.refund_by_hand(ORDER, "100.00")
    bots.run()
    case = bots.case(cid)
    assert (case.outcome, case.approved_amount) == ("partial", D("500.00"))
    assert case.reason == ("Approved by ana: ok. Capped at 500.00 (approved: 700.00), what "
                           "remains refundable on the charge.")  # the reasons, one space apart
    assert paid(bots) == [(ORDER, D("100.00")), (ORDER, D("500.00"))]
    # what a person approved is told as approved, even when the cap made it a partial
    assert bots.notifier.calls[-1]["outcome"] == "approved"  # type: ignore[union-attr]


def test_a_human_approval_below_what_remains_is_not_capped(bots: Bots) -> None:
    cid = _escalated_then(bots, "partial", "250.00")
    bots.run()
    case = bots.case(cid)
    assert (case.outcome, case.approved_amount) == ("partial", D("250.00"))
    assert "Capped" not in (case.reason or "") and paid(bots)[-1] == (ORDER, D("250.00"))
    call = bots.notifier.calls[-1]  # type: ignore[union-attr]
    assert (call["outcome"], call["amount"], call["reason"]) == ("approved", D("250.00"),
                                                                 case.reason)


def test_the_customer_is_told_only_the_last_four_digits_of_the_card(bots: Bots) -> None:
    """However the order system writes the card, at most four digits reach the message."""
    order = bots.sell()
    bots.orders.orders[ORDER] = replace(order, payment_card="MC 5500 00** **** 0004")
    bots.ask()
    bots.run()
    assert bots.notifier.calls[-1]["card_last4"] == "0004"  # type: ignore[union-attr]


def test_a_human_approval_with_nothing_left_is_rejected(bots: Bots) -> None:
    cid = _escalated_then(bots, "approve", "600.00")
    bots.portal.refund_by_hand(ORDER, "600.00")
    bots.run()
    case = bots.case(cid)
    assert (case.outcome, case.approved_amount) == ("rejected", D("0.00"))
    assert "nothing remains refundable" in (case.reason or "")
    assert len(bots.portal.refunds) == 1


def test_a_human_approval_with_one_cent_left_pays_the_cent(bots: Bots) -> None:
    cid = _escalated_then(bots, "approve", "600.00")
    bots.portal.refund_by_hand(ORDER, "599.99")
    bots.run()
    assert bots.case(cid).approved_amount == D("0.01") and paid(bots)[-1] == (ORDER, D("0.01"))


def test_a_human_approval_without_an_amount_escalates_again(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask(doubts=("two amounts",))  # escalated before any amount was proposed
    bots.run()
    assert bots.case(cid).approved_amount is None
    bots.queue.human_decision(cid, decision="approve", amount=None, agent="ana", comment="",
                              run_id=None)
    bots.run()
    case = bots.case(cid)
    assert case.state == CaseState.ESCALATED and "no amount was given" in (case.reason or "")
    assert paid(bots) == []


def test_a_human_approval_is_not_held_to_the_per_customer_limit(bots: Bots) -> None:
    bots.policy = Policy(auto_approve_limit=D("500.00"), customer_auto_approve_limit=D("100"))
    cid = _escalated_then(bots, "approve", None)
    bots.run()
    assert paid(bots) == [(ORDER, D("600.00"))] and bots.case(cid).outcome == "refunded"


# -- the per-customer limit counts refunds in flight ---------------------------------------


def _in_flight_elsewhere(bots: Bots, amount: str) -> None:
    """Another case of the same customer, held by a live runner with a pending intent."""
    bots.sell("ORD-100002", price=amount)
    other = bots.ask("ORD-100002")
    bots.crashed_attempt(other, amount, clicked=True, expire=False, owner="busy-runner")


@pytest.mark.parametrize(("elsewhere", "pays"), [("70.00", True), ("70.01", False)])
def test_the_per_customer_limit_counts_pending_intents(bots: Bots, elsewhere: str,
                                                       pays: bool) -> None:
    bots.policy = Policy(customer_auto_approve_limit=D("100.00"), customer_limit_days=30)
    _in_flight_elsewhere(bots, elsewhere)
    bots.sell(price="30.00")
    cid = bots.ask()
    bots.run()
    case = bots.case(cid)
    assert (case.outcome == "refunded") is pays
    if not pays:
        assert case.state == CaseState.ESCALATED
        assert f"With {elsewhere} already refunded to this customer" in (case.reason or "")
        assert "Approved" not in (case.reason or "")  # the policy itself said no
        assert paid(bots) == []


def test_the_per_customer_limit_holds_when_another_runner_pays_meanwhile(
        bots: Bots) -> None:
    """Between our decision and our intent another runner opens one: the intent refuses."""
    bots.policy = Policy(customer_auto_approve_limit=D("100.00"))
    _in_flight_elsewhere(bots, "80.00")
    bots.sell(price="30.00")
    cid = bots.ask()
    bots.queue.customer_refunds = lambda *a, **k: []  # type: ignore[method-assign]
    bots.run()
    case = bots.case(cid)
    assert case.state == CaseState.ESCALATED and "(confirmed and in flight)" in (case.reason
                                                                                 or "")
    assert case.approved_amount == D("30.00")  # the proposal, for the human who decides
    assert paid(bots) == [] and bots.intents(cid) == []
    assert case.outcome == "escalated"
    decision = snapshot.load(case.decision or "")[3]  # the rules' reasons, then the refusal
    assert (case.reason or "").startswith(" ".join(decision.reasons) + " ")


def test_an_escalation_gives_the_rules_reasons(bots: Bots) -> None:
    bots.sell(price="600.00")  # above the auto-approve limit of 500.00
    cid = bots.ask()
    bots.run()
    case = bots.case(cid)
    decision = snapshot.load(case.decision or "")[3]
    assert (case.state, case.outcome) == (CaseState.ESCALATED, "escalated")
    assert decision.reasons and case.reason == " ".join(decision.reasons)


def test_a_paying_decision_of_nothing_escalates_and_pays_nothing(
        bots: Bots, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: a refund of 0.00 from the rules is not a refund to submit."""
    monkeypatch.setattr("bots.work.processing.decide", lambda *a, **k: Decision(
        Outcome.REFUND, D("0.00"), ("Nothing left to refund.",)))
    bots.sell()
    cid = bots.ask()
    bots.run()
    case = bots.case(cid)
    assert (case.state, case.reason) == (CaseState.ESCALATED, "Nothing left to refund.")
    assert paid(bots) == [] and bots.portal.submits == [] and bots.intents(cid) == []


def test_refunds_older_than_the_customer_window_do_not_count(bots: Bots) -> None:
    bots.policy = Policy(customer_auto_approve_limit=D("100.00"), customer_limit_days=30)
    bots.sell("ORD-100002", price="90.00")
    old = bots.ask("ORD-100002")
    bots.run()
    with bots.queue.session() as s:  # that refund was 30 days and a minute ago
        for row in s.query(RefundIntent).filter(RefundIntent.case_id == old):
            row.resolved_at = row.created_at = utcnow() - timedelta(days=30, minutes=1)
    bots.sell(price="30.00")
    cid = bots.ask()
    bots.run()
    assert bots.case(cid).outcome == "refunded"


def test_refunds_inside_the_customer_window_count(bots: Bots) -> None:
    bots.policy = Policy(customer_auto_approve_limit=D("100.00"), customer_limit_days=30)
    bots.sell("ORD-100002", price="90.00")
    old = bots.ask("ORD-100002")
    bots.run()
    with bots.queue.session() as s:
        for row in s.query(RefundIntent).filter(RefundIntent.case_id == old):
            row.resolved_at = row.created_at = utcnow() - timedelta(days=29, hours=23)
    bots.sell(price="30.00")
    cid = bots.ask()
    bots.run()
    assert bots.case(cid).state == CaseState.ESCALATED


# -- system failures, retries and the circuit breaker -------------------------------------


def test_system_failures_are_retried_up_to_the_limit_then_failed(bots: Bots) -> None:
    bots.processing["max_attempts"] = 3
    bots.sell()
    cid = bots.ask()
    bots.orders.always_fail_find = system_error()
    stats = bots.run()
    case = bots.case(cid)
    assert bots.orders.finds == 3 and stats.system_errors == 3
    assert (case.state, case.outcome, case.attempts) == (CaseState.FAILED, "failed", 3)
    assert case.reason == "gave up after 3 attempts: AppUnavailable: order system: HTTP 503 " \
                          "on /orders"
    assert case.last_error == "AppUnavailable: order system: HTTP 503 on /orders"
    assert stats.outcomes == {"failed": 1} and paid(bots) == []
    assert bots.events(cid).count("retry_scheduled") == 2


def test_one_failure_short_of_the_limit_still_succeeds(bots: Bots) -> None:
    bots.processing["max_attempts"] = 3
    bots.sell()
    cid = bots.ask()
    bots.orders.fail_find.extend([system_error(), system_error()])
    bots.run()
    assert bots.case(cid).outcome == "refunded" and bots.case(cid).attempts == 3


def test_giving_up_after_a_refund_says_it_was_issued(bots: Bots) -> None:
    bots.processing["max_attempts"] = 2
    bots.sell()
    cid = bots.ask()
    bots.orders.fail_note.extend([system_error("order system: HTTP 500 on note")] * 2)
    bots.run()
    case = bots.case(cid)
    assert case.state == CaseState.FAILED and paid(bots) == [(ORDER, D("40.00"))]
    assert (case.refund_number, case.approved_amount) == ("RF-000001", D("40.00"))
    assert case.reason is not None and case.reason.startswith(
        "Refund RF-000001 of 40.00 was issued, but the follow-up failed: gave up after 2")


@pytest.mark.parametrize(("attempt", "backoff", "cap", "expected"), [
    (1, 40, 50, 60),  # the first step, times the largest jitter (1.5)
    (2, 30, 80, 90),  # doubled at the second attempt
    (2, 30, 50, 75),  # and capped
])
def test_the_retry_waits_the_backoff(bots: Bots, monkeypatch: pytest.MonkeyPatch, attempt: int,
                                     backoff: int, cap: int, expected: int) -> None:
    bots.processing.update(backoff_seconds=backoff, backoff_max_seconds=cap)
    monkeypatch.setattr("bots.work.processing.random.uniform", lambda a, b: b)
    bots.sell()
    cid = bots.ask()
    if attempt == 2:  # a runner died in the first attempt
        assert bots.queue.claim("crashed-runner", 300) is not None
        bots.expire_lease(cid)
    bots.orders.fail_find.append(system_error())
    bots.run()
    case = bots.case(cid)
    assert case.state == CaseState.QUEUED and case.attempts == attempt
    assert case.next_attempt_at is not None
    wait = (case.next_attempt_at - utcnow()).total_seconds()
    assert expected - 5 < wait <= expected


def test_the_circuit_breaker_stops_the_run_at_its_count(bots: Bots) -> None:
    bots.processing.update(max_attempts=10, circuit_breaker=2)
    for n in range(3):
        bots.sell(f"ORD-10000{n + 1}")
        bots.ask(f"ORD-10000{n + 1}")
    bots.orders.always_fail_find = system_error()
    stats = bots.run()
    assert stats.circuit_open and stats.system_errors == 2 and bots.orders.finds == 2
    assert [c.attempts for c in bots.queue.cases()] == [2, 0, 0]


def test_a_success_resets_the_circuit_breaker(bots: Bots) -> None:
    bots.processing.update(max_attempts=10, circuit_breaker=2)
    for n in range(2):
        bots.sell(f"ORD-10000{n + 1}")
        bots.ask(f"ORD-10000{n + 1}")
    bots.orders.fail_find.extend([system_error(), None, system_error()])  # never two in a row
    stats = bots.run()
    assert not stats.circuit_open and stats.system_errors == 2
    assert [c.outcome for c in bots.queue.cases()] == ["refunded", "refunded"]


def test_a_failed_login_is_a_system_error_and_retried(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()
    bots.orders.fail_login.append(SystemException("order system: login refused"))
    stats = bots.run()
    assert stats.system_errors == 1 and bots.case(cid).outcome == "refunded"
    assert bots.events(cid).count("claimed") == 2


def test_an_unexpected_error_is_treated_as_a_system_error(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()
    bots.orders.fail_find.append(ValueError("a bug"))
    stats = bots.run()
    assert stats.system_errors == 1 and bots.case(cid).outcome == "refunded"


def test_a_playwright_error_is_a_system_error(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()
    bots.portal.fail_reads.append(PlaywrightError("Target page, context or browser closed"))
    stats = bots.run()
    assert stats.system_errors == 1 and bots.case(cid).outcome == "refunded"


def test_a_failed_attempt_keeps_screenshots_and_a_scrubbed_trace(bots: Bots) -> None:
    bots.browser["trace_failures"] = True
    bots.sell()
    cid = bots.ask()
    bots.orders.fail_find.append(system_error())
    bots.run()
    ref = bots.case(cid).ref
    [worker] = bots.session.workers  # type: ignore[union-attr]
    shots = worker.orders.page.screenshots + worker.payments.page.screenshots
    assert sorted(p.name for p in shots) == [f"{ref}-attempt1-order_system.png",
                                             f"{ref}-attempt1-payment_portal.png"]
    [trace] = worker.context.tracing.saved
    assert trace.name == f"{ref}-attempt1.zip" and not zip_contains(trace, PAYMENTS_SECRET)
    assert worker.context.tracing.chunks == [f"{ref} attempt 1", f"{ref} attempt 2"]
    # the whole page, and never waiting on a hung page for longer than 5 s
    assert worker.orders.page.options == worker.payments.page.options == [(True, 5_000)]
    # where the README says they are: the run's screenshots/ and traces/ folders
    assert {p.parent.name for p in shots} == {"screenshots"} and trace.parent.name == "traces"


def test_a_dead_page_does_not_hide_the_error_or_the_other_screenshot(bots: Bots,
                                                                      monkeypatch: Any) -> None:
    crashed = PlaywrightError("Target crashed")
    original = FakeSession.worker

    async def worker(self: FakeSession, name: str, *, tracing: bool = False) -> Any:
        made = await original(self, name, tracing=tracing)
        made.orders.page.dead = crashed
        return made

    monkeypatch.setattr(FakeSession, "worker", worker)
    bots.sell()
    cid = bots.ask()
    bots.orders.fail_find.append(system_error())
    stats = bots.run()
    assert stats.system_errors == 1 and bots.case(cid).outcome == "refunded"
    [made] = bots.session.workers  # type: ignore[union-attr]
    assert made.orders.page.screenshots == [] and len(made.payments.page.screenshots) == 1
    retry = next(a for a in bots.queue.audit_trail(cid) if a.event == "retry_scheduled")
    assert retry.detail.endswith("after: AppUnavailable: order system: HTTP 503 on /orders")


# -- dry runs and notifications ------------------------------------------------------------


def test_a_dry_run_decides_but_pays_and_writes_nothing(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()
    counted: list[tuple[int, str]] = []
    bots.on_case = lambda case, outcome: counted.append((case.id, outcome))
    stats = bots.run(dry_run=True)
    assert counted == [(cid, "refunded")]
    assert f"| dry run: would be refunded: {bots.processor.proposals[cid].reason}" in (  # type: ignore
        _run_log(bots))
    proposal = bots.processor.proposals[cid]  # type: ignore[union-attr]
    assert (proposal.outcome, proposal.approved) == ("refunded", D("40.00"))
    case = bots.case(cid)
    assert (case.state, case.attempts, case.decision) == (CaseState.QUEUED, 0, None)
    assert paid(bots) == [] and bots.intents(cid) == [] and bots.orders.notes == {}
    assert stats.outcomes == {"refunded": 1} and bots.notifier.calls == []  # type: ignore
    released = bots.queue.audit_trail(cid)[-1]
    assert "dry run: would be refunded (40.00)" in released.detail
    assert released.run_id == bots.processor.run.run_id  # type: ignore[union-attr]


def test_a_dry_run_proposes_nothing_for_a_case_it_merges(bots: Bots) -> None:
    bots.sell()
    loose = bots.ask(order=None)  # claimed first: oldest
    order_case = bots.ask()
    stats = bots.run(dry_run=True)
    assert set(bots.processor.proposals) == {order_case}  # type: ignore[union-attr]
    assert stats.outcomes == {"refunded": 1} and paid(bots) == []
    assert bots.case(loose).state == CaseState.MERGED


def test_a_dry_run_of_a_partial_and_an_escalation(bots: Bots) -> None:
    bots.sell()
    bots.sell("ORD-100002", price="900.00")
    small, big = bots.ask(amount="10.00"), bots.ask("ORD-100002")
    bots.run(dry_run=True)
    proposals = bots.processor.proposals  # type: ignore[union-attr]
    assert (proposals[small].outcome, proposals[big].outcome) == ("partial", "escalated")
    assert paid(bots) == []


def test_a_dry_run_proposal_says_why_where_ops_read_it(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask(amount="15.00")
    bots.run(dry_run=True)
    proposal = bots.processor.proposals[cid]  # type: ignore[union-attr]
    released = bots.queue.audit_trail(cid)[-1]
    assert proposal.outcome == "partial" and proposal.reason
    assert released.detail == f"dry run: would be partial (15.00): {proposal.reason}"


def test_a_dry_run_rejection_names_no_amount(bots: Bots) -> None:
    bots.sell(delivered_days_ago=400)  # long past the refund window
    cid = bots.ask()
    bots.run(dry_run=True)
    released = bots.queue.audit_trail(cid)[-1]
    assert released.detail.startswith("dry run: would be rejected: "), released.detail


def test_a_notification_failure_does_not_undo_the_refund(bots: Bots) -> None:
    bots.notifier = FakeNotifier(fail=RuntimeError("template broken"))
    bots.sell()
    cid = bots.ask()
    stats = bots.run()
    assert bots.case(cid).outcome == "refunded" and paid(bots) == [(ORDER, D("40.00"))]
    assert stats.notifications == {"failed": 1}


def test_notification_results_are_counted(bots: Bots) -> None:
    results = [NotificationResult("email", EMAIL, NotifyState.SENT, "refunded", (1,)),
               NotificationResult("chat", "@ada", NotifyState.FAILED, "refunded", (2,),
                                  error="chat down")]
    bots.notifier = FakeNotifier(results=results)
    bots.sell()
    bots.ask()
    stats = bots.run()
    assert stats.notifications == {"sent": 1, "failed": 1}


@pytest.fixture
def logged() -> Iterator[list[tuple[str | None, str, str]]]:
    """What the run logged: (the case it is bound to, level, message), as the console
    shows it to the person watching the run."""
    records: list[tuple[str | None, str, str]] = []

    def keep(message: Any) -> None:
        record = message.record
        records.append((record["extra"].get("case"), record["level"].name, record["message"]))

    sink = logger.add(keep, level="DEBUG")
    yield records
    logger.remove(sink)


def test_each_case_is_counted_and_its_own_notifications_sent(bots: Bots) -> None:
    bots.notifier = FakeNotifier(results=[
        NotificationResult("email", EMAIL, NotifyState.SENT, "refunded", (1,))])
    bots.sell()
    bots.sell("ORD-100002")
    first, second = bots.ask(), bots.ask("ORD-100002")
    stats = bots.run()
    assert stats.processed == 2 and stats.outcomes == {"refunded": 2}
    assert stats.notifications == {"sent": 2}
    assert sorted(bots.notifier.sent_for) == [first, second]  # type: ignore[arg-type,union-attr]


def test_every_failed_sending_is_counted_and_logged_for_its_case(
        bots: Bots, logged: list[tuple[str | None, str, str]]) -> None:
    bots.notifier = FakeNotifier(fail=RuntimeError("template broken"))
    bots.sell()
    bots.sell("ORD-100002")
    first, second = bots.ask(), bots.ask("ORD-100002")
    stats = bots.run()
    assert stats.notifications == {"failed": 2}
    failures = {(case, level, text) for case, level, text in logged if "notification" in text}
    assert failures == {(bots.case(c).ref, "ERROR", "notification failed: template broken")
                        for c in (first, second)}


def test_a_sending_that_failed_or_gave_up_is_a_warning_naming_channel_and_contact(
        bots: Bots, logged: list[tuple[str | None, str, str]]) -> None:
    bots.notifier = FakeNotifier(results=[
        NotificationResult("email", EMAIL, NotifyState.SENT, "refunded", (1,)),
        NotificationResult("chat", "@ada", NotifyState.FAILED, "refunded", (2,),
                           error="chat down"),
        NotificationResult("sms", "+49301234567", NotifyState.GAVE_UP, "refunded", (3,),
                           error="5 tries")])
    bots.sell()
    cid = bots.ask()
    stats = bots.run()
    assert stats.notifications == {"sent": 1, "failed": 1, "gave_up": 1}
    warned = [(case, text) for case, level, text in logged
              if level == "WARNING" and text.startswith("notify ")]
    ref = bots.case(cid).ref
    assert warned == [(ref, "notify chat @ada failed: chat down"),
                      (ref, "notify sms +49301234567 gave_up: 5 tries")]


def test_without_a_notifier_nothing_is_sent(bots: Bots) -> None:
    bots.notifier = None
    bots.sell()
    cid = bots.ask()
    stats = bots.run()
    assert bots.case(cid).outcome == "refunded" and stats.notifications == {}


def test_stop_claims_nothing_more(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()
    run = RunFolder.create(bots.tmp_path / "runs")
    processor = Processor(bots.settings(), bots.queue, bots.policy, run, today=TODAY)
    processor.stop()
    stats = asyncio.run(processor.process(FakeSession(bots.world)))  # type: ignore[arg-type]
    run.close()
    assert stats.processed == 0 and bots.case(cid).state == CaseState.QUEUED


def test_seconds_per_case() -> None:
    assert ProcessStats().seconds_per_case == 0.0
    assert ProcessStats(processed=4, seconds=2.0).seconds_per_case == 0.5


# -- a dead holder's case is taken over at once --------------------------------------------


@pytest.fixture
def dead_owner() -> Iterator[str]:
    child = subprocess.Popen(["true"])
    child.wait()
    yield runner_id("w1", pid=child.pid)


def test_a_case_held_by_a_dead_runner_is_settled_and_finished(bots: Bots,
                                                              dead_owner: str) -> None:
    bots.sell()
    cid = bots.ask()
    bots.crashed_attempt(cid, clicked=True, seconds_ago=1, refund_in_portal=True,
                         expire=False, owner=dead_owner)
    bots.processing["submit_grace_seconds"] = 600
    bots.run()
    assert bots.case(cid).outcome == "refunded" and paid(bots) == [(ORDER, D("40.00"))]


def test_a_dry_run_ends_after_a_case_that_was_retried(bots: Bots) -> None:
    """A released case kept its past retry time: the run waited for it forever."""
    bots.sell()
    cid = bots.ask()
    bots.orders.fail_find.append(system_error())  # a retry, then the dry-run proposal
    stats = bots.run(dry_run=True)
    assert stats.system_errors == 1
    assert bots.processor.proposals[cid].outcome == "refunded"  # type: ignore[union-attr]
    assert bots.case(cid).state == CaseState.QUEUED and paid(bots) == []


# -- edges the mutation run found untested ---------------------------------------------------


def test_a_human_partial_of_the_whole_order_is_still_a_partial(bots: Bots) -> None:
    cid = _escalated_then(bots, "partial", "600.00")
    bots.run()
    case = bots.case(cid)
    assert (case.outcome, case.approved_amount) == ("partial", D("600.00"))


def test_a_human_approval_without_a_comment_names_only_the_agent(bots: Bots) -> None:
    bots.sell(price="600.00")
    cid = bots.ask()
    bots.run()
    bots.queue.human_decision(cid, decision="approve", amount=D("600.00"), agent="ana",
                              comment="", run_id=None)
    bots.run()
    assert bots.case(cid).reason == "Approved by ana."


def test_a_human_approval_without_an_amount_records_an_escalation(bots: Bots) -> None:
    from bots.decide import snapshot

    bots.sell()
    cid = bots.ask(doubts=("two amounts",))
    bots.run()
    bots.queue.human_decision(cid, decision="approve", amount=None, agent="ana", comment="",
                              run_id=None)
    bots.run()
    recorded = bots.case(cid).decision
    assert recorded is not None
    assert snapshot.load(recorded)[3].outcome is Outcome.ESCALATE


def _run_log(bots: Bots) -> str:
    return "\n".join(p.read_text() for p in sorted((bots.tmp_path / "runs").glob("*/run.log")))


def test_a_system_error_is_logged_with_its_attempt_and_cut_to_500_characters(
        bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()
    bots.orders.fail_find.append(SystemException("portal down " + "x" * 600 + "\nsecond line"))
    bots.run()
    retry = next(a for a in bots.queue.audit_trail(cid) if a.event == "retry_scheduled")
    error = retry.detail.split(" after: ", 1)[1]
    assert error.startswith("SystemException: portal down xxx") and len(error) == 500
    log = _run_log(bots)
    assert f"| attempt 1 failed: {error}\n" in log  # the whole line, as written
    assert "unexpected error" not in log  # a system error is expected: no traceback


def test_an_unexpected_error_is_logged_with_its_traceback(bots: Bots) -> None:
    bots.sell()
    bots.ask()
    bots.orders.fail_find.append(ValueError("a bug"))
    bots.run()
    log = _run_log(bots)
    assert "| attempt 1 failed: ValueError: a bug\n" in log
    assert "| unexpected error (treated as system error)\n" in log
    assert "Traceback" in log and "ValueError: a bug" in log.split("unexpected error", 1)[1]


def test_the_retry_waits_at_least_half_the_backoff(bots: Bots,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    bots.processing.update(backoff_seconds=0.4, backoff_max_seconds=5)
    monkeypatch.setattr("bots.work.processing.random.uniform", lambda a, b: a)
    bots.sell()
    cid = bots.ask()
    bots.orders.fail_find.append(system_error())
    bots.run()  # the retry is due within the run's horizon: it waits for it and pays
    assert bots.case(cid).outcome == "refunded"
    [retry] = [a for a in bots.queue.audit_trail(cid) if a.event == "retry_scheduled"]
    assert retry.detail.startswith("in 0.2s after: ")


def test_a_case_given_up_keeps_its_last_error_its_run_and_is_counted(bots: Bots) -> None:
    bots.processing["max_attempts"] = 2
    seen: list[tuple[int, str]] = []
    bots.on_case = lambda case, outcome: seen.append((case.id, outcome))
    bots.sell()
    cid = bots.ask()
    bots.orders.fail_find.extend([system_error("order system: HTTP 502 on /orders"),
                                  system_error("order system: HTTP 504 on /orders")])
    bots.run()
    case = bots.case(cid)
    assert (case.state, case.last_error) == (CaseState.FAILED,
                                             "AppUnavailable: order system: HTTP 504 on /orders")
    assert seen == [(cid, "failed")]
    run_id = bots.processor.run.run_id  # type: ignore[union-attr]
    assert {a.run_id for a in bots.queue.audit_trail(cid)
            if a.event in ("retry_scheduled", "failed")} == {run_id}


def test_a_submit_exactly_as_old_as_the_grace_is_no_longer_in_flight(
        bots: Bots, monkeypatch: pytest.MonkeyPatch) -> None:
    bots.sell()
    cid = bots.ask()
    bots.processing["submit_grace_seconds"] = 60
    intent = bots.crashed_attempt(cid, clicked=True, seconds_ago=30)
    started = bots.intents(cid)[0].submit_started_at
    assert started is not None
    # the clock the settling reads stands exactly at the end of the grace
    monkeypatch.setattr("bots.work.processing.utcnow", lambda: started + timedelta(seconds=60))
    bots.run()
    [first, second] = bots.intents(cid)
    assert (first.id, first.state, second.state) == (intent.id, IntentState.ABSENT,
                                                     IntentState.CONFIRMED)
    assert paid(bots) == [(ORDER, D("40.00"))]
    run_id = bots.processor.run.run_id  # type: ignore[union-attr]
    assert first.resolved_run_id == run_id  # settled by this run, on its record


def test_a_deferral_says_which_refund_may_be_in_flight_and_for_how_long(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()
    bots.processing["submit_grace_seconds"] = 60
    bots.processing["backoff_max_seconds"] = 10
    intent = bots.crashed_attempt(cid, clicked=True, seconds_ago=30)
    bots.run()
    [deferred] = [a for a in bots.queue.audit_trail(cid) if a.event == "deferred"]
    assert f"refund {intent.key} of 40.00 was submitted 30s ago" in deferred.detail
    assert "after the 60s grace period" in deferred.detail
    assert deferred.run_id == bots.processor.run.run_id  # type: ignore[union-attr]
    log = _run_log(bots)  # the rest of the grace, rounded: 30 or 31 s
    assert "| waiting 3" in log and f"s: refund {intent.key} of 40.00 was submitted" in log


def test_the_circuit_breaker_says_why_it_stopped_the_run(bots: Bots) -> None:
    bots.processing.update(max_attempts=10, circuit_breaker=2)
    for n in range(2):
        bots.sell(f"ORD-10000{n + 1}")
        bots.ask(f"ORD-10000{n + 1}")
    bots.orders.always_fail_find = system_error()
    bots.run()
    assert "| circuit breaker: 2 system errors in a row, stopping the run\n" in _run_log(bots)


def test_the_intent_records_what_the_checks_after_a_crash_need(bots: Bots,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    points: list[str] = []
    monkeypatch.setattr("bots.work.processing.crash_point", points.append)
    bots.sell()
    cid = bots.ask(reason="damaged")
    bots.run()
    [intent] = bots.intents(cid)
    run_id = bots.processor.run.run_id  # type: ignore[union-attr]
    # the balance before the click (a moved balance without our key escalates), the
    # customer (the per-customer limit), the run that opened and the one that confirmed it
    assert (intent.remaining_before, intent.customer_email, intent.run_id,
            intent.resolved_run_id) == (D("40.00"), EMAIL, run_id, run_id)
    assert bots.portal.refunds[0].reason == "damaged"  # the category the portal is given
    # the chaos tooling's crash points (bench chaos) fire in order, by their names
    assert points == ["before_submit", "after_last_check", "after_submit", "after_record",
                      "after_note"]


def test_session_expired_after_the_refund_costs_no_attempt_and_no_error(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()
    bots.portal.on_submit.append(SubmitFault.EXPIRED_AFTER_REFUND)
    stats = bots.run()
    assert (stats.system_errors, bots.case(cid).attempts) == (0, 1)
    assert bots.case(cid).refund_number == "RF-000001"


def test_session_expired_twice_says_so(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask()
    bots.portal.on_submit.extend([SubmitFault.EXPIRED_BEFORE_CLICK] * 2)
    bots.run()
    [retry] = [a for a in bots.queue.audit_trail(cid) if a.event == "retry_scheduled"]
    assert retry.detail.endswith(
        "after: SessionExpired: payment portal: session expired twice during the refund")


def test_a_human_partial_is_not_held_to_the_per_customer_limit(bots: Bots) -> None:
    bots.policy = Policy(auto_approve_limit=D("500.00"), customer_auto_approve_limit=D("100"))
    cid = _escalated_then(bots, "partial", "300.00")
    bots.run()
    assert paid(bots) == [(ORDER, D("300.00"))] and bots.case(cid).outcome == "partial"


def test_a_customer_known_by_phone_only_is_counted_by_the_orders_email(bots: Bots) -> None:
    bots.sell()
    cid = bots.ask(order=None, email=None, customer_phone="+49301234567")
    bots.run()
    [intent] = bots.intents(cid)
    assert intent.state == IntentState.CONFIRMED
    assert intent.customer_email == EMAIL  # what the per-customer limit counts by


def test_two_cases_lost_in_one_run_are_both_counted_abandoned(bots: Bots) -> None:
    for n in (1, 2):
        bots.sell(f"ORD-10000{n}")
    first, second = bots.ask("ORD-100001"), bots.ask("ORD-100002")

    def take_first() -> None:  # each submit form gets its own takeover
        bots.take_over(first)
        bots.portal.on_form.append(lambda: bots.take_over(second))

    bots.portal.on_form.append(take_first)
    stats = bots.run()
    assert stats.abandoned == 2 and bots.portal.submits == [] and stats.processed == 0


def _refuse_login(exc: BaseException, before: Any = None) -> Any:
    """An order system login that refuses the password (after `before`, if given)."""

    async def login(self: FakeOrdersApp) -> None:
        if before is not None:
            before()
        raise exc

    return login


def test_a_refused_password_gives_the_case_back_and_stops_the_run(
        bots: Bots, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in (1, 2):
        bots.sell(f"ORD-10000{n}")
    first, second = bots.ask("ORD-100001"), bots.ask("ORD-100002")
    refused = LoginRefused("order system: the bot user was refused at login")
    monkeypatch.setattr(FakeOrdersApp, "login", _refuse_login(refused))
    stats = bots.run()
    assert stats.login_refused == "order system: the bot user was refused at login"
    assert stats.system_errors == 0 and stats.processed == 0 and paid(bots) == []
    case = bots.case(first)
    assert (case.state, case.attempts, case.locked_by) == (CaseState.QUEUED, 0, None)
    released = bots.queue.audit_trail(first)[-1]
    run = bots.processor.run  # type: ignore[union-attr]
    claimed = bots.queue.audit_trail(first)[-2]
    assert (released.event, released.run_id, released.actor) == (
        "released", run.run_id, claimed.actor)  # the runner that held it
    assert claimed.event == "claimed"
    assert released.detail == "the run stopped: " + str(refused)
    assert bots.events(second) == ["case_opened"]  # never claimed: the run stopped
    assert f"| {refused}\n" in _run_log(bots)


def test_the_first_refused_password_is_the_one_reported(bots: Bots,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    bots.processing["workers"] = 2
    for n in (1, 2):
        bots.sell(f"ORD-10000{n}")
        bots.ask(f"ORD-10000{n}")
    messages = iter(["order system: password refused (1)", "order system: password refused (2)"])

    async def login(self: FakeOrdersApp) -> None:
        raise LoginRefused(next(messages))

    monkeypatch.setattr(FakeOrdersApp, "login", login)
    stats = bots.run()
    assert stats.login_refused == "order system: password refused (1)"
    assert [c.state for c in bots.queue.cases()] == [CaseState.QUEUED] * 2


def test_a_refused_password_after_the_case_was_taken_over_leaves_it_alone(
        bots: Bots, monkeypatch: pytest.MonkeyPatch) -> None:
    bots.sell()
    cid = bots.ask()
    refused = LoginRefused("order system: the password was refused")
    monkeypatch.setattr(FakeOrdersApp, "login",
                        _refuse_login(refused, before=lambda: bots.take_over(cid)))
    stats = bots.run()  # the release finds the lease lost: nothing written, no crash
    assert stats.login_refused == str(refused) and stats.abandoned == 0
    case = bots.case(cid)
    assert (case.state, case.locked_by) == (CaseState.PROCESSING, "other-runner")
