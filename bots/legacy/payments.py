"""Page object for the legacy payment portal."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from urllib.parse import quote

from playwright.async_api import Dialog, Frame, Response
from playwright.async_api import TimeoutError as PlaywrightTimeout

from bots.errors import (
    AmbiguousOutcome,
    AppUnavailable,
    NoAnswer,
    RefundRefused,
    SelectorMissing,
    SessionExpired,
    SystemException,
    TooLateToSubmit,
    UnknownPage,
    UnreadableValue,
)
from bots.legacy.base import LegacyApp, fields_of
from bots.legacy.selectors import VALUE_GROUP, PaymentsSelectors
from bots.models import ChargeFacts, PortalRefund

CHARGE_FIELDS = ("txn_id", "order_number", "amount", "currency", "refunded", "remaining")
HISTORY_FIELDS = ("refund_id", "refund_amount", "refund_reason", "refund_reference",
                  "refund_operator", "refund_created")


class PaymentsApp(LegacyApp):
    app_name = "payment portal"
    sel: PaymentsSelectors
    _on_transaction: str | None = None  # the transaction page just read, still shown

    async def find_charge(self, order_number: str) -> ChargeFacts | None:
        """The charge behind an order with its refund history.

        None only when the portal's own "no results" page is recognised.
        """
        return await self.logged_in(lambda: self._find_charge(order_number))

    async def read_charge(self, transaction_id: str) -> ChargeFacts:
        """Re-read one transaction page (fresh balance and refund history)."""
        return await self.logged_in(lambda: self._read_charge(transaction_id))

    async def submit_refund(self, transaction_id: str, amount: Decimal, reason: str,
                            reference: str,
                            before_click: Callable[[], Awaitable[float | None]] | None = None
                            ) -> str:
        """Fill and confirm the refund form; return the portal's refund number.

        `before_click` runs right before the final click (the caller's last check that it
        may still pay: if it raises, nothing is submitted). It may return a deadline
        (`time.monotonic()` seconds): the click, the dialog's OK and the modal's confirm
        that commit the refund are each done only before it, else declined and
        TooLateToSubmit raised (nothing submitted). Not retried here on an expired
        session: whether the click went through is for the caller to verify against the
        refund history, by reference. A landing
        page that is neither the confirmation nor the refusal is a SystemException:
        the next attempt reads the history first.
        """
        form = self.sel.refund_form
        if len(reference) > form.reference_max_length:
            raise SystemException(f"{self.app_name}: reference {reference!r} is longer than "
                                  f"refund_form.reference_max_length ({form.reference_max_length})"
                                  ": the portal would cut the idempotency key")
        await self.to_front()
        frame = await self._transaction_frame(transaction_id)
        at = await self.require_all(frame, {
            "refund_form.amount": form.amount, "refund_form.reason": form.reason,
            "refund_form.reference": form.reference, "refund_form.submit": form.submit})
        where, sel = at["refund_form.amount"]
        await where.fill(sel, self.fmt.amount.format_input(amount))
        where, sel = at["refund_form.reason"]
        await where.select_option(sel, self._reason_value(reason))
        where, sel = at["refund_form.reference"]
        await where.fill(sel, reference)
        self._on_transaction = None
        deadline = await before_click() if before_click is not None else None
        # A form in a frame of its own answers as the whole page (target="_top").
        answers = self.page.main_frame if form.submit.frame else frame
        response = await self._confirm_and_submit(frame, at["refund_form.submit"], answers,
                                                  deadline)
        return await self._refund_number(answers, response, amount, reference)

    async def list_refunds(self, start: date, end: date) -> list[PortalRefund]:
        """Every refund the portal shows between two dates, from its CSV export."""
        return await self.logged_in(lambda: self._export_refunds(start, end))

    # -- steps -------------------------------------------------------------------------

    def _reason_value(self, reason: str) -> str:
        mapping = self.sel.refund_form.reason_map
        return mapping.get(reason, mapping["other"])

    async def _find_charge(self, order_number: str) -> ChargeFacts | None:
        s = self.sel.search
        which, frame = await self.open_to_read(
            s.url.format(order_number=quote(order_number, safe="")),
            {"results": s.results, "no_results": s.no_results}, [s.rows, s.txn_id, s.order_number])
        if which == "no_results":
            return None
        page = await self.read_page(frame, "search", {}, (
            "rows", s.rows, {"txn_id": s.txn_id, "order_number": s.order_number}))
        ours = [r.text("txn_id") for r in page.rows
                if r.text("order_number").lower() == order_number.lower()]
        if not ours:
            raise UnknownPage(f"{self.app_name}: the results page lists no transaction for "
                              f"order {order_number} ({len(page.rows)} row(s), {frame.url})")
        return await self._read_charge(ours[0])

    async def _open_transaction(self, transaction_id: str) -> Frame:
        t = self.sel.transaction
        path = t.url.format(transaction_id=quote(transaction_id, safe=""))
        self._on_transaction = None
        which, frame = await self.open(path, {"detail": t.detail, "not_found": t.not_found},
                                       t.frame)
        if which == "not_found":
            raise UnknownPage(f"{self.app_name}: transaction {transaction_id} not found "
                              f"({frame.url})")
        return frame

    async def _transaction_frame(self, transaction_id: str) -> Frame:
        """The transaction's page: the one just read if still shown, else loaded again."""
        t = self.sel.transaction
        here = self.url_for(t.url.format(transaction_id=quote(transaction_id, safe="")))
        if self.reuse_pages and self._on_transaction == transaction_id and self.page.url == here:
            return await self.frame(t.frame)
        return await self._open_transaction(transaction_id)

    async def _read_charge(self, transaction_id: str) -> ChargeFacts:
        frame = await self._open_transaction(transaction_id)
        t = self.sel.transaction
        page = await self.read_page(frame, "transaction", fields_of(t, CHARGE_FIELDS), (
            "history_rows", t.history_rows, fields_of(t, HISTORY_FIELDS)))
        f = page.fields
        txn_id, order_number = f.text("txn_id"), f.text("order_number")
        if txn_id.lower() != transaction_id.lower():
            raise UnknownPage(f"{self.app_name}: asked for transaction {transaction_id}, the "
                              f"page shows {txn_id!r} ({frame.url})")
        currency = f.text("currency").upper()
        amount, refunded = f.amount("amount"), f.amount("refunded")
        if t.remaining is not None and f.amount("remaining") != amount - refunded:
            raise UnreadableValue(f"{self.app_name}: transaction.remaining "
                                  f"{f.amount('remaining')} is not amount {amount} - refunded "
                                  f"{refunded} ({frame.url})")
        refunds = tuple(PortalRefund(
            refund_id=r.text("refund_id"), amount=r.amount("refund_amount"),
            reason=r.text("refund_reason", empty_ok=True),
            reference=r.text("refund_reference", empty_ok=True),
            operator=r.text("refund_operator", empty_ok=True),
            created_at=r.datetime("refund_created", self.fmt.datetime).replace(tzinfo=UTC),
            order_number=order_number, currency=currency,
            transaction_id=txn_id) for r in page.rows)
        if sum((r.amount for r in refunds), Decimal("0.00")) != refunded:
            raise UnreadableValue(f"{self.app_name}: the refund history ({len(refunds)} row(s)) "
                                  f"does not add up to refunded {refunded} ({frame.url}): "
                                  "transaction.history_rows may miss rows")
        self._on_transaction = transaction_id
        return ChargeFacts(transaction_id=txn_id, order_number=order_number, amount=amount,
                           currency=currency, refunded=refunded, refunds=refunds)

    async def _confirm_and_submit(self, frame: Frame, submit: tuple[Frame, str],
                                  answers: Frame, deadline: float | None = None
                                  ) -> Response | None:
        """Click submit, get past the window.confirm() and/or HTML modal, wait for the answer
        (a navigation of `answers`: the page's frame, or the whole page).

        Each step that can commit the refund checks `deadline` first (see submit_refund).
        """
        confirm = self.sel.refund_form.confirm
        unexpected: list[str] = []
        late: list[str] = []

        def too_late(step: str) -> bool:
            if deadline is not None and time.monotonic() > deadline:
                late.append(step)
                return True
            return False

        def late_error() -> TooLateToSubmit:
            return TooLateToSubmit(
                f"{self.app_name}: {late[0]} declined: the last check before the submit is "
                f"{time.monotonic() - (deadline or 0):.0f}s past its deadline (the runner was "
                f"paused); nothing was submitted")

        async def on_dialog(dialog: Dialog) -> None:
            if confirm.dialog_text is not None and dialog.message.strip() == confirm.dialog_text:
                if too_late("the confirmation dialog"):
                    await dialog.dismiss()
                else:
                    await dialog.accept()
            else:  # a question nobody described: say no, nothing is submitted
                unexpected.append(dialog.message)
                await dialog.dismiss()

        if too_late("the submit click"):
            raise late_error()
        self.page.on("dialog", on_dialog)
        try:
            async with answers.expect_navigation(wait_until="domcontentloaded") as nav:
                await submit[0].click(submit[1])
                if late:
                    raise late_error()
                if confirm.modal is not None and confirm.modal_confirm is not None:
                    try:
                        modal = await self.key_frame(frame, {"refund_form.confirm.modal":
                                                             confirm.modal}) \
                            if confirm.modal.frame else frame
                        await modal.wait_for_selector(", ".join(confirm.modal.candidates),
                                                      state="visible",
                                                      timeout=self.recognise_ms)
                    except (PlaywrightTimeout, SelectorMissing):
                        raise SelectorMissing(
                            f"{self.app_name}: the confirmation modal (refund_form.confirm."
                            f"modal) did not appear ({frame.url}): nothing was confirmed"
                        ) from None
                    where, button = await self.require(frame, confirm.modal_confirm,
                                                       "refund_form.confirm.modal_confirm")
                    if too_late("the confirmation modal"):
                        raise late_error()
                    await where.click(button)
            return await nav.value
        except PlaywrightTimeout as exc:
            if late:
                raise late_error() from exc
            if unexpected:
                raise UnknownPage(f"{self.app_name}: unexpected dialog {unexpected[0]!r} "
                                  "dismissed: nothing was submitted") from exc
            raise NoAnswer(f"{self.app_name}: the refund submit did not answer in time") from exc
        finally:
            self.page.remove_listener("dialog", on_dialog)

    def _number_in_url(self, url: str) -> str | None:
        pattern = self.sel.confirmation.url_pattern
        if pattern is None or not url.startswith(self.base_url + "/"):
            return None
        m = re.search(pattern, url[len(self.base_url):])
        return m.group(VALUE_GROUP) if m else None

    async def _refund_number(self, frame: Frame, response: Response | None, amount: Decimal,
                             reference: str) -> str:
        c, form = self.sel.confirmation, self.sel.refund_form
        in_url = self._number_in_url(frame.url)
        if in_url and response is not None and response.status >= 500:
            # The portal made the refund and sent us to its confirmation page, which then
            # failed: the number is in the address. Another attempt would only find it.
            return in_url
        which, frame = await self.recognise({"confirmation": c.refund_number,
                                             "refused": form.error}, (), response)
        if which == "refused":
            read = await self.read_page(frame, "refund_form", {"error": form.error})
            raise RefundRefused(f"portal refused the refund: {read.fields.text('error')}")
        read = await self.read_page(frame, "confirmation",
                                    fields_of(c, ("refund_number", "amount", "reference")))
        f = read.fields
        number = f.text("refund_number")
        problems = []
        if in_url and in_url != number:
            problems.append(f"the address says {in_url}")
        if c.amount is not None and f.amount("amount") != amount:
            problems.append(f"confirmation.amount shows {f.amount('amount')}, not {amount}")
        if c.reference is not None and reference not in f.text("reference"):
            problems.append(f"confirmation.reference does not show {reference}")
        if problems:
            raise AmbiguousOutcome(f"refund {number} confirmed, but {'; '.join(problems)}: "
                                   "a human must check the portal")
        return number

    async def _export_refunds(self, start: date, end: date) -> list[PortalRefund]:
        """The CSV export, fetched with the browser's session (no page load, no download)."""
        r, fmt = self.sel.refunds, self.fmt
        path = r.url.format(start=start.strftime(fmt.url_date), end=end.strftime(fmt.url_date))
        response = await self.page.context.request.get(self.url_for(path))
        body = await response.body()
        if response.status >= 500:
            raise AppUnavailable(f"{self.app_name}: HTTP {response.status} on the export")
        try:
            text = body.decode(fmt.csv.encoding)
        except UnicodeDecodeError as exc:
            raise UnreadableValue(f"{self.app_name}: the export is not "
                                  f"{fmt.csv.encoding} (formats.csv.encoding)") from exc
        if "html" in response.headers.get("content-type", "") or text.lstrip().startswith("<"):
            if any(c.strip("#.") in text for c in self.sel.login.form.candidates):
                raise SessionExpired(f"{self.app_name}: the export answered the login page")
            raise UnknownPage(f"{self.app_name}: the export answered a page, not CSV "
                              f"(HTTP {response.status}, {response.url})")
        reader = csv.DictReader(io.StringIO(text), delimiter=fmt.csv.delimiter,
                                quotechar=fmt.csv.quotechar)
        missing = [f"refunds.csv_columns.{k} ({v!r})" for k, v in r.csv_columns.items()
                   if v not in (reader.fieldnames or [])]
        if missing:
            raise SelectorMissing(f"{self.app_name}: the export has no column "
                                  f"{', '.join(missing)}; its header: {reader.fieldnames}")
        return [self._refund_from_csv(row) for row in reader]

    def _refund_from_csv(self, row: dict[str, str]) -> PortalRefund:
        cols = self.sel.refunds.csv_columns
        fmt = self.fmt
        amounts = fmt.csv.amount or fmt.amount

        def col(name: str) -> str:
            return (row.get(cols[name]) or "").strip()

        amount = amounts.parse(col("amount"))
        try:
            created = datetime.strptime(col("created_at"), fmt.csv.datetime or fmt.datetime)
        except ValueError:
            created = None
        if amount is None or created is None or not col("refund_id"):
            raise UnreadableValue(f"{self.app_name}: export row {row} has an unreadable "
                                  "refund_id, amount or created_at (formats.csv)")
        return PortalRefund(
            refund_id=col("refund_id"), amount=amount, reason=col("reason"),
            reference=col("reference"), operator=col("operator"),
            created_at=created.replace(tzinfo=UTC), order_number=col("order_number"),
            currency=col("currency"), transaction_id=col("transaction_id"),
        )
