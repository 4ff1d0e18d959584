"""Page object for the legacy order system."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import quote

from playwright.async_api import Frame, Page
from playwright.async_api import TimeoutError as PlaywrightTimeout

from bots.errors import AppUnavailable, SessionExpired, SystemException, UnknownPage
from bots.legacy.base import NOTE_JS, LegacyApp, Reading, fields_of, urljoin_text
from bots.legacy.selectors import LINE_PAGE_KEYS, OrdersSelectors, Sel
from bots.models import LineItem, OrderFacts, money

ORDER_FIELDS = ("order_number", "customer_name", "customer_email", "customer_phone",
                "order_date", "delivery_date", "status", "currency", "shipping_fee", "total",
                "payment_method")
ITEM_FIELDS = ("sku", "item_name", "category", "unit_price", "line_total", "quantity",
               "final_sale")


@dataclass(frozen=True)
class OrderHit:
    """One row of the order search results."""

    order_number: str
    total: Decimal


class OrdersApp(LegacyApp):
    app_name = "order system"
    sel: OrdersSelectors
    search_tab: Page | None = None  # searches here keep the order page loaded for its note
    _on_order: str | None = None  # the order page just read, still shown

    async def find_order(self, order_number: str) -> OrderFacts | None:
        """Open the order's page and read it; None only on the app's own "not found" page."""
        return await self.logged_in(lambda: self._read_order(order_number))

    async def search_orders(self, kind: str, query: str) -> list[OrderHit]:
        """Orders matching a customer email or phone (every result page), with their totals.

        [] only when the app's "no results" page is recognised.
        """
        async with self._searching():
            return await self.logged_in(lambda: self._search(kind, query))

    async def add_note(self, order_number: str, text: str, marker: str | None = None) -> bool:
        """Write a note on the order, as an agent would after a refund, and check it is there.

        With a `marker`, a note already containing it means the note was written
        by an earlier attempt: nothing is added and False is returned. A note that
        does not appear on the order afterwards is a SystemException.
        """
        return await self.logged_in(lambda: self._add_note(order_number, text, marker))

    async def read_notes(self, order_number: str) -> list[str] | None:
        """The texts of every note on the order (the reconciliation's third way).

        None only on the app's own "not found" page; [] when the order shows no note. A
        page that is not recognised, or shows another order, raises (UnknownPage).
        """
        return await self.logged_in(lambda: self._read_notes(order_number))

    # -- steps -------------------------------------------------------------------------

    async def _read_notes(self, order_number: str) -> list[str] | None:
        which, frame = await self._open_order(order_number)
        if which == "not_found":
            return None
        o = self.sel.order
        page = await self.read_page(frame, "order", {"order_number": o.order_number})
        shown = page.fields.text("order_number")
        if shown.lower() != order_number.lower():
            raise UnknownPage(f"{self.app_name}: asked for the notes of order {order_number}, "
                              f"the page shows {shown!r} ({frame.url})")
        return [" ".join(t.split()) for t in await self.texts(frame, o.notes)]

    async def _open_order(self, order_number: str) -> tuple[str, Frame]:
        o = self.sel.order
        path = o.url.format(order_number=quote(order_number, safe=""))
        self._on_order = None
        return await self.open(path, {"detail": o.detail, "not_found": o.not_found}, o.frame)

    @asynccontextmanager
    async def _searching(self) -> AsyncIterator[None]:
        """Searches run in their own tab (when there is one): the order page stays shown."""
        if self.search_tab is None:
            self._on_order = None
            yield
            return
        main, self.page = self.page, self.search_tab
        try:
            yield
        finally:
            self.page = main

    async def _read_order(self, order_number: str) -> OrderFacts | None:
        which, frame = await self._open_order(order_number)
        if which == "not_found":
            return None
        o = self.sel.order
        cells = fields_of(o, ITEM_FIELDS)
        if o.line_page is not None:
            cells["line_page.link"] = o.line_page.link
        page = await self.read_page(frame, "order", fields_of(o, ORDER_FIELDS),
                                    ("line_items", o.line_items, cells))
        f = page.fields
        shown = f.text("order_number")
        if shown.lower() != order_number.lower():
            raise UnknownPage(f"{self.app_name}: asked for order {order_number}, the page "
                              f"shows {shown!r} ({frame.url})")
        if not page.rows:
            raise SystemException(f"{self.app_name}: order.line_items "
                                  f"({' / '.join(o.line_items.candidates)}) matched no line "
                                  f"on {frame.url}: an order without lines is not readable")
        items = tuple([self._item(r, lp) for r, lp in await self._with_line_pages(page.rows)])
        self._on_order = order_number  # the note checks the tab still shows it
        return OrderFacts(
            order_number=shown, customer_name=f.text("customer_name"),
            email=f.text("customer_email").lower(), phone=f.text("customer_phone", empty_ok=True),
            order_date=f.required_date("order_date"), delivery_date=f.date("delivery_date"),
            status=f.text("status").lower(), items=items,
            shipping_fee=f.amount("shipping_fee"), currency=f.text("currency").upper(),
            payment_card=f.text("payment_method", empty_ok=True), total=f.amount("total"),
        )

    async def _with_line_pages(self, rows: list[Reading]
                               ) -> list[tuple[Reading, Reading | None]]:
        """Each order line with its own page's reading (`order.line_page`), if configured.

        The order page is read whole before any line page is opened. Line pages open in
        the search tab when there is one (the order page stays shown for its note), once
        per distinct link. A line page that is missing, "not found", or shows another
        SKU is a SystemException: a value the bot cannot read is never taken as absent.
        """
        lp = self.sel.order.line_page
        if lp is None:
            return [(r, None) for r in rows]
        links = [self.url_for(urljoin_text(r.url, r.text("line_page.link"))) for r in rows]
        pages: dict[str, Reading] = {}
        async with self._searching():
            await self.to_front()
            for link in dict.fromkeys(links):
                which, frame = await self.open(link, {"detail": lp.detail,
                                                      "not_found": lp.not_found}, lp.frame)
                if which == "not_found":
                    raise UnknownPage(f"{self.app_name}: the line page {link} "
                                      f"(order.line_page.link) says not found: its "
                                      f"{', '.join(k for k in LINE_PAGE_KEYS if getattr(lp, k))}"
                                      " cannot be read")
                pages[link] = (await self.read_page(frame, "order.line_page",
                                                    fields_of(lp, ("sku", *LINE_PAGE_KEYS)))
                               ).fields
        for r, link in zip(rows, links, strict=True):
            if lp.sku is not None and pages[link].text("sku").lower() != r.text("sku").lower():
                raise UnknownPage(f"{self.app_name}: the line page {link} shows SKU "
                                  f"{pages[link].text('sku')!r}, the order line {r.text('sku')!r}")
        return [(r, pages[link]) for r, link in zip(rows, links, strict=True)]

    def _item(self, row: Reading, line_page: Reading | None) -> LineItem:
        """One order line; each value from where the selectors say it is shown."""
        lp = self.sel.order.line_page

        def at(key: str) -> Reading:
            return line_page if line_page is not None and lp is not None \
                and getattr(lp, key) is not None else row

        quantity = at("quantity").count("quantity")
        if self.sel.order.unit_price is not None or (lp is not None and lp.unit_price):
            unit = at("unit_price").amount("unit_price")
        else:  # derived: the line total over the quantity, exact to the cent or unreadable
            line_total = row.amount("line_total")
            unit = money(line_total / quantity)
            if money(unit * quantity) != line_total:
                raise SystemException(f"{self.app_name}: line total {line_total} is not "
                                      f"{quantity} x a unit price in cents ({row.url})")
        return LineItem(sku=row.text("sku"), name=at("item_name").text("item_name"),
                        category=at("category").text("category").lower(), unit_price=unit,
                        quantity=quantity, final_sale=at("final_sale").flag("final_sale"))

    async def _search(self, kind: str, query: str) -> list[OrderHit]:
        hop = self.sel.customer_search
        if hop is not None and kind in hop.kinds:
            return await self._search_via_customer(query)
        s = self.sel.search
        if kind not in s.field_values:
            raise SystemException(f"{self.app_name}: search.field_values has no '{kind}'")
        path = s.url.format(field=quote(s.field_values[kind]), query=quote(query, safe=""))
        return await self._hits(path, {"results": s.results, "no_results": s.no_results},
                                "search", s.rows, s.order_number, s.total, s.next_page,
                                s.max_pages)

    async def _search_via_customer(self, query: str) -> list[OrderHit]:
        hop = self.sel.customer_search
        assert hop is not None
        which, frame = await self.open_to_read(
            hop.url.format(query=quote(query, safe="")),
            {"results": hop.results, "no_results": hop.no_results}, [hop.rows, hop.link])
        if which == "no_results":
            return []
        page = await self.read_page(frame, "customer_search", {}, ("rows", hop.rows,
                                                                    {"link": hop.link}))
        if not page.rows:
            raise UnknownPage(f"{self.app_name}: customer_search.rows matched nothing on a "
                              f"results page ({frame.url})")
        links = [self.url_for(urljoin_text(frame.url, r.text("link"))) for r in page.rows]
        found: list[OrderHit] = []
        for link in links:
            found += await self._hits(link, {"detail": hop.detail}, "customer_search",
                                      hop.order_rows, hop.order_number, hop.total,
                                      hop.next_page, hop.max_pages, empty_ok=True)
        return found

    async def _hits(self, path: str, expected: dict[str, Sel], section: str, rows: Sel,
                    number: Sel, total: Sel, next_page: Sel | None, max_pages: int,
                    empty_ok: bool = False) -> list[OrderHit]:
        """Every row of a paged list of orders, following `next_page` up to `max_pages`."""
        found: list[OrderHit] = []
        for _ in range(max_pages):
            reads = [rows, number, total] + ([next_page] if next_page is not None else [])
            which, frame = await self.open_to_read(path, expected, reads)
            if which == "no_results":
                if found:
                    raise UnknownPage(f"{self.app_name}: a later result page says no "
                                      f"results ({frame.url})")
                return []
            extra = {"next_page": next_page} if next_page is not None else {}
            page = await self.read_page(frame, section, extra, (
                "rows", rows, {"order_number": number, "total": total}))
            if not page.rows and not empty_ok:
                raise UnknownPage(f"{self.app_name}: {section}.rows matched nothing on a "
                                  f"results page ({frame.url})")
            found += [OrderHit(r.text("order_number"), r.amount("total")) for r in page.rows]
            nxt = page.fields.found.get("next_page")
            if nxt is None or nxt.matched < 0:
                return found
            path = self.url_for(urljoin_text(frame.url, page.fields.text("next_page")))
        raise SystemException(f"{self.app_name}: more than {max_pages} result pages "
                              f"({section}.max_pages): not read as a complete list")

    async def _add_note(self, order_number: str, text: str, marker: str | None) -> bool:
        o = self.sel.order
        here = self.url_for(o.url.format(order_number=quote(order_number, safe="")))
        if self.reuse_pages and self._on_order == order_number and self.page.url == here:
            which, frame = "detail", await self.frame(o.frame)  # read moments ago, this case
        else:
            which, frame = await self._open_order(order_number)
        self._on_order = None
        if which == "not_found":
            raise UnknownPage(f"{self.app_name}: order {order_number} not found when writing "
                              f"its note ({frame.url})")
        needle = marker or " ".join(text.split())[:60]
        if o.notes.frame:  # the notes and their form in a frame of their own (one, validated)
            frame = await self.key_frame(frame, {"order.notes": o.notes,
                                                 "order.note_text": o.note_text,
                                                 "order.note_submit": o.note_submit})
        if marker and any(marker in n for n in await self.texts(frame, o.notes)):
            return False
        at = {k: where_sel[1] for k, where_sel in (await self.require_all(frame, {
            "order.note_text": o.note_text.model_copy(update={"frame": ()}),
            "order.note_submit": o.note_submit.model_copy(update={"frame": ()})})).items()}
        await frame.fill(at["order.note_text"], text)
        guards = [g for g in self._guards() if not g[0].startswith("interstitial:")]
        check = [o.notes.candidates, needle, [("not_found", o.not_found.candidates), *guards]]
        try:
            async with frame.expect_navigation(wait_until="domcontentloaded"):
                await frame.click(at["order.note_submit"])
            outcome = await frame.evaluate(NOTE_JS, check)
            if outcome is None:  # a page still filling in: wait for it a little
                handle = await frame.wait_for_function(NOTE_JS, arg=check,
                                                       timeout=self.recognise_ms, polling=50)
                outcome = await handle.json_value()
        except PlaywrightTimeout:
            outcome = None
        if outcome == "written":
            return True
        if outcome == "login":
            raise SessionExpired(f"{self.app_name}: sent to the login page writing a note")
        if outcome in ("maintenance", "server_error"):
            raise AppUnavailable(f"{self.app_name}: {outcome} page writing the note on "
                                 f"{order_number}")
        raise SystemException(f"{self.app_name}: the note on order {order_number} does not "
                              f"appear on the order after saving ({outcome or 'no note'} on "
                              f"{frame.url})")
