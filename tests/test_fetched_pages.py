"""Pages that are only read may be read from their HTML, not loaded in the tab (issue 14, 5).

`LegacyApp.open_to_read` fetches a list of search results with the tab's session and
reads it with the same selectors, in a document the browser parses. It does so only
when that document is the page a person sees: a page with a script (which may change
what it shows), a frame, or no declared charset is loaded in the tab, as before. The
guards hold on a fetched page too: a login form is an expired session.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from paths import SELECTORS

from bots.errors import SessionExpired
from bots.legacy.base import Fetched
from bots.legacy.orders import OrdersApp
from bots.legacy.selectors import load_orders

ROWS = """<table id="results">
<tr class="result-row"><td><a class="order-link" href="/orders/ORD-1">ORD-1</a></td>
  <td class="total">1,234.50</td></tr>
<tr class="result-row"><td><a class="order-link" href="/orders/ORD-2">ORD-2</a></td>
  <td class="total">9.95</td></tr></table>"""
LOGGED_IN = '<a id="logout" href="/logout">Log out</a>'
PAGES: dict[str, tuple[str, str]] = {  # path -> (content type, body)
    "/static": ("text/html; charset=utf-8",
                '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
                f"</head><body>{LOGGED_IN}{ROWS}</body></html>"),
    "/refresh": ("text/html; charset=utf-8",
                 '<html><head><meta http-equiv="refresh" content="0; url=/static"></head>'
                 f"<body>{LOGGED_IN}<p id='no-results'>Loading</p></body></html>"),
    # The HTML alone says "no results"; its script shows the results a person sees.
    "/scripted": ("text/html; charset=utf-8",
                  f"<html><body>{LOGGED_IN}<p id='no-results'>No orders</p><div id='x'></div>"
                  f"<script>document.getElementById('no-results').remove();"
                  f"document.getElementById('x').innerHTML = {ROWS!r}.trim();</script>"
                  "</body></html>"),
    "/no-charset": ("text/html", f"<html><body>{LOGGED_IN}{ROWS}</body></html>"),
    "/expired": ("text/html; charset=utf-8",
                 "<html><body><form id='login-form'><input name='username'></form></body></html>"),
}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        content_type, body = PAGES[self.path.split("?")[0]]
        data = body.encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def _read(base: str, path: str) -> tuple[bool, str, list[tuple[str, str]], list[str]]:
    """(read from its HTML?, variant, rows read, pages fetched) for one results page."""
    from playwright.async_api import async_playwright

    from bots.legacy.browser import find_browser, launch_options

    sel = load_orders(SELECTORS / "orders.yaml").model_copy(update={"recognise_ms": 1500})
    s = sel.search

    async def go() -> tuple[bool, str, list[tuple[str, str]], list[str]]:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(**launch_options(find_browser()))
            try:
                page = await browser.new_page()
                app = OrdersApp(page, base, sel, "u", lambda: "p")
                app.page_log, app.reader = [], await browser.new_page()
                which, frame = await app.open_to_read(
                    path, {"results": s.results, "no_results": s.no_results},
                    [s.rows, s.order_number, s.total])
                rows: list[tuple[str, str]] = []
                if which == "results":
                    read = await app.read_page(frame, "search", {}, (
                        "rows", s.rows, {"order_number": s.order_number, "total": s.total}))
                    rows = [(r.text("order_number"), str(r.amount("total"))) for r in read.rows]
                return isinstance(frame, Fetched), which, rows, app.page_log
            finally:
                await browser.close()

    return asyncio.run(go())


EXPECTED = [("ORD-1", "1234.50"), ("ORD-2", "9.95")]


@pytest.mark.e2e
def test_a_static_results_page_is_read_from_its_html_without_loading_it(site: str) -> None:
    fetched, which, rows, log = _read(site, "/static")
    assert (fetched, which, rows) == (True, "results", EXPECTED)
    assert log == [f"{site}/static"]


@pytest.mark.e2e
def test_a_page_with_a_script_is_loaded_and_read_as_its_script_shows_it(site: str) -> None:
    """Its HTML alone says "no results": reading that would reject the customer."""
    fetched, which, rows, _ = _read(site, "/scripted")
    assert (fetched, which, rows) == (False, "results", EXPECTED)


@pytest.mark.e2e
def test_a_page_that_redirects_itself_is_loaded(site: str) -> None:
    fetched, _, _, _ = _read(site, "/refresh")
    assert not fetched


@pytest.mark.e2e
def test_a_page_without_a_declared_charset_is_loaded(site: str) -> None:
    fetched, which, rows, _ = _read(site, "/no-charset")
    assert (fetched, which, rows) == (False, "results", EXPECTED)


@pytest.mark.e2e
def test_a_fetched_login_page_is_an_expired_session(site: str) -> None:
    with pytest.raises(SessionExpired, match="sent to the login page"):
        _read(site, "/expired")
