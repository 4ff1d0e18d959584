"""One browser, and per worker one context holding a tab on each legacy app.

Contexts are created once per worker and reused across cases: a new context
costs about as much as a whole case's page loads on these machines.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import AsyncExitStack
from dataclasses import dataclass

from loguru import logger
from playwright.async_api import Browser, BrowserContext, Route, async_playwright
from playwright.async_api import Error as PlaywrightError

from bots.config import Settings, secret
from bots.errors import LoginRefused, SystemException
from bots.legacy.base import LoginGuard
from bots.legacy.browser import find_browser, launch_options
from bots.legacy.orders import OrdersApp
from bots.legacy.payments import PaymentsApp
from bots.legacy.selectors import load_orders, load_payments
from bots.models import ChargeFacts, OrderFacts

# What the bots never read: not fetched at all (a legacy page's images and stylesheets
# cost more than its HTML). Matched on the URL so that other requests are not intercepted.
BLOCKED = re.compile(r"\.(png|jpe?g|gif|bmp|ico|svg|webp|css|woff2?|ttf|otf|eot|mp[34]|webm|"
                     r"ogg|wav)(\?.*)?$", re.IGNORECASE)


@dataclass
class Worker:
    name: str
    context: BrowserContext
    orders: OrdersApp
    payments: PaymentsApp
    tracing: bool = False


async def find_order_and_charge(orders: OrdersApp, payments: PaymentsApp, order_number: str
                                ) -> tuple[OrderFacts | None, ChargeLookup]:
    """The order and its charge looked up at once, each app in its own tab.

    Both are read-only, so nothing is lost by reading the charge of an order that turns
    out not to exist. The order's outcome comes first (its error is raised here); the
    charge's, error included, only when the caller asks for it (`ChargeLookup.get`), so a
    case decides in the same order as when the two were read one after the other.
    """
    order, charge = await asyncio.gather(orders.find_order(order_number),
                                         payments.find_charge(order_number),
                                         return_exceptions=True)
    if isinstance(order, BaseException):
        raise order
    return order, ChargeLookup(charge)


@dataclass(frozen=True)
class ChargeLookup:
    """A charge lookup that has finished: its result, or its error raised on `get()`."""

    outcome: ChargeFacts | None | BaseException

    def get(self) -> ChargeFacts | None:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


class BotSession:
    """`async with BotSession(settings) as bots: w = await bots.worker("w1")`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.orders_sel = load_orders(settings.orders.selectors)
        self.payments_sel = load_payments(settings.payments.selectors)
        self._stack = AsyncExitStack()
        self.browser: Browser | None = None
        self.page_log: list[str] | None = None  # set by benchmarks: every page GET, in order
        self.logins = LoginGuard()  # a refused password is tried once per run, not per worker

    async def __aenter__(self) -> BotSession:
        b = self.settings.browser
        choice = find_browser(b.executable, b.channel, headless=b.headless)
        logger.info("browser: {}", choice.source)
        pw = await self._stack.enter_async_context(async_playwright())
        self.browser = await pw.chromium.launch(**launch_options(
            choice, headless=self.settings.browser.headless,
            slow_mo_ms=self.settings.browser.slow_mo_ms))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.browser is not None:
            await self.browser.close()
        await self._stack.aclose()

    def secrets(self) -> list[str]:
        """The passwords in use, so evidence files can be scrubbed of them."""
        return [secret(self.settings.orders.password_secret),
                secret(self.settings.payments.password_secret)]

    async def worker(self, name: str, *, tracing: bool = False) -> Worker:
        assert self.browser is not None
        s = self.settings
        context = await self.browser.new_context(accept_downloads=True,
                                                 viewport={"width": 1280, "height": 900})
        context.set_default_timeout(s.browser.timeout_ms)
        context.set_default_navigation_timeout(s.browser.timeout_ms)
        await context.route(BLOCKED, _abort)  # what the bots never read is not fetched
        if tracing:
            await context.tracing.start(screenshots=s.browser.trace_screenshots, snapshots=True)
        if self.page_log is not None:
            log = self.page_log
            context.on("request", lambda r: log.append(r.url)
                       if r.resource_type == "document" and r.method == "GET" else None)
        retries = s.processing.step_retries
        orders = OrdersApp(await context.new_page(), s.orders.url, self.orders_sel,
                           s.orders.username, lambda: secret(s.orders.password_secret), retries)
        payments = PaymentsApp(await context.new_page(), s.payments.url, self.payments_sel,
                               s.payments.username, lambda: secret(s.payments.password_secret),
                               retries)
        # Keep pages loaded for the next step of the case: a tab for order searches, so the
        # order page read for the decision serves its note.
        orders.search_tab = await context.new_page()
        orders.reuse_pages = payments.reuse_pages = True
        # Result lists read from their HTML are parsed in a blank tab of their own.
        orders.reader = payments.reader = await context.new_page()
        for app, name_of_secret in ((orders, s.orders.password_secret),
                                    (payments, s.payments.password_secret)):
            app.guard, app.secret_name = self.logins, name_of_secret
            app.page_log, app.timeout_ms = self.page_log, s.browser.timeout_ms
        return Worker(name, context, orders, payments, tracing)

    async def login(self, worker: Worker) -> None:
        await worker.orders.login()
        await worker.payments.login()


async def _abort(route: Route) -> None:
    await route.abort()
async def check_logins(settings: Settings) -> list[tuple[str, str | None]]:
    """Log in to each app once: (app, None when accepted, else why) for `doctor`.

    A refused password is reported with the name of its secret, and typed only once.
    """
    results: list[tuple[str, str | None]] = []
    async with BotSession(settings) as session:
        worker = await session.worker("doctor")
        try:
            for app in (worker.orders, worker.payments):
                try:
                    await app.login()
                    results.append((app.app_name, None))
                except (LoginRefused, SystemException, PlaywrightError) as exc:
                    results.append((app.app_name, str(exc)))
        finally:
            await worker.context.close()
    return results
