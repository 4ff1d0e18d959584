"""Page object for the legacy payment portal."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, date
from decimal import Decimal
from urllib.parse import quote, unquote, urlsplit

from playwright.async_api import Dialog

from bots.errors import RefundRefused, SessionExpired
from bots.legacy.base import LegacyApp
from bots.models import ChargeFacts, PortalRefund

CHARGE_FIELDS = ("txn_id", "order_number", "amount", "currency", "refunded")
HISTORY_FIELDS = ("refund_id", "refund_amount", "refund_reason", "refund_reference",
                  "refund_operator", "refund_created")


class PaymentsApp(LegacyApp):
    app_name = "payment portal"

    async def find_charge(self, order_number: str) -> ChargeFacts | None:
        """The charge behind an order with its refund history; None when there is none."""
        return await self.logged_in(lambda: self._find_charge(order_number))

    async def read_charge(self, transaction_id: str) -> ChargeFacts:
        """Re-read one transaction page (fresh balance and refund history)."""
        return await self.logged_in(lambda: self._read_charge(transaction_id))

    async def submit_refund(self, transaction_id: str, amount: Decimal, reason: str,
                            reference: str,
                            before_click: Callable[[], Awaitable[None]] | None = None) -> str:
        """Fill and confirm the refund form; return the portal's refund number.

        `before_click` runs right before the final click (the caller's last check that it
        may still pay: if it raises, nothing is submitted). Not retried here on an expired
        session: whether the click went through is for the caller to verify against the
        refund history, by reference.
        """
        await self._open_transaction(transaction_id)
        sel = self.sel
        await self.page.fill(sel("refund_form", "amount"), f"{amount:.2f}")
        await self.page.select_option(sel("refund_form", "reason"), self._reason_value(reason))
        await self.page.fill(sel("refund_form", "reference"), reference)

        async def accept(dialog: Dialog) -> None:
            await dialog.accept()

        if before_click is not None:
            await before_click()
        self.page.once("dialog", accept)
        async with self.page.expect_navigation(wait_until="domcontentloaded") as nav:
            await self.page.click(sel("refund_form", "submit"))
        response = await nav.value
        made = self._refund_in_url(self.page.url)
        if made and response is not None and response.status >= 500:
            # The portal made the refund and sent us to its confirmation page, which then
            # failed: the number is in the address. Another attempt would only find it.
            return made
        await self.check_page(response)
        error = self.page.locator(sel("refund_form", "error"))
        if await error.count():
            raise RefundRefused(f"portal refused the refund: {(await error.first.inner_text())}")
        return await self.text("confirmation", "refund_number")

    async def list_refunds(self, start: date, end: date) -> list[PortalRefund]:
        """Every refund the portal shows between two dates, from its CSV export."""
        return await self.logged_in(lambda: self._export_refunds(start, end))

    # -- steps -------------------------------------------------------------------------

    def _refund_in_url(self, url: str) -> str | None:
        """The refund number when `url` is a confirmation page (`confirmation.url`)."""
        template = self.sel("confirmation", "url")
        head, _, tail = template.partition("{refund_id}")
        if not _:
            return None
        if not url.startswith(self.base_url + "/"):
            return None
        m = re.fullmatch(re.escape(head) + r"(?P<id>[^/?#]+)" + re.escape(tail),
                         urlsplit(url[len(self.base_url):]).path)
        return unquote(m["id"]) if m else None

    def _reason_value(self, reason: str) -> str:
        mapping = self.sel.data.get("refund_form", {}).get("reason_map", {})
        return str(mapping.get(reason, mapping.get("other", reason)))

    async def _find_charge(self, order_number: str) -> ChargeFacts | None:
        path = self.sel("search", "url").format(order_number=quote(order_number, safe=""))
        await self.open(path)
        rows = self.page.locator(self.sel("search", "rows"))
        links = rows.locator(self.sel("search", "txn_link"))
        if not await links.count():
            return None
        return await self._read_charge((await links.first.inner_text()).strip())

    async def _open_transaction(self, transaction_id: str) -> None:
        path = self.sel("transaction", "url").format(transaction_id=quote(transaction_id, safe=""))
        await self.open(path)

    async def _read_charge(self, transaction_id: str) -> ChargeFacts:
        await self._open_transaction(transaction_id)
        f, rows = await self.read("transaction", CHARGE_FIELDS, ("history_rows", HISTORY_FIELDS))
        currency = f["currency"].upper()
        refunds = tuple(PortalRefund(
            refund_id=r["refund_id"], amount=self.amount(r["refund_amount"]),
            reason=r["refund_reason"], reference=r["refund_reference"],
            operator=r["refund_operator"],
            created_at=self.datetime(r["refund_created"]).replace(tzinfo=UTC),
            order_number=f["order_number"], currency=currency,
            transaction_id=f["txn_id"]) for r in rows)
        return ChargeFacts(transaction_id=f["txn_id"], order_number=f["order_number"],
                           amount=self.amount(f["amount"]), currency=currency,
                           refunded=self.amount(f["refunded"]), refunds=refunds)

    async def _export_refunds(self, start: date, end: date) -> list[PortalRefund]:
        path = self.sel("refunds", "url").format(start=start.isoformat(), end=end.isoformat())
        await self.open(path)
        async with self.page.expect_download() as info:
            await self.page.click(self.sel("refunds", "export_link"))
        download = await info.value
        with open(await download.path(), encoding="utf-8-sig") as fh:
            text = fh.read()
        if text.lstrip().startswith("<"):
            raise SessionExpired("payment portal: export returned a page, not CSV")
        return [self._refund_from_csv(row) for row in csv.DictReader(io.StringIO(text))]

    def _refund_from_csv(self, row: dict[str, str]) -> PortalRefund:
        cols = self.sel.data.get("refunds", {}).get("csv_columns", {})

        def col(name: str) -> str:
            return (row.get(cols.get(name, name)) or "").strip()

        return PortalRefund(
            refund_id=col("refund_id"), amount=self.amount(col("amount")),
            reason=col("reason"), reference=col("reference"), operator=col("operator"),
            created_at=self.datetime(col("created_at")).replace(tzinfo=UTC),
            order_number=col("order_number"), currency=col("currency"),
            transaction_id=col("transaction_id"),
        )
