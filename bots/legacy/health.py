"""Selector health: every key of both selector files checked on the live apps, read-only.

`refund-bots doctor --live` prints the whole report; `process` runs the same check
once before its first case and stops (exit 1) when a key the run needs is missing,
instead of failing case after case. Nothing is ever submitted: the check logs in,
opens a known order (`health.order_number`, else the first queued case's order, else
the first order a search lists), its charge and the refund export, and asks for an
order and a charge that do not exist to see the apps' "not found" pages.

Per key: found (and which selector: a fallback that matched is shown, so a UI change
the fallback absorbed is visible before it breaks), missing, empty, unparseable, or
not checked (only shown after a submit or a refusal).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote

from playwright.async_api import Error as PlaywrightError

from bots.errors import AppUnavailable, LoginRefused, SystemException
from bots.legacy.base import Found, LegacyApp, Reading, fields_of, urljoin_text
from bots.legacy.orders import ITEM_FIELDS, ORDER_FIELDS, OrdersApp
from bots.legacy.payments import CHARGE_FIELDS, HISTORY_FIELDS, PaymentsApp
from bots.legacy.selectors import LINE_PAGE_KEYS, Sel
from bots.legacy.session import BotSession

PROBE_ORDER = "HEALTH-CHECK-NO-SUCH-ORDER"
PROBE_EMAIL = "no-such-customer@health-check.invalid"
BAD = ("missing", "empty", "unparseable", "invalid selector")

# How each key is read by the page objects, so "found" means "readable" too.
_TYPED: dict[str, Callable[[Reading, str], object]] = {
    **dict.fromkeys(("shipping_fee", "total", "unit_price", "line_total", "amount",
                     "refunded", "remaining", "refund_amount"), Reading.amount),
    "order_date": Reading.required_date, "delivery_date": Reading.date,
    "final_sale": Reading.flag, "quantity": Reading.count,
}
_EMPTY_OK = {"customer_phone", "payment_method", "refund_reason", "refund_reference",
             "refund_operator"}
# Inputs and buttons: their presence is what counts, they hold no text.
_CONTROLS = {"order.note_text", "order.note_submit", "refund_form.amount", "refund_form.reason",
             "refund_form.reference", "refund_form.submit", "refund_form.confirm.modal",
             "refund_form.confirm.modal_confirm"}


@dataclass(frozen=True)
class KeyHealth:
    app: str
    key: str  # "order.status"
    state: str  # found / missing / empty / unparseable / invalid selector / not checked
    selector: str = ""  # the one that matched, or every candidate tried
    url: str = ""
    detail: str = ""
    fallback: bool = False

    @property
    def bad(self) -> bool:
        return self.state in BAD


@dataclass
class HealthReport:
    keys: list[KeyHealth] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # login refused, unknown pages...
    unavailable: list[str] = field(default_factory=list)  # apps down: not the selectors' fault

    @property
    def bad_keys(self) -> list[KeyHealth]:
        return [k for k in self.keys if k.bad]

    @property
    def ok(self) -> bool:
        return not (self.problems or self.unavailable or self.bad_keys)

    @property
    def selectors_ok(self) -> bool:
        """What `process` stops for: the selectors or credentials, not an outage."""
        return not (self.problems or self.bad_keys)

    def lines(self, only_bad: bool = False) -> list[str]:
        out = [f"{p}" for p in self.problems + self.unavailable]
        for k in self.keys:
            if only_bad and not k.bad:
                continue
            via = f" via {k.selector}" if k.selector else ""
            out.append(f"{k.app} {k.key}: {k.state}{via}"
                       + (f" ({k.detail})" if k.detail else "") + (f" on {k.url}" if k.url else ""))
        return out


class _Checker:
    def __init__(self, report: HealthReport) -> None:
        self.report = report

    def reading(self, app: str, reading: Reading, optional: tuple[str, ...] = ()) -> None:
        for name, found in reading.found.items():
            self.found(app, reading, name, found, name in optional)

    def found(self, app: str, reading: Reading, name: str, found: Found, optional: bool) -> None:
        state, detail = found.state, ""
        if found.key in _CONTROLS:
            state = "found" if found.matched >= 0 else found.state
        elif state == "missing" and optional:
            state, detail = "not checked", "not on this page (optional)"
        elif state == "empty" and (name in _EMPTY_OK or name == "delivery_date"):
            state, detail = "found", "empty"
        elif state == "unreadable":
            state, detail = "unparseable", f"shows {found.raw!r}"
        if state == "found" and found.key not in _CONTROLS and (
                typed := _TYPED.get(name)) is not None:
            try:
                typed(reading, name)
            except SystemException as exc:
                state, detail = "unparseable", str(exc).split(": ", 1)[-1]
        sel = found.sel
        where = sel.candidates[found.matched] if found.matched >= 0 else " / ".join(sel.candidates)
        if sel.frame:
            where += f" in frame {' > '.join(sel.frame)}"
        if found.matched == -3:
            detail = "its frame is not there"
        self.report.keys.append(KeyHealth(app, found.key, state, where, reading.url, detail,
                                          found.matched > 0))

    def rows(self, app: str, rows_found: Found | None, rows: list[Reading],
             cells: dict[str, Sel], section: str, url: str, may_be_empty: bool) -> None:
        if rows_found is None:
            return
        if rows_found.matched < 0 and may_be_empty:
            self.note(app, rows_found.key, "found", "no rows on this page", url, rows_found.sel)
            for name, sel in cells.items():
                self.note(app, f"{section}.{name}", "not checked", "no rows to look in", url, sel)
            return
        state = "invalid selector" if rows_found.matched == -2 else (
            "found" if rows_found.matched >= 0 else "missing")
        self.report.keys.append(KeyHealth(
            app, rows_found.key, state,
            rows_found.sel.candidates[rows_found.matched] if rows_found.matched >= 0
            else " / ".join(rows_found.sel.candidates), url, f"{len(rows)} row(s)",
            rows_found.matched > 0))
        if rows:  # every cell key from the first row; a cell missing in any row is missing
            worst = {n: next((r for r in rows if r.found[n].state != "found"), rows[0])
                     for n in cells}
            for name in cells:
                self.found(app, worst[name], name, worst[name].found[name], False)

    def note(self, app: str, key: str, state: str, detail: str, url: str = "",
             sel: Sel | None = None) -> None:
        self.report.keys.append(KeyHealth(app, key, state,
                                          " / ".join(sel.candidates) if sel else "", url, detail))


async def _step(report: HealthReport, app: LegacyApp, what: str,
                action: Callable[[], Awaitable[Any]]) -> Any:
    """Run one check; an outage or an unknown page becomes a line of the report."""
    try:
        return await app.logged_in(action)
    except LoginRefused as exc:
        report.problems.append(f"{app.app_name}: {what}: {exc} (check the username and "
                               "password secret in the settings)")
    except AppUnavailable as exc:
        report.unavailable.append(f"{app.app_name}: {what}: not answering: {exc}")
    except SystemException as exc:
        report.problems.append(f"{app.app_name}: {what}: {exc}")
    except PlaywrightError as exc:
        report.unavailable.append(f"{app.app_name}: {what}: {exc.message.splitlines()[0]}")
    return None


async def check_health(orders: OrdersApp, payments: PaymentsApp,
                       order_number: str | None) -> HealthReport:
    """Every selector key of both apps on live pages; submits nothing."""
    report = HealthReport()
    c = _Checker(report)
    apps: tuple[LegacyApp, ...] = (orders, payments)
    for app in apps:
        if await _step(report, app, "login", app.login) is None and report.problems + \
                report.unavailable:
            return report  # nothing else can be checked without a session
        c.note(app_label(app), "login.*", "found", "logged in")
    number = order_number
    if not number:
        try:
            number = await orders.logged_in(lambda: _first_order(orders))
        except SystemException:
            number = None  # an app that lists nothing for an empty search: said below
    if not number:
        report.problems.append("order system: no order to check the pages on (an empty "
                               "search lists none): set health.order_number in the settings")
        return report
    contact = await _step(report, orders, f"order {number}", lambda: _order(c, orders, number))
    await _step(report, orders, "order not found page", lambda: _order_missing(c, orders))
    if contact:
        email, phone = contact
        await _step(report, orders, "search pages",
                    lambda: _search_pages(c, orders, email, phone))
        await _step(report, orders, "search", lambda: _search(c, orders, email))
    await _step(report, payments, f"charge of {number}", lambda: _charge(c, payments, number))
    await _step(report, payments, "refund export", lambda: _export(c, payments))
    for key in ("confirmation.refund_number", "confirmation.amount", "confirmation.reference",
                "refund_form.error", "refund_form.confirm"):
        c.note("payments", key, "not checked", "only shown after a submit (never done here)")
    return report


def app_label(app: LegacyApp) -> str:
    return "orders" if isinstance(app, OrdersApp) else "payments"


async def _first_order(orders: OrdersApp) -> str | None:
    s = orders.sel.search
    path = s.url.format(field=s.field_values.get("email", ""), query="")
    which, frame = await orders.open(path, {"results": s.results, "no_results": s.no_results})
    if which != "results":
        return None
    page = await orders.read_page(frame, "search", {}, ("rows", s.rows,
                                                        {"order_number": s.order_number}))
    return page.rows[0].found["order_number"].value if page.rows else None


async def _order(c: _Checker, orders: OrdersApp, number: str) -> tuple[str, str] | None:
    which, frame = await orders._open_order(number)
    o = orders.sel.order
    if which == "not_found":
        c.report.problems.append(f"order system: order {number} shows the not-found page "
                                 f"({frame.url}): set health.order_number to a real order")
        return None
    c.note("orders", "order.detail", "found", "", frame.url, o.detail)
    cells = fields_of(o, ITEM_FIELDS)
    if o.line_page is not None:
        cells["line_page.link"] = o.line_page.link
    page = await orders.read_page(frame, "order", fields_of(o, ORDER_FIELDS),
                                  ("line_items", o.line_items, cells))
    c.reading("orders", page.fields)
    c.rows("orders", page.rows_found, page.rows, cells, "order", frame.url, False)
    form = await orders.read_page(frame, "order", {"notes": o.notes, "note_text": o.note_text,
                                                   "note_submit": o.note_submit})
    c.reading("orders", form.fields, optional=("notes",))  # an order may have no notes yet
    email, phone = (page.fields.found[k].value for k in ("customer_email", "customer_phone"))
    if o.line_page is not None and page.rows:
        await _line_page(c, orders, page.rows[0])
    return (email, phone or "") if email else None


async def _line_page(c: _Checker, orders: OrdersApp, row: Reading) -> None:
    """The first line's own page (`order.line_page`), opened from its link."""
    lp = orders.sel.order.line_page
    href = row.found["line_page.link"].value
    if lp is None or not href:
        return  # the link itself is reported missing with the row's keys
    which, frame = await orders.open(orders.url_for(urljoin_text(row.url, href)),
                                     {"detail": lp.detail, "not_found": lp.not_found}, lp.frame)
    c.note("orders", "order.line_page.detail", "found" if which == "detail" else "missing",
           "the first line's own page", frame.url, lp.detail)
    if which == "detail":
        got = await orders.read_page(frame, "order.line_page",
                                     fields_of(lp, ("sku", *LINE_PAGE_KEYS)))
        c.reading("orders", got.fields)


async def _order_missing(c: _Checker, orders: OrdersApp) -> None:
    which, frame = await orders._open_order(PROBE_ORDER)
    c.note("orders", "order.not_found", "found" if which == "not_found" else "missing",
           "an order that does not exist", frame.url, orders.sel.order.not_found)


async def _search_pages(c: _Checker, orders: OrdersApp, email: str, phone: str) -> None:
    """The keys of the result pages: the plain search, and the customer hop if any."""
    s, hop = orders.sel.search, orders.sel.customer_search
    plain = [k for k in s.field_values if hop is None or k not in hop.kinds]
    if plain:
        query = email if plain[0] == "email" else phone
        which, frame = await orders.open(
            s.url.format(field=quote(s.field_values[plain[0]]), query=quote(query, safe="")),
            {"results": s.results, "no_results": s.no_results})
        if which == "results":
            cells = {"order_number": s.order_number, "total": s.total}
            page = await orders.read_page(frame, "search", fields_of(s, ("next_page",)),
                                          ("rows", s.rows, cells))
            c.reading("orders", page.fields, optional=("next_page",))
            c.rows("orders", page.rows_found, page.rows, cells, "search", frame.url, False)
        else:
            c.note("orders", "search.rows", "not checked", f"no {plain[0]} results to read",
                   frame.url, s.rows)
    if hop is not None:
        which, frame = await orders.open(hop.url.format(query=quote(email, safe="")),
                                         {"results": hop.results, "no_results": hop.no_results})
        page = await orders.read_page(frame, "customer_search", {}, ("rows", hop.rows,
                                                                      {"link": hop.link}))
        c.rows("orders", page.rows_found, page.rows, {"link": hop.link}, "customer_search",
               frame.url, False)
        if page.rows and (link := page.rows[0].found["link"].value):
            which, frame = await orders.open(urljoin_text(frame.url, link),
                                             {"detail": hop.detail})
            cells = {"order_number": hop.order_number, "total": hop.total}
            got = await orders.read_page(frame, "customer_search", fields_of(hop, (
                "next_page",)), ("order_rows", hop.order_rows, cells))
            c.reading("orders", got.fields, optional=("next_page",))
            c.rows("orders", got.rows_found, got.rows, cells, "customer_search", frame.url,
                   False)


async def _search(c: _Checker, orders: OrdersApp, email: str) -> None:
    hits = await orders.search_orders("email", email)
    c.note("orders", "search (by email)", "found" if hits else "missing",
           f"{len(hits)} order(s) for the order's own email", orders.page.url)
    none = await orders.search_orders("email", PROBE_EMAIL)
    c.note("orders", "search (no results)", "found" if not none else "unparseable",
           "an email nobody has", orders.page.url)


async def _charge(c: _Checker, payments: PaymentsApp, number: str) -> None:
    t = payments.sel.transaction
    charge = await payments.find_charge(number)
    if charge is None:
        c.report.problems.append(f"payment portal: no charge for order {number} (its 'no "
                                 "results' page): pick another health.order_number")
        return
    frame = await payments.frame(t.frame)
    cells = fields_of(t, HISTORY_FIELDS)
    page = await payments.read_page(frame, "transaction", fields_of(t, CHARGE_FIELDS),
                                    ("history_rows", t.history_rows, cells))
    c.reading("payments", page.fields)
    c.rows("payments", page.rows_found, page.rows, cells, "transaction", frame.url, True)
    f = payments.sel.refund_form
    form = await payments.read_page(frame, "refund_form", {
        "amount": f.amount, "reason": f.reason, "reference": f.reference, "submit": f.submit,
        **({"confirm.modal": f.confirm.modal} if f.confirm.modal else {}),
        **({"confirm.modal_confirm": f.confirm.modal_confirm} if f.confirm.modal_confirm
           else {})})
    c.reading("payments", form.fields)
    none = await payments.find_charge(PROBE_ORDER)
    c.note("payments", "search.no_results", "found" if none is None else "unparseable",
           "an order without a charge", payments.page.url, payments.sel.search.no_results)


async def _export(c: _Checker, payments: PaymentsApp) -> None:
    today = date.today()
    await payments.list_refunds(today - timedelta(days=1), today)
    c.note("payments", "refunds.csv_columns", "found", "the export has every column")


async def live_report(session: BotSession, order_number: str | None) -> HealthReport:
    """The health of both apps' selectors, in a browser context of its own."""
    worker = await session.worker("health")
    try:
        return await check_health(worker.orders, worker.payments, order_number)
    finally:
        await worker.context.close()


async def preflight(session: BotSession, order_number: str | None,
                    say: Callable[[str], object]) -> bool:
    """`process` before its first case: False (and the report's bad lines said) to stop.

    An outage is not the selectors' fault: the run goes on and its retries and circuit
    breaker deal with it.
    """
    report = await live_report(session, order_number)
    if report.selectors_ok:
        return True
    say("Selector health check failed before the first case (nothing was processed):")
    for line in report.lines(only_bad=True):
        say(f"  {line}")
    say("Fix the selectors or settings (`refund-bots doctor --live` shows every key).")
    return False
