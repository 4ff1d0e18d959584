"""What every legacy-app page object shares: selectors from YAML, login, page checks.

Page objects follow Playwright's Page Object Model guide: methods are business
actions, there are no assertions inside, and every selector comes from
`selectors/<app>.yaml` so a deployment adapts the YAML, not the Python.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, Response
from playwright.async_api import TimeoutError as PlaywrightTimeout

from bots.errors import (
    AppUnavailable,
    LoginRefused,
    SelectorMissing,
    SessionExpired,
)
from bots.models import money

T = TypeVar("T")


class Selectors:
    """Selectors of one app, looked up as `sel("page", "element")`."""

    def __init__(self, data: dict[str, Any], source: str) -> None:
        self.data, self.source = data, source

    @classmethod
    def load(cls, path: Path) -> Selectors:
        return cls(yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}, str(path))

    def __call__(self, page: str, element: str) -> str:
        try:
            value = self.data[page][element]
        except KeyError:
            raise SelectorMissing(f"{self.source} has no selector {page}.{element}") from None
        return str(value)

    def get(self, page: str, element: str, default: str | None = None) -> str | None:
        return self.data.get(page, {}).get(element, default)

    def fmt(self, name: str, default: str) -> str:
        return str(self.data.get("formats", {}).get(name, default))


_READ_JS = """({fields, rows, cells}) => {
  const text = (root, sel) => { const el = root.querySelector(sel);
                                return el ? el.textContent.trim() : null; };
  const out = {fields: {}, rows: []};
  for (const [name, sel] of Object.entries(fields)) out.fields[name] = text(document, sel);
  if (rows) for (const row of document.querySelectorAll(rows)) {
    const r = {}; for (const [name, sel] of Object.entries(cells)) r[name] = text(row, sel);
    out.rows.push(r);
  }
  return out;
}"""


class LoginGuard:
    """One wrong password per app per run, never more: accounts lock after a few.

    Shared by every worker of a session. Logins to one app take turns, and once an app
    has refused the credentials every later login to it fails at once with the same
    message, without typing the password again.
    """

    def __init__(self) -> None:
        self.refused: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, app: str) -> asyncio.Lock:
        return self._locks.setdefault(app, asyncio.Lock())


class LegacyApp:
    """One legacy web app in one browser page, logged in with one account."""

    app_name = "app"
    guard: LoginGuard | None = None  # set by the session: shared by its workers
    secret_name = ""  # the password's secret name, for the message when it is refused

    def __init__(self, page: Page, base_url: str, selectors: Selectors, username: str,
                 password: Callable[[], str], step_retries: int = 2) -> None:
        self.page, self.base_url, self.sel = page, base_url.rstrip("/"), selectors
        self.username, self._password = username, password
        self.step_retries = step_retries

    # -- navigation with the checks a human does with their eyes ---------------------

    async def open(self, path: str) -> Response | None:
        """Go to a page of the app, retrying a flaky load a couple of times.

        Only page loads (GET) are retried here: they change nothing, so trying again
        costs a second, where failing the step would cost the whole case an attempt.
        """
        for attempt in range(self.step_retries + 1):
            try:
                return await self._open_once(path)
            except AppUnavailable:
                if attempt == self.step_retries:
                    raise
                await asyncio.sleep(0.25 * 2**attempt)
        raise AssertionError("unreachable")

    async def _open_once(self, path: str) -> Response | None:
        """Go to a page of the app and fail loudly on login redirects and error pages."""
        try:
            response = await self.page.goto(self.base_url + path, wait_until="domcontentloaded")
        except PlaywrightTimeout as exc:
            raise AppUnavailable(f"{self.app_name}: {path} did not load in time") from exc
        except PlaywrightError as exc:
            raise AppUnavailable(f"{self.app_name}: {path} failed: {exc.message}") from exc
        await self.check_page(response)
        return response

    async def check_page(self, response: Response | None, *, login_ok: bool = False) -> None:
        if not login_ok and self._on_login_page():
            raise SessionExpired(f"{self.app_name}: redirected to the login page")
        maintenance = self.sel.get("errors", "maintenance")
        if maintenance and await self.page.locator(maintenance).count():
            raise AppUnavailable(f"{self.app_name}: scheduled maintenance page")
        if response is not None and response.status >= 500:
            raise AppUnavailable(f"{self.app_name}: HTTP {response.status} on {response.url}")

    def _on_login_page(self) -> bool:
        return urlsplit(self.page.url).path == self.sel("login", "path")

    async def login(self) -> None:
        """Log in, retrying when the app answers the login with an error page.

        A refused password is never retried, in this worker or any other (LoginRefused).
        """
        guard = self.guard or LoginGuard()
        async with guard.lock(self.app_name):
            if refused := guard.refused.get(self.app_name):
                raise LoginRefused(refused)
            try:
                await self._login_retrying()
            except LoginRefused as exc:
                guard.refused[self.app_name] = str(exc)
                raise

    async def _login_retrying(self) -> None:
        for attempt in range(self.step_retries + 1):
            try:
                return await self._login_once()
            except AppUnavailable:
                if attempt == self.step_retries:
                    raise
                await asyncio.sleep(0.25 * 2**attempt)

    async def _login_once(self) -> None:
        sel = self.sel
        await self.open_login()
        await self.page.fill(sel("login", "username_field"), self.username)
        await self.page.fill(sel("login", "password_field"), self._password())
        async with self.page.expect_navigation(wait_until="domcontentloaded") as nav:
            await self.page.click(sel("login", "submit"))
        response = await nav.value
        await self.check_page(response, login_ok=True)
        if self._on_login_page():
            error = " ".join(await self.page.locator(sel("login", "error")).all_text_contents())
            secret = self.secret_name
            raise LoginRefused(
                f"{self.app_name}: the login was refused for user '{self.username}' "
                f"({error.strip() or 'no reason shown'}). Check the password in "
                + (f"the secret {secret} ($REFUND_BOTS_{secret} or the keyring)" if secret
                   else "its secret")
                + ". It is not tried again in this run, so that the account does not lock.")

    async def open_login(self) -> None:
        try:
            response = await self.page.goto(self.base_url + self.sel("login", "path"),
                                             wait_until="domcontentloaded")
        except PlaywrightTimeout as exc:
            raise AppUnavailable(f"{self.app_name}: login page did not load in time") from exc
        except PlaywrightError as exc:
            raise AppUnavailable(f"{self.app_name}: login page failed: {exc.message}") from exc
        await self.check_page(response, login_ok=True)

    async def logged_in(self, action: Callable[[], Awaitable[T]]) -> T:
        """Run a read-only step; if the session expired mid-way, log in and redo it once."""
        try:
            return await action()
        except SessionExpired:
            await self.login()
            return await action()

    # -- reading the page ------------------------------------------------------------

    async def text(self, page: str, element: str, scope: Any = None) -> str:
        locator = (scope or self.page).locator(self.sel(page, element)).first
        try:
            return (await locator.text_content(timeout=2_000) or "").strip()
        except PlaywrightTimeout as exc:
            raise SelectorMissing(
                f"{self.app_name}: '{self.sel(page, element)}' ({page}.{element}) not found "
                f"on {self.page.url}"
            ) from exc

    async def read(self, page: str, fields: tuple[str, ...],
                   rows: tuple[str, tuple[str, ...]] | None = None
                   ) -> tuple[dict[str, str], list[dict[str, str]]]:
        """Read many fields (and optionally a table) of the current page in one round trip.

        Reading field by field costs one browser round trip each; a detail page has
        thirty. A missing field is a SelectorMissing, as with `text()`.
        """
        selectors = {f: self.sel(page, f) for f in fields}
        row_sel, cells = (rows[0], {c: self.sel(page, c) for c in rows[1]}) if rows else ("", {})
        data = await self.page.evaluate(_READ_JS, {
            "fields": selectors, "rows": self.sel(page, row_sel) if rows else "", "cells": cells})
        missing = [f for f in fields if data["fields"][f] is None]
        missing += sorted({c for r in data["rows"] for c, v in r.items() if v is None})
        if missing:
            raise SelectorMissing(f"{self.app_name}: {', '.join(f'{page}.{m}' for m in missing)} "
                                  f"not found on {self.page.url}")
        return data["fields"], data["rows"]

    def amount(self, text: str) -> Decimal:
        """Parse an amount the way this app prints it (separators from the YAML)."""
        thousands = self.sel.fmt("amount_thousands", ",")
        decimal_sep = self.sel.fmt("amount_decimal", ".")
        cleaned = "".join(ch for ch in text if ch.isdigit() or ch in (thousands, decimal_sep, "-"))
        cleaned = cleaned.replace(thousands, "").replace(decimal_sep, ".") if thousands else cleaned
        try:
            return money(Decimal(cleaned))
        except InvalidOperation as exc:
            raise SelectorMissing(f"{self.app_name}: cannot read amount {text!r}") from exc

    def date(self, text: str) -> date | None:
        text = text.strip()
        if not text or text in {"-", "—", "n/a"}:
            return None
        return datetime.strptime(text, self.sel.fmt("date", "%Y-%m-%d")).date()

    def datetime(self, text: str) -> datetime:
        return datetime.strptime(text.strip(), self.sel.fmt("datetime", "%Y-%m-%d %H:%M:%S"))
