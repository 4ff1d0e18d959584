"""In-memory legacy apps for running `bots.work.processing.Processor` without a browser.

The processor talks to the legacy back-office only through a `BotSession` (workers, login,
secrets) and each worker's two page objects. These fakes have the same public methods and
signatures as `bots.legacy.orders.OrdersApp` and `bots.legacy.payments.PaymentsApp`
(tests/test_processing.py checks that), behave as the real apps do on the cases that
matter for money, and let a test script what goes wrong:

- the order system and payment portal are shared "servers" (`OrderSystem`, `Portal`): every
  worker's page objects see the same orders, charges, refund history and notes;
- a portal refund is made only by the click; the refund carries the reference typed into the
  form, and is refused above what remains refundable, as the real portal does;
- sessions expire (`Portal.expire_sessions()`): a read logs in again and retries once (the
  real `logged_in`), a submit does not (the caller settles against the history first);
- each submit can be given a fault (`Portal.on_submit`): expired before or after the click,
  a hang (Playwright timeout) before or after the refund was made, a refusal, an error page
  answered with HTTP 500; reads can be given exceptions (`OrderSystem.fail_find` ...);
- hooks run once the form is filled, before the caller's last check (`Portal.on_form`),
  and at the click (`Portal.at_click`), so a test can, say, take the case over from
  another runner at exactly that moment.

Everything is synchronous underneath and runs in microseconds: a processor test is
milliseconds of SQLite, not seconds of Chromium.
"""

from __future__ import annotations

import time
import zipfile
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path

from playwright.async_api import TimeoutError as PlaywrightTimeout

from bots.errors import (
    AppUnavailable,
    RefundRefused,
    SessionExpired,
    SystemException,
    TooLateToSubmit,
)
from bots.legacy.orders import OrderHit
from bots.models import ChargeFacts, OrderFacts, PortalRefund, money

ORDERS_SECRET = "orders-pw-7f3a91"
PAYMENTS_SECRET = "payments-pw-c04e2b"


class SubmitFault(Enum):
    """What goes wrong with one refund submit (the next one in `Portal.on_submit`)."""

    EXPIRED_BEFORE_CLICK = "the transaction page is the login page: no form, no click"
    EXPIRED_AT_CLICK = "the click lands on the login page: the portal made no refund"
    EXPIRED_AFTER_REFUND = "the portal made the refund, then showed the login page"
    HANG_BEFORE_REFUND = "the click never answers and the portal made no refund"
    HANG_AFTER_REFUND = "the portal made the refund but the answer never came back"
    REFUSED = "the portal answers the form with an error (e.g. above the balance)"
    ERROR_500 = "the portal answers the click with HTTP 500 and makes no refund"


# -- the servers -------------------------------------------------------------------------


@dataclass
class Charge:
    transaction_id: str
    order_number: str
    amount: Decimal
    currency: str = "EUR"
    refunds: list[PortalRefund] = field(default_factory=list)

    @property
    def refunded(self) -> Decimal:
        return money(sum((r.amount for r in self.refunds), Decimal("0")))

    def facts(self) -> ChargeFacts:
        return ChargeFacts(self.transaction_id, self.order_number, self.amount, self.currency,
                           self.refunded, tuple(self.refunds))


@dataclass
class Submit:
    """One submit that reached the click, as the portal saw it."""

    transaction_id: str
    amount: Decimal
    reason: str
    reference: str
    made: str | None  # the refund number, when the portal made one


@dataclass
class Portal:
    """The payment portal's server side: charges, refund history, sessions, faults."""

    charges: dict[str, Charge] = field(default_factory=dict)
    on_submit: deque[SubmitFault] = field(default_factory=deque)
    on_form: list[Callable[[], None]] = field(default_factory=list)  # once each, form filled
    at_click: list[Callable[[], None]] = field(default_factory=list)  # once each, at the click
    fail_reads: deque[BaseException] = field(default_factory=deque)  # next find/read raises
    submits: list[Submit] = field(default_factory=list)
    logins: int = 0
    session_epoch: int = 0  # bumping it expires every logged-in page
    _numbers: int = 0

    def add_charge(self, order_number: str, amount: Decimal | str, *, currency: str = "EUR",
                   transaction_id: str | None = None) -> Charge:
        txn = transaction_id or f"TX-{len(self.charges) + 1:05d}"
        charge = Charge(txn, order_number, money(Decimal(amount)), currency)
        self.charges[txn] = charge
        return charge

    def charge_for(self, order_number: str) -> Charge | None:
        return next((c for c in self.charges.values() if c.order_number == order_number), None)

    def refund_by_hand(self, order_number: str, amount: Decimal | str, reference: str = "",
                       operator: str = "agent.smith") -> PortalRefund:
        """A refund an agent made in the portal (not the bot)."""
        charge = self.charge_for(order_number)
        assert charge is not None
        return self._make(charge, money(Decimal(amount)), "other", reference, operator)

    def expire_sessions(self) -> None:
        self.session_epoch += 1

    @property
    def refunds(self) -> list[PortalRefund]:
        return [r for c in self.charges.values() for r in c.refunds]

    def _make(self, charge: Charge, amount: Decimal, reason: str, reference: str,
              operator: str) -> PortalRefund:
        self._numbers += 1
        refund = PortalRefund(f"RF-{self._numbers:06d}", amount, reason, reference, operator,
                              datetime.now(UTC), charge.order_number, charge.currency)
        charge.refunds.append(refund)
        return refund


@dataclass
class OrderSystem:
    """The order system's server side: orders, notes, scripted failures."""

    orders: dict[str, OrderFacts] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    # what the next find_order calls do, one entry each: raise it, or None to answer
    fail_find: deque[BaseException | None] = field(default_factory=deque)
    fail_note: deque[BaseException] = field(default_factory=deque)  # next add_note raises
    fail_login: deque[BaseException] = field(default_factory=deque)
    always_fail_find: BaseException | None = None
    finds: int = 0
    logins: int = 0

    def add(self, order: OrderFacts) -> OrderFacts:
        self.orders[order.order_number] = order
        return order


@dataclass
class World:
    """Both legacy apps, as every worker of every processor in a test sees them."""

    orders: OrderSystem = field(default_factory=OrderSystem)
    portal: Portal = field(default_factory=Portal)


# -- the page objects --------------------------------------------------------------------


class FakePage:
    """What `_save_evidence` uses of a Playwright page."""

    def __init__(self) -> None:
        self.screenshots: list[Path] = []
        self.options: list[tuple[bool, float | None]] = []  # (full_page, timeout) asked for
        self.dead: BaseException | None = None  # a crashed tab: every screenshot raises it

    async def screenshot(self, *, path: Path, full_page: bool = False,
                         timeout: float | None = None) -> bytes:
        self.options.append((full_page, timeout))
        if self.dead is not None:
            raise self.dead
        Path(path).write_bytes(b"\x89PNG fake")
        self.screenshots.append(Path(path))
        return b""


class FakeOrdersApp:
    app_name = "order system"

    def __init__(self, system: OrderSystem) -> None:
        self.system = system
        self.page = FakePage()

    async def login(self) -> None:
        if self.system.fail_login:
            raise self.system.fail_login.popleft()
        self.system.logins += 1

    async def find_order(self, order_number: str) -> OrderFacts | None:
        self.system.finds += 1
        if self.system.always_fail_find is not None:
            raise self.system.always_fail_find
        if self.system.fail_find and (exc := self.system.fail_find.popleft()) is not None:
            raise exc
        return self.system.orders.get(order_number)

    async def search_orders(self, kind: str, query: str) -> list[OrderHit]:
        attr = {"email": "email", "phone": "phone"}[kind]
        found = [o for o in self.system.orders.values()
                 if getattr(o, attr).lower() == query.lower()]
        return [OrderHit(o.order_number, o.total) for o in found]

    async def add_note(self, order_number: str, text: str, marker: str | None = None) -> bool:
        if self.system.fail_note:
            raise self.system.fail_note.popleft()
        if order_number not in self.system.orders:
            return False
        notes = self.system.notes.setdefault(order_number, [])
        if marker and any(marker in n for n in notes):
            return False
        notes.append(text)
        return True


class FakePaymentsApp:
    app_name = "payment portal"

    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        self.page = FakePage()
        self._epoch: int | None = None  # the session this page is logged in with

    async def login(self) -> None:
        self.portal.logins += 1
        self._epoch = self.portal.session_epoch

    def _expired(self) -> bool:
        return self._epoch != self.portal.session_epoch

    async def _logged_in(self, read: Callable[[], ChargeFacts | None]) -> ChargeFacts | None:
        """The real `logged_in`: a read that meets the login page logs in and reads again."""
        if self.portal.fail_reads:
            raise self.portal.fail_reads.popleft()
        if self._expired():
            await self.login()
        return read()

    async def find_charge(self, order_number: str) -> ChargeFacts | None:
        def read() -> ChargeFacts | None:
            charge = self.portal.charge_for(order_number)
            return charge.facts() if charge else None
        return await self._logged_in(read)

    async def read_charge(self, transaction_id: str) -> ChargeFacts:
        found = await self._logged_in(lambda: self.portal.charges[transaction_id].facts())
        assert found is not None
        return found

    async def submit_refund(self, transaction_id: str, amount: Decimal, reason: str,
                            reference: str,
                            before_click: Callable[[], Awaitable[float | None]] | None = None
                            ) -> str:
        portal = self.portal
        fault = portal.on_submit.popleft() if portal.on_submit else None
        if self._expired() or fault is SubmitFault.EXPIRED_BEFORE_CLICK:
            raise SessionExpired("payment portal: redirected to the login page")
        charge = portal.charges[transaction_id]
        hooks, portal.on_form = portal.on_form, []
        for hook in hooks:
            hook()
        deadline = await before_click() if before_click is not None else None
        hooks, portal.at_click = portal.at_click, []
        for hook in hooks:
            hook()
        if deadline is not None and time.monotonic() > deadline:  # as the page object does
            raise TooLateToSubmit("payment portal: the submit click declined: past its deadline")
        submit = Submit(transaction_id, amount, reason, reference, None)
        portal.submits.append(submit)
        if fault is SubmitFault.EXPIRED_AT_CLICK:
            raise SessionExpired("payment portal: redirected to the login page")
        if fault is SubmitFault.HANG_BEFORE_REFUND:
            raise PlaywrightTimeout("Timeout 15000ms exceeded while waiting for navigation")
        if fault is SubmitFault.ERROR_500:
            raise AppUnavailable(f"payment portal: HTTP 500 on /transactions/{transaction_id}")
        if fault is SubmitFault.REFUSED or amount > charge.facts().remaining or amount <= 0:
            raise RefundRefused("portal refused the refund: amount exceeds the refundable "
                                "balance")
        refund = portal._make(charge, amount, reason, reference, "refund.bot")
        submit.made = refund.refund_id
        if fault is SubmitFault.EXPIRED_AFTER_REFUND:
            raise SessionExpired("payment portal: redirected to the login page")
        if fault is SubmitFault.HANG_AFTER_REFUND:
            raise PlaywrightTimeout("Timeout 15000ms exceeded while waiting for navigation")
        return refund.refund_id

    async def list_refunds(self, start: date, end: date) -> list[PortalRefund]:
        if self._expired():
            await self.login()
        return [r for r in self.portal.refunds if start <= r.created_at.date() <= end]


# -- session and workers -----------------------------------------------------------------


class FakeTracing:
    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.saved: list[Path] = []

    async def start_chunk(self, *, title: str | None = None) -> None:
        self.chunks.append(title or "")

    async def stop_chunk(self, *, path: Path | None = None) -> None:
        if path is not None:  # a trace that, like a real one, captured the typed password
            with zipfile.ZipFile(path, "w") as z:
                z.writestr("trace.trace", f"fill password {PAYMENTS_SECRET}\n")
            self.saved.append(Path(path))


class FakeContext:
    def __init__(self) -> None:
        self.tracing = FakeTracing()
        self.closed = False

    async def close(self) -> None:
        self.closed = True


@dataclass
class FakeWorker:
    name: str
    context: FakeContext
    orders: FakeOrdersApp
    payments: FakePaymentsApp
    tracing: bool = False


class FakeSession:
    """`BotSession` over a `World`: the processor's whole view of the legacy apps."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.workers: list[FakeWorker] = []

    def secrets(self) -> list[str]:
        return [ORDERS_SECRET, PAYMENTS_SECRET]

    async def worker(self, name: str, *, tracing: bool = False) -> FakeWorker:
        worker = FakeWorker(name, FakeContext(), FakeOrdersApp(self.world.orders),
                            FakePaymentsApp(self.world.portal), tracing)
        self.workers.append(worker)
        return worker

    async def login(self, worker: FakeWorker) -> None:
        await worker.orders.login()
        await worker.payments.login()


def system_error(text: str = "order system: HTTP 503 on /orders") -> SystemException:
    return AppUnavailable(text)
