"""Page object for the legacy order system."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import quote

from bots.models import LineItem, OrderFacts
from bots.pages.base import LegacyApp


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

    async def notes(self, order_number: str) -> list[str]:
        await self.logged_in(lambda: self._open_order(order_number))
        return [t.strip() for t in await self.page.locator(self.sel("order", "notes"))
                .all_text_contents()]

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
        t = self.text
        items = []
        for row in await self.page.locator(self.sel("order", "line_items")).all():
            items.append(LineItem(
                sku=await t("order", "sku", row),
                name=await t("order", "item_name", row),
                category=(await t("order", "category", row)).lower(),
                unit_price=self.amount(await t("order", "unit_price", row)),
                quantity=int(await t("order", "quantity", row)),
                final_sale=(await t("order", "final_sale", row)).lower()
                == self.sel.fmt("yes", "Yes").lower(),
            ))
        order_date = self.date(await t("order", "order_date"))
        assert order_date is not None
        return OrderFacts(
            order_number=await t("order", "order_number"),
            customer_name=await t("order", "customer_name"),
            email=(await t("order", "customer_email")).lower(),
            phone=await t("order", "customer_phone"),
            order_date=order_date,
            delivery_date=self.date(await t("order", "delivery_date")),
            status=(await t("order", "status")).lower(),
            items=tuple(items),
            shipping_fee=self.amount(await t("order", "shipping_fee")),
            currency=(await t("order", "currency")).upper(),
            payment_card=await t("order", "payment_method"),
            total=self.amount(await t("order", "total")),
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
