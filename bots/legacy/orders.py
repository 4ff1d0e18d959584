"""Page object for the legacy order system."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import quote

from bots.legacy.base import LegacyApp
from bots.models import LineItem, OrderFacts

ORDER_FIELDS = ("order_number", "customer_name", "customer_email", "customer_phone",
                "order_date", "delivery_date", "status", "currency", "shipping_fee", "total",
                "payment_method")
ITEM_FIELDS = ("sku", "item_name", "category", "unit_price", "quantity", "final_sale")


@dataclass(frozen=True)
class OrderHit:
    """One row of the order search results."""

    order_number: str
    total: Decimal


class OrdersApp(LegacyApp):
    app_name = "order system"

    async def find_order(self, order_number: str) -> OrderFacts | None:
        """Open the order's detail page and read it; None when the system has no such order."""
        return await self.logged_in(lambda: self._read_order(order_number))

    async def search_orders(self, field: str, query: str) -> list[OrderHit]:
        """Orders matching a customer email or phone (all result pages), with their totals."""
        return await self.logged_in(lambda: self._search(field, query))

    async def add_note(self, order_number: str, text: str, marker: str | None = None) -> bool:
        """Write a note on the order, as an agent would after a refund.

        With a `marker`, a note already containing it means the note was written
        by an earlier attempt: nothing is added and False is returned.
        """
        return await self.logged_in(lambda: self._add_note(order_number, text, marker))

    # -- steps -------------------------------------------------------------------------

    async def _open_order(self, order_number: str) -> bool:
        path = self.sel("order", "url").format(order_number=quote(order_number, safe=""))
        response = await self.open(path)
        if response is not None and response.status == 404:
            return False
        return not await self.page.locator(self.sel("order", "not_found")).count()

    async def _read_order(self, order_number: str) -> OrderFacts | None:
        if not await self._open_order(order_number):
            return None
        f, rows = await self.read("order", ORDER_FIELDS, ("line_items", ITEM_FIELDS))
        yes = self.sel.fmt("yes", "Yes").lower()
        items = tuple(LineItem(sku=r["sku"], name=r["item_name"], category=r["category"].lower(),
                               unit_price=self.amount(r["unit_price"]),
                               quantity=int(r["quantity"]),
                               final_sale=r["final_sale"].lower() == yes) for r in rows)
        order_date = self.date(f["order_date"])
        assert order_date is not None
        return OrderFacts(
            order_number=f["order_number"], customer_name=f["customer_name"],
            email=f["customer_email"].lower(), phone=f["customer_phone"], order_date=order_date,
            delivery_date=self.date(f["delivery_date"]), status=f["status"].lower(),
            items=items, shipping_fee=self.amount(f["shipping_fee"]),
            currency=f["currency"].upper(), payment_card=f["payment_method"],
            total=self.amount(f["total"]),
        )

    async def _search(self, field: str, query: str) -> list[OrderHit]:
        path = self.sel("search", "url").format(field=quote(field), query=quote(query, safe=""))
        await self.open(path)
        found: list[OrderHit] = []
        while True:
            for row in await self.page.locator(self.sel("search", "rows")).all():
                found.append(OrderHit(await self.text("search", "order_link", row),
                                      self.amount(await self.text("search", "total", row))))
            next_link = self.page.locator(self.sel("search", "next_page"))
            if not await next_link.count():
                return found
            href = await next_link.first.get_attribute("href")
            await self.open(href if href and href.startswith("/") else f"/orders{href or ''}")

    async def _add_note(self, order_number: str, text: str, marker: str | None) -> bool:
        if not await self._open_order(order_number):
            return False
        if marker:
            notes = await self.page.locator(self.sel("order", "notes")).all_text_contents()
            if any(marker in n for n in notes):
                return False
        await self.page.fill(self.sel("order", "note_text"), text)
        async with self.page.expect_navigation(wait_until="domcontentloaded") as nav:
            await self.page.click(self.sel("order", "note_submit"))
        await self.check_page(await nav.value)
        return True
