"""What every legacy-app page object shares: recognising pages, reading them, logging in.

Page objects follow Playwright's Page Object Model guide: methods are business
actions, there are no assertions inside, and every selector comes from
`selectors/<app>.yaml` (schema: `bots/legacy/selectors.py`), so a deployment adapts
the YAML, not the Python.

The one rule of this module: a page is only ever read after it has been positively
recognised. `open()` names the variants the caller expects (an order page, or the
app's "not found" page); anything else (a login form, a maintenance or error page,
an interstitial nobody described, a changed layout) is a SystemException carrying
the URL and the keys that were looked for. A known interstitial is clicked through.
A value that is missing, empty or not in the app's format is a SystemException
naming its key, never an empty string fed to the policy.
"""

from __future__ import annotations

import asyncio
import codecs
import datetime as dt
import re
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

from playwright.async_api import APIResponse, BrowserContext, Frame, Page, Response
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from bots.errors import (
    AppUnavailable,
    LoginRefused,
    SelectorMissing,
    SessionExpired,
    SystemException,
    UnknownPage,
    UnreadableValue,
)
from bots.legacy.selectors import Formats, Sel, _App

T = TypeVar("T")
_FRONT: weakref.WeakKeyDictionary[BrowserContext, Page] = weakref.WeakKeyDictionary()
MAX_INTERSTITIALS = 3  # pages clicked through in a row before giving up

# One round trip reads every field of a page (and a table): per key, which candidate
# selector matched (-1 none, -2 invalid selector) and the raw text or attribute.
READ_JS = """(spec) => {
  const one = (root, cands, attr) => {
    for (let i = 0; i < cands.length; i++) {
      let el;
      try { el = root.querySelector(cands[i]); } catch (e) { return [-2, String(e)]; }
      if (el) return [i, attr ? el.getAttribute(attr) : el.textContent];
    }
    return [-1, null];
  };
  const out = {fields: {}, rows: [], rowsMatched: -1};
  for (const [name, [cands, attr]] of Object.entries(spec.fields))
    out.fields[name] = one(document, cands, attr);
  if (spec.rows) {
    const [cands, cells] = spec.rows;
    for (let i = 0; i < cands.length; i++) {
      let found;
      try { found = document.querySelectorAll(cands[i]); }
      catch (e) { out.rowsMatched = -2; break; }
      if (!found.length) continue;
      out.rowsMatched = i;
      for (const row of found) {
        const r = {};
        for (const [name, [cc, attr]] of Object.entries(cells)) r[name] = one(row, cc, attr);
        out.rows.push(r);
      }
      break;
    }
  }
  return out;
}"""

# Which of the named markers the document shows (the first in order), or null.
WHICH_JS = """(markers) => {
  for (const [name, cands] of markers)
    for (const c of cands) { try { if (document.querySelector(c)) return name; } catch (e) {} }
  return null;
}"""

# Wait until one marker shows, or a note containing `needle` is listed.
NOTE_JS = """([notes, needle, markers]) => {
  for (const c of notes) { try {
    for (const el of document.querySelectorAll(c))
      if (el.textContent.includes(needle)) return "written";
  } catch (e) {} }
  for (const [name, cands] of markers)
    for (const c of cands) { try { if (document.querySelector(c)) return name; } catch (e) {} }
  return null;
}"""


# Whether a page's HTML alone is not the page a person sees: scripts, frames, plugins, a
# timed redirect, inline event handlers. Such a page is loaded in the tab instead.
DYNAMIC_JS = """() => !!document.querySelector(
  'script, noscript, iframe, frame, frameset, object, embed, template, '
  + 'meta[http-equiv="refresh" i]')
  || Array.from(document.querySelectorAll('*')).some(
       (el) => Array.from(el.attributes).some((a) => a.name.startsWith('on')))"""


class Fetched:
    """A page read from its HTML, fetched with the tab's session but not loaded in the tab.

    Its document is parsed by the browser (`DOMParser`), so every selector and read works
    on it exactly as on a loaded page; it runs no script and loads no frame, so only pages
    without either are read this way (`LegacyApp.open_to_read`). It is parsed in a blank
    tab of its own (`page`), which no navigation of an app's tab can disturb (such as a
    refund submit that answers late).
    """

    def __init__(self, page: Page, url: str, html: str) -> None:
        self.page, self.url, self.html = page, url, html

    async def evaluate(self, js: str, arg: Any = None) -> Any:
        """Run one of this module's page functions with `document` being this page's."""
        wrapped = ("([html, arg]) => { const document = new DOMParser()"
                   ".parseFromString(html, 'text/html'); return (" + js + ")(arg); }")
        return await self.page.main_frame.evaluate(wrapped, [self.html, arg])


Readable = Frame | Fetched  # what page reads work on


# -- what a read found -------------------------------------------------------------------------

@dataclass(frozen=True)
class Found:
    """One selector key on one page: which candidate matched and what it held."""

    key: str  # "order.status"
    sel: Sel
    matched: int  # index into sel.candidates; -1 nothing matched, -2 invalid selector,
    # -3 the key's own frame is not there (raw: why)
    raw: str | None

    @property
    def value(self) -> str | None:
        """The value after pattern and map; None when missing or unreadable."""
        return None if self.matched < 0 or self.raw is None else self.sel.extract(self.raw)

    @property
    def state(self) -> str:
        """found / missing / empty / unreadable / invalid selector (for health and errors)."""
        if self.matched == -2:
            return "invalid selector"
        if self.matched < 0:
            return "missing"  # its selector, or (-3) its frame
        if self.raw is None or not self.raw.strip():
            return "empty"
        return "found" if self.value is not None else "unreadable"


class Reading:
    """The values of one page (or one table row), with typed getters that never guess."""

    def __init__(self, app: str, url: str, found: dict[str, Found], formats: Formats) -> None:
        self.app, self.url, self.found, self.formats = app, url, found, formats

    def _fail(self, f: Found, problem: str, exc: type[SystemException] = UnreadableValue
              ) -> SystemException:
        where = " / ".join(f.sel.candidates)
        if f.sel.frame:
            where += f" in frame {' > '.join(f.sel.frame)}"
        return exc(f"{self.app}: {f.key} ({where}) {problem} on {self.url}")

    def text(self, name: str, *, empty_ok: bool = False) -> str:
        f = self.found[name]
        if f.matched == -2:
            raise self._fail(f, f"is not a valid selector ({f.raw})", SelectorMissing)
        if f.matched == -3:
            raise self._fail(f, "not found: its frame is not there", SelectorMissing)
        if f.matched < 0:
            raise self._fail(f, "not found", SelectorMissing)
        raw = " ".join((f.raw or "").split())
        if not raw:
            if empty_ok and f.sel.pattern is None and f.sel.map is None:
                return ""
            raise self._fail(f, "is empty")
        value = f.value
        if value is None:
            raise self._fail(f, f"shows {raw!r}, which its pattern/map cannot read")
        return value

    def amount(self, name: str) -> Decimal:
        text = self.text(name)
        value = self.formats.amount.parse(text)
        if value is None:
            raise self._fail(self.found[name], f"shows {text!r}, not an amount in this app's "
                                               "format (formats.amount)")
        return value

    def date(self, name: str) -> dt.date | None:
        """None only for one of the app's 'no date' words; missing or garbled is an error."""
        text = self.text(name, empty_ok=True)
        try:
            return self.formats.parse_date(text)
        except ValueError:
            raise self._fail(self.found[name], f"shows {text!r}, neither a date "
                             f"({self.formats.date}) nor a 'no date' word") from None

    def required_date(self, name: str) -> dt.date:
        value = self.date(name)
        if value is None:
            raise self._fail(self.found[name], "shows no date")
        return value

    def datetime(self, name: str, fmt: str) -> dt.datetime:
        text = self.text(name)
        try:
            return dt.datetime.strptime(text, fmt)
        except ValueError:
            raise self._fail(self.found[name], f"shows {text!r}, not a time ({fmt})") from None

    def flag(self, name: str) -> bool:
        """True/False from the app's yes/no words (or a map to yes/no); anything else fails."""
        text = self.text(name)
        value = self.formats.parse_flag(text)
        if value is None:
            value = {"yes": True, "no": False, "true": True, "false": False}.get(text.lower())
        if value is None:
            raise self._fail(self.found[name], f"shows {text!r}, neither a yes nor a no word "
                                               "(formats.yes / formats.no)")
        return value

    def count(self, name: str) -> int:
        text = self.text(name)
        if not text.isdigit() or int(text) <= 0:
            raise self._fail(self.found[name], f"shows {text!r}, not a positive whole number")
        return int(text)


@dataclass(frozen=True)
class PageRead:
    fields: Reading
    rows: list[Reading]
    rows_found: Found | None  # how the row selector matched (None: no table asked for)


# -- the app -----------------------------------------------------------------------------------

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

    def __init__(self, page: Page, base_url: str, selectors: _App, username: str,
                 password: Callable[[], str], step_retries: int = 2) -> None:
        self.page, self.base_url, self.sel = page, base_url.rstrip("/"), selectors
        self.username, self._password = username, password
        self.step_retries = step_retries
        self.recognise_ms = selectors.recognise_ms
        self.fmt = selectors.formats
        self.reuse_pages = False  # a page this case just read may serve its next step
        self.page_log: list[str] | None = None  # set by benchmarks: pages fetched, not loaded
        self.reader: Page | None = None  # a blank tab to parse fetched pages in (None: load)
        self.timeout_ms = 15_000  # the browser's timeout (set by the session): for fetches

    # -- recognising pages -------------------------------------------------------------

    def _guards(self) -> list[tuple[str, tuple[str, ...]]]:
        """Markers that mean 'not the page you wanted', checked on every page."""
        sel = self.sel
        guards = [("login", sel.login.form.candidates)]
        if sel.errors.maintenance is not None:
            guards.append(("maintenance", sel.errors.maintenance.candidates))
        if sel.errors.server_error is not None:
            guards.append(("server_error", sel.errors.server_error.candidates))
        guards += [(f"interstitial:{i}", s.detect.candidates)
                   for i, s in enumerate(sel.interstitials)]
        return guards

    async def frame(self, path: tuple[str, ...], start: Frame | None = None) -> Frame:
        """The (i)frame content lives in: `path` is its iframe selectors, from `start`
        (the page itself by default; a key's own frame starts at its page's frame)."""
        frame = start or self.page.main_frame
        for selector in path:
            try:
                handle = await frame.wait_for_selector(selector, timeout=self.recognise_ms)
                child = await handle.content_frame() if handle else None
            except PlaywrightTimeout:
                child = None
            if child is None:
                raise UnknownPage(f"{self.app_name}: no frame '{selector}' on {frame.url}")
            frame = child
        return frame

    async def key_frame(self, frame: Frame, sels: dict[str, Sel]) -> Frame:
        """Where keys that share a frame of their own live: their iframe(s) inside the page's
        frame, once one of the keys shows there. A frame that is not there is
        SelectorMissing naming the keys."""
        path = next(iter(sels.values())).frame
        try:
            child = await self.frame(path, frame)
        except UnknownPage as exc:
            raise SelectorMissing(f"{self.app_name}: {', '.join(sels)}: the frame "
                                  f"{' > '.join(path)} is not there "
                                  f"({str(exc).split(': ', 1)[-1]})") from None
        # An iframe loads after its parent page: wait (bounded) until it shows one of its
        # keys; a key still missing then is reported missing by the read, never guessed.
        await self._which(child, [(k, s.candidates) for k, s in sels.items()], wait=True)
        return child

    async def recognise(self, expected: dict[str, Sel], frame_path: tuple[str, ...] = (),
                        response: Response | None = None) -> tuple[str, Frame]:
        """Which expected variant the page is; a guard or nothing known raises.

        Interstitials raise `_Interstitial` for `open()` to click through.
        """
        markers = self._guards()
        if frame_path:  # the shell first (errors, login, interstitials), then the frame
            which = await self._which(self.page.main_frame, markers, wait=False)
            if which is not None:
                await self._guard(which, response)
            # errors and login can also show inside the frame
            markers = [m for m in markers if not m[0].startswith("interstitial:")]
        frame = await self.frame(frame_path)
        return await self._variant(frame, expected, markers, response), frame

    async def _variant(self, frame: Readable, expected: dict[str, Sel],
                       markers: list[tuple[str, tuple[str, ...]]],
                       response: Response | APIResponse | None) -> str:
        """The expected variant `frame` shows (waiting for a loading page), else its guard's
        error, else UnknownPage."""
        which = await self._which(frame, [(k, s.candidates) for k, s in expected.items()]
                                  + markers, wait=True)
        if which is None:
            looked = ", ".join(expected)
            raise UnknownPage(f"{self.app_name}: unrecognised page {frame.url} (HTTP "
                              f"{response.status if response else '?'}): none of "
                              f"{looked} is on it")
        if which in expected:
            if response is not None and response.status >= 500:
                raise AppUnavailable(f"{self.app_name}: HTTP {response.status} on {response.url}")
            return which
        await self._guard(which, response)
        raise AssertionError("unreachable")

    async def _which(self, frame: Readable, markers: list[tuple[str, tuple[str, ...]]],
                     wait: bool) -> str | None:
        try:
            # One round trip when the page is there (server-rendered pages usually are);
            # polling only for what is still loading (an iframe, a slow script).
            which = await frame.evaluate(WHICH_JS, markers)
        except PlaywrightTimeout:
            return None
        except PlaywrightError:  # the frame is still navigating: wait below
            which = None
        if which is not None or not wait or isinstance(frame, Fetched):
            return which
        try:
            handle = await frame.wait_for_function(WHICH_JS, arg=markers,
                                                   timeout=self.recognise_ms, polling=50)
            return await handle.json_value()
        except PlaywrightTimeout:
            return None

    async def _guard(self, which: str, response: Response | APIResponse | None) -> None:
        url = self.page.url
        if which == "login":
            raise SessionExpired(f"{self.app_name}: sent to the login page ({url})")
        if which == "maintenance":
            raise AppUnavailable(f"{self.app_name}: scheduled maintenance page ({url})")
        if which == "server_error":
            status = response.status if response else "?"
            raise AppUnavailable(f"{self.app_name}: error page (HTTP {status}) on {url}")
        if which.startswith("interstitial:"):
            raise _Interstitial(int(which.split(":", 1)[1]))
        raise AssertionError(which)

    # -- navigation --------------------------------------------------------------------

    def url_for(self, path_or_url: str) -> str:
        """An app path or a same-app absolute URL; links elsewhere are refused."""
        url = urljoin(self.base_url + "/", path_or_url)
        if urlsplit(url)[:2] != urlsplit(self.base_url)[:2]:
            raise UnknownPage(f"{self.app_name}: link leaves the app: {path_or_url}")
        return url

    async def open(self, path: str, expected: dict[str, Sel],
                   frame_path: tuple[str, ...] = ()) -> tuple[str, Frame]:
        """Load a page and recognise it: (variant, frame to read). Loads retried in place.

        Only page loads (GET) are retried here: they change nothing, so trying again
        costs a second, where failing the step would cost the whole case an attempt.
        """
        return await self._retrying(lambda: self._open_once(path, expected, frame_path))

    async def open_to_read(self, path: str, expected: dict[str, Sel], reads: list[Sel],
                           frame_path: tuple[str, ...] = ()) -> tuple[str, Readable]:
        """`open` for a page that is only read (a list of search results): from its HTML
        without loading it in the tab when that is the same page (`_fetch_once`), at a
        quarter of the cost; else loaded. `reads`: the keys that will be read on it (one
        in a frame of its own needs the page loaded)."""
        fetch = self.reader is not None and not frame_path and not any(
            s.frame for s in [*expected.values(), *reads])

        async def once() -> tuple[str, Readable]:
            found = await self._fetch_once(path, expected) if fetch else None
            return found or await self._open_once(path, expected, frame_path)
        return await self._retrying(once)

    async def _retrying(self, load: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(self.step_retries + 1):
            try:
                return await load()
            except AppUnavailable:
                if attempt == self.step_retries:
                    raise
                await asyncio.sleep(0.25 * 2**attempt)
        raise AssertionError("unreachable")

    async def _fetch_once(self, path: str, expected: dict[str, Sel]
                          ) -> tuple[str, Readable] | None:
        """The page read from its HTML, fetched with the tab's cookies; None: load it in the
        tab instead, because its HTML alone may not be what a person sees (scripts, frames,
        an interstitial to click through, not recognised without them, a charset not
        declared).

        Guards are as on a loaded page: a login form is an expired session, an error or
        maintenance page is the app being unavailable.
        """
        url = self.url_for(path)
        try:
            response = await self.page.context.request.get(url, timeout=self.timeout_ms)
            body = await response.body()
        except PlaywrightTimeout as exc:
            raise AppUnavailable(f"{self.app_name}: {path} did not load in time") from exc
        except PlaywrightError as exc:
            raise AppUnavailable(f"{self.app_name}: {path} failed: {exc.message}") from exc
        if self.page_log is not None:
            self.page_log.append(url)
        html = _decoded(body, response.headers.get("content-type", ""))
        if html is None or self.reader is None:  # no tab to parse it in: load it instead
            return None
        doc = Fetched(self.reader, response.url, html)
        if await doc.evaluate(DYNAMIC_JS):
            return None
        try:
            return await self._variant(doc, expected, self._guards(), response), doc
        except (UnknownPage, _Interstitial):
            return None

    async def _open_once(self, path: str, expected: dict[str, Sel],
                         frame_path: tuple[str, ...]) -> tuple[str, Frame]:
        for _ in range(MAX_INTERSTITIALS + 1):
            response = await self._goto(path)
            try:
                return await self.recognise(expected, frame_path, response)
            except _Interstitial as step:
                await self._click_through(step.index)
        raise UnknownPage(f"{self.app_name}: still on an interstitial page after "
                          f"{MAX_INTERSTITIALS} click-throughs ({self.page.url})")

    async def _goto(self, path: str) -> Response | None:
        try:
            return await self.page.goto(self.url_for(path), wait_until="domcontentloaded")
        except PlaywrightTimeout as exc:
            raise AppUnavailable(f"{self.app_name}: {path} did not load in time") from exc
        except PlaywrightError as exc:
            raise AppUnavailable(f"{self.app_name}: {path} failed: {exc.message}") from exc

    async def _click_through(self, index: int) -> None:
        step = self.sel.interstitials[index]
        button = await self._locate(self.page.main_frame, step.click)
        if button is None:
            raise UnknownPage(f"{self.app_name}: interstitial '{step.name}' without its "
                              f"button ({' / '.join(step.click.candidates)}) on {self.page.url}")
        async with self.page.expect_navigation(wait_until="domcontentloaded"):
            await self.page.click(button)

    async def _locate(self, frame: Frame, sel: Sel) -> str | None:
        """The first of a key's candidate selectors present in the frame."""
        found = await frame.evaluate(READ_JS, {"fields": {"x": [sel.candidates, None]},
                                                "rows": None})
        index = found["fields"]["x"][0]
        return sel.candidates[index] if index >= 0 else None

    async def texts(self, frame: Readable, sel: Sel) -> list[str]:
        """The text of every element the first matching candidate finds (e.g. all notes)."""
        return await frame.evaluate("""(cands) => {
          for (const c of cands) { const els = document.querySelectorAll(c);
            if (els.length) return Array.from(els, e => e.textContent); }
          return []; }""", list(sel.candidates))

    async def require_all(self, frame: Frame, sels: dict[str, Sel]
                          ) -> dict[str, tuple[Frame, str]]:
        """Where to act for several keys: (frame, selector), one round trip per frame; any
        missing raises."""
        out: dict[str, tuple[Frame, str]] = {}
        missing: list[str] = []
        for where, group in await self._by_frame(frame, sels):
            if isinstance(where, SelectorMissing):
                raise where
            if isinstance(where, Fetched):  # pages to act on are loaded, never fetched
                raise AssertionError(f"{list(group)} looked for on a fetched page")
            found = await where.evaluate(READ_JS, {
                "fields": {k: [s.candidates, None] for k, s in group.items()}, "rows": None})
            for key, sel in group.items():
                index = found["fields"][key][0]
                if index >= 0:
                    out[key] = (where, sel.candidates[index])
                else:
                    missing.append(f"{key} ({' / '.join(sel.candidates)})"
                                   + (f" in {' > '.join(sel.frame)}" if sel.frame else ""))
        if missing:
            raise SelectorMissing(f"{self.app_name}: {', '.join(missing)} not found on "
                                  f"{frame.url}")
        return out

    async def require(self, frame: Frame, sel: Sel, key: str) -> tuple[Frame, str]:
        """Where to act for one key (of its candidates); missing is SelectorMissing."""
        return (await self.require_all(frame, {key: sel}))[key]

    async def _by_frame(self, frame: Readable, sels: dict[str, Sel]
                        ) -> list[tuple[Readable | SelectorMissing, dict[str, Sel]]]:
        """Keys grouped by the frame they live in (most pages: one group, the page's frame);
        a frame that is not there comes back as its error, for the caller to report."""
        paths: dict[tuple[str, ...], dict[str, Sel]] = {}
        for key, sel in sels.items():
            paths.setdefault(sel.frame, {})[key] = sel
        out: list[tuple[Readable | SelectorMissing, dict[str, Sel]]] = []
        for path, group in paths.items():
            if not path:
                out.append((frame, group))
                continue
            if isinstance(frame, Fetched):  # open_to_read is never asked for such pages
                raise AssertionError(f"keys in a frame read on a fetched page: {list(group)}")
            try:
                out.append((await self.key_frame(frame, group), group))
            except SelectorMissing as exc:
                out.append((exc, group))
        return out

    # -- login -------------------------------------------------------------------------

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
        await self.to_front()
        lg = self.sel.login
        response = await self._goto(lg.path)
        which, frame = await self._recognise_login(response, {"form": lg.form,
                                                              "logged_in": lg.logged_in})
        if which == "logged_in":
            return
        at = await self.require_all(frame, {"login.username_field": lg.username_field,
                                            "login.password_field": lg.password_field,
                                            "login.submit": lg.submit})
        await frame.fill(at["login.username_field"][1], self.username)
        await frame.fill(at["login.password_field"][1], self._password())
        submit = at["login.submit"][1]
        try:
            async with self.page.expect_navigation(wait_until="domcontentloaded") as nav:
                await frame.click(submit)
            response = await nav.value
        except PlaywrightTimeout as exc:
            raise AppUnavailable(f"{self.app_name}: the login did not answer") from exc
        for _ in range(MAX_INTERSTITIALS + 1):
            which, frame = await self._recognise_login(
                response, {"logged_in": lg.logged_in, "refused": lg.error, "form": lg.form})
            if which == "logged_in":
                return
            if which != "interstitial":
                read = await self.read_page(frame, "login", {"error": lg.error})
                message = " ".join((read.fields.found["error"].raw or "").split())
                secret = self.secret_name
                raise LoginRefused(
                    f"{self.app_name}: the login was refused for user '{self.username}' "
                    f"({message or 'no reason shown'}). Check the password in "
                    + (f"the secret {secret} ($REFUND_BOTS_{secret} or the keyring)" if secret
                       else "its secret")
                    + ". It is not tried again in this run, so that the account does not "
                      "lock.")
            response = None
        raise UnknownPage(f"{self.app_name}: still on an interstitial page after login")

    async def _recognise_login(self, response: Response | None, expected: dict[str, Sel]
                               ) -> tuple[str, Frame]:
        """The login flow's pages; the login form itself is expected here, not a guard.

        Interstitials come first: a news page may well show the logout link too.
        """
        guards = self._guards()[1:]
        markers = ([g for g in guards if g[0].startswith("interstitial:")]
                   + [(k, s.candidates) for k, s in expected.items()]
                   + [g for g in guards if not g[0].startswith("interstitial:")])
        which = await self._which(self.page.main_frame, markers, wait=True)
        if which is None:
            raise UnknownPage(f"{self.app_name}: unrecognised page during login: "
                              f"{self.page.url}: none of "
                              f"{', '.join('login.' + k for k in expected)} is on it")
        if which in expected:
            return which, self.page.main_frame
        try:
            await self._guard(which, response)
        except _Interstitial as step:
            await self._click_through(step.index)
            return "interstitial", self.page.main_frame
        raise AssertionError("unreachable")

    async def to_front(self) -> None:
        """Bring this tab to the front before working in it, as a person would.

        Chromium throttles tabs that are not in front: clicks wait for animation frames
        and page timers slow to once a second, which cost 1-2 s per case.
        """
        front = _FRONT.get(self.page.context)
        if self.reuse_pages and front is not self.page:
            await self.page.bring_to_front()
            _FRONT[self.page.context] = self.page

    async def logged_in(self, action: Callable[[], Awaitable[T]]) -> T:
        """Run a read-only step; if the session expired mid-way, log in and redo it once."""
        await self.to_front()
        try:
            return await action()
        except SessionExpired:
            await self.login()
            return await action()

    # -- reading the page ------------------------------------------------------------

    async def read_page(self, frame: Readable, section: str, fields: dict[str, Sel],
                        rows: tuple[str, Sel, dict[str, Sel]] | None = None) -> PageRead:
        """Read many keys (and optionally a table) of a page: one browser round trip per
        frame the keys live in (one for most pages). Keys whose frame is not there are
        read as missing (`Found.matched` -3), for the typed getters to raise on."""
        wanted = dict(fields)
        rows_key = f"\0{rows[0]}" if rows else ""  # the table goes with its rows key's frame
        if rows:
            wanted[rows_key] = rows[1]
        found: dict[str, Found] = {}
        table: list[Reading] = []
        rows_found = None
        url = frame.url

        def reading(values: dict[str, list[Any]], sels: dict[str, Sel], at: str) -> Reading:
            return Reading(self.app_name, at, {
                n: Found(f"{section}.{n}", sels[n], v[0], v[1]) for n, v in values.items()},
                self.fmt)

        for where, group in await self._by_frame(frame, wanted):
            table_here = rows is not None and rows_key in group
            if isinstance(where, SelectorMissing):
                found.update({n: Found(f"{section}.{n}", s, -3, str(where))
                              for n, s in group.items() if n != rows_key})
                if rows is not None and table_here:
                    rows_found = Found(f"{section}.{rows[0]}", rows[1], -3, None)
                continue
            spec: dict[str, Any] = {
                "fields": {n: [s.candidates, s.attr] for n, s in group.items() if n != rows_key},
                "rows": [rows[1].candidates,
                         {n: [s.candidates, s.attr] for n, s in rows[2].items()}]
                if rows is not None and table_here else None,
            }
            data = await where.evaluate(READ_JS, spec)
            found.update(reading(data["fields"], group, where.url).found)
            if rows is not None and table_here:
                table = [reading(r, rows[2], where.url) for r in data["rows"]]
                rows_found = Found(f"{section}.{rows[0]}", rows[1], data["rowsMatched"],
                                   str(len(table)) if table else None)
        return PageRead(Reading(self.app_name, url, {n: found[n] for n in fields}, self.fmt),
                        table, rows_found)


class _Interstitial(Exception):  # noqa: N818 - a signal between two methods, not an error
    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


CHARSET = re.compile(r"charset=[\"']?([\w.:-]+)", re.IGNORECASE)


def _decoded(body: bytes, content_type: str) -> str | None:
    """An HTML page's text in the charset its headers declare; None when they declare none
    (the browser would guess from the page: it is loaded in the tab instead), or it is not
    HTML, or does not decode."""
    m = CHARSET.search(content_type)
    if "html" not in content_type.lower() or m is None:
        return None
    try:
        return body.decode(codecs.lookup(m.group(1)).name)
    except (LookupError, UnicodeDecodeError):
        return None


def urljoin_text(base: str, href: str) -> str:
    """A link's address, relative ones resolved against the page they are on."""
    return urljoin(base, href.strip())


def fields_of(section: Any, names: tuple[str, ...]) -> dict[str, Sel]:
    """The named selector keys of a schema section that are set (optional ones may not be)."""
    return {n: s for n in names if (s := getattr(section, n)) is not None}
