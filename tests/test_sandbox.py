"""The sandbox legacy back-office: dataset, both apps' HTML contract, refunds, faults.

Fast: Flask's test client, no browser. One test starts the real child process.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from paths import ROOT

from bots.sandbox.data import (
    SCENARIO_KEYS,
    Dataset,
    Order,
    build_dataset,
    pick_scenarios,
    write_databases,
)
from bots.sandbox.faults import FaultConfig, FaultInjector
from bots.sandbox.orders_app import create_orders_app
from bots.sandbox.payments_app import create_payments_app
from bots.sandbox.server import SandboxProcess, prepare_data

TODAY = date(2025, 3, 14)
SEED = 7
ORDERS_USER, ORDERS_PASSWORD = "ops.bot", "sandbox-orders"
PAYMENTS_USER, PAYMENTS_PASSWORD = "refund.bot", "sandbox-payments"
VOID = {"input", "br", "meta", "hr", "img", "link", "option"}


# -- a tiny HTML reader (no dependency): elements with attributes and text ------------------

@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join("".join(self.parts).split())

    @property
    def classes(self) -> list[str]:
        return self.attrs.get("class", "").split()


class Page(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[Element] = []
        self._open: list[Element] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, {k: v or "" for k, v in attrs})
        self.elements.append(el)
        if tag not in VOID:
            self._open.append(el)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i].tag == tag:
                del self._open[i:]
                break

    def handle_data(self, data: str) -> None:
        for el in self._open:
            el.parts.append(data)

    def id(self, element_id: str) -> Element:
        found = [e for e in self.elements if e.attrs.get("id") == element_id]
        assert found, f"no #{element_id} on the page"
        return found[0]

    def has_id(self, element_id: str) -> bool:
        return any(e.attrs.get("id") == element_id for e in self.elements)

    def texts(self, cls: str) -> list[str]:
        return [e.text for e in self.elements if cls in e.classes]

    def all(self, cls: str) -> list[Element]:
        return [e for e in self.elements if cls in e.classes]


def page(response) -> Page:  # noqa: ANN001 - werkzeug TestResponse
    return Page(response.get_data(as_text=True))


# -- fixtures -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ds() -> Dataset:
    return build_dataset(seed=SEED, today=TODAY)


@pytest.fixture(scope="module")
def template_dbs(ds: Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("sandbox-template")
    write_databases(ds, folder / "orders.sqlite", folder / "payments.sqlite")
    return folder / "orders.sqlite", folder / "payments.sqlite"


@pytest.fixture
def dbs(template_dbs: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """Fresh copies per test: tests write notes and refunds."""
    return (Path(shutil.copy(template_dbs[0], tmp_path / "orders.sqlite")),
            Path(shutil.copy(template_dbs[1], tmp_path / "payments.sqlite")))


@pytest.fixture
def orders_app(dbs: tuple[Path, Path]) -> Flask:
    return create_orders_app(dbs[0])


@pytest.fixture
def payments_app(dbs: tuple[Path, Path]) -> Flask:
    return create_payments_app(dbs[1])


def csrf_of(client: FlaskClient, path: str = "/login") -> str:
    html = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def login(client: FlaskClient, user: str, password: str, next_path: str = ""):  # noqa: ANN201
    token = csrf_of(client)
    url = "/login" + (f"?next={next_path}" if next_path else "")
    return client.post(url, data={"username": user, "password": password, "csrf_token": token})


@pytest.fixture
def orders(orders_app: Flask) -> FlaskClient:
    client = orders_app.test_client()
    assert login(client, ORDERS_USER, ORDERS_PASSWORD).status_code == 302
    return client


@pytest.fixture
def payments(payments_app: Flask) -> FlaskClient:
    client = payments_app.test_client()
    assert login(client, PAYMENTS_USER, PAYMENTS_PASSWORD).status_code == 302
    return client


def eu(day: date | None) -> str:
    return day.strftime("%d/%m/%Y") if day else ""


# -- dataset --------------------------------------------------------------------------------

def test_dataset_is_deterministic_and_shaped_like_a_shop(ds: Dataset) -> None:
    assert build_dataset(seed=SEED, today=TODAY) == ds
    assert build_dataset(seed=SEED + 1, today=TODAY) != ds
    assert len(ds.customers) == 60 and 190 <= len(ds.orders) <= 210
    numbers = [o.order_number for o in ds.orders]
    assert numbers == [f"ORD-{100001 + i}" for i in range(len(ds.orders))]
    assert [o.order_date for o in ds.orders] == sorted(o.order_date for o in ds.orders)
    assert len({c.email for c in ds.customers}) == 60
    assert len({re.sub(r"\D", "", c.phone)[-9:] for c in ds.customers}) == 60
    assert {o.status for o in ds.orders} == {"processing", "shipped", "delivered", "cancelled"}
    assert {o.currency for o in ds.orders} == {"EUR", "USD", "GBP"}
    for o in ds.orders:
        assert 1 <= len(o.items) <= 3
        assert re.fullmatch(r"(VISA|MASTERCARD|AMEX) \*{4} \*{4} \*{4} \d{4}", o.payment_card)
        assert (o.delivery_date is None) == (o.status != "delivered")
        assert isinstance(o.total, Decimal) and o.total == o.items_total + o.shipping_fee
    charged = [o.order_number for o in ds.orders if o.status != "cancelled"]
    assert [c.order_number for c in ds.charges] == charged
    assert ds.charges[0].transaction_id == "TX-5000001"
    assert all(c.amount == ds.order(c.order_number).total for c in ds.charges)
    manual = ds.refunds
    assert manual and all(r.operator == "j.smith" for r in manual)
    assert any(r.reference == "manual goodwill" for r in manual)
    assert any(r.amount == ds.order(r.order_number).total for r in manual)
    assert any(r.amount < ds.order(r.order_number).total for r in manual)
    assert [r.refund_id for r in manual] == [f"RF-{i:06d}" for i in range(1, len(manual) + 1)]


def check_scenarios(ds: Dataset) -> None:
    s: dict[str, Order] = pick_scenarios(ds)
    today = ds.today
    assert list(s) == list(SCENARIO_KEYS)
    assert len({o.order_number for o in s.values()}) == len(SCENARIO_KEYS)

    def delivered_ago(o: Order) -> int:
        assert o.status == "delivered" and o.delivery_date is not None
        return (today - o.delivery_date).days

    def eligible(o: Order) -> bool:
        return (not any(i.final_sale for i in o.items) and not ds.refunds_for(o.order_number)
                and o.currency == "EUR" and ds.charge_for(o.order_number) is not None)

    for key in ("eligible", "eligible2", "duplicate"):
        assert 3 <= delivered_ago(s[key]) <= 10 and eligible(s[key]) and s[key].total < 300, key
    assert s["eligible"].customer_id != s["eligible2"].customer_id
    assert delivered_ago(s["outside_window"]) >= 60
    assert not ds.refunds_for(s["outside_window"].order_number)
    finals = [i.final_sale for i in s["final_sale"].items]
    assert delivered_ago(s["final_sale"]) <= 10 and finals.count(True) == 1 and len(finals) > 1
    assert delivered_ago(s["all_final_sale"]) <= 10
    assert all(i.final_sale for i in s["all_final_sale"].items)
    partly = ds.refunds_for(s["partly_refunded"].order_number)
    assert delivered_ago(s["partly_refunded"]) <= 10 and len(partly) == 1
    assert 0 < partly[0].amount < s["partly_refunded"].total and partly[0].operator == "j.smith"
    full = ds.refunds_for(s["fully_refunded"].order_number)
    assert delivered_ago(s["fully_refunded"]) <= 10
    assert sum(r.amount for r in full) == s["fully_refunded"].total
    nd = s["not_delivered"]
    assert nd.status == "shipped" and nd.delivery_date is None
    assert 2 <= (today - nd.order_date).days <= 4
    assert delivered_ago(s["high_value"]) <= 10 and eligible(s["high_value"])
    assert s["high_value"].total > 800
    q = s["quantity"]
    assert 3 <= delivered_ago(q) <= 10 and eligible(q)
    assert [(i.sku, i.quantity) for i in q.items] == [("HO-3004", 3)]
    assert "AP-1001" in [i.sku for i in s["eligible"].items] and len(s["eligible"].items) == 2


def test_every_scenario_is_present_with_its_properties(ds: Dataset) -> None:
    check_scenarios(ds)


@pytest.mark.parametrize("seed,today", [(1, date(2024, 2, 29)), (42, date(2026, 1, 1)),
                                        (7, date(2025, 12, 31)), (99, date(2030, 7, 15))])
def test_scenarios_hold_for_any_seed_and_day(seed: int, today: date) -> None:
    check_scenarios(build_dataset(seed=seed, today=today))


def test_databases_keep_money_as_text(dbs: tuple[Path, Path], ds: Dataset) -> None:
    with sqlite3.connect(dbs[1]) as db:
        kinds = {t for (t,) in db.execute("SELECT DISTINCT typeof(amount) FROM refunds "
                                          "UNION SELECT DISTINCT typeof(amount) FROM transactions")}
        assert kinds == {"text"}
        assert db.execute("SELECT count(*) FROM transactions").fetchone()[0] == len(ds.charges)


# -- login, sessions, CSRF ------------------------------------------------------------------

@pytest.mark.parametrize("which", ["orders", "payments"])
def test_pages_require_login(orders_app: Flask, payments_app: Flask, which: str) -> None:
    app, path = ((orders_app, "/orders/ORD-100001") if which == "orders"
                 else (payments_app, "/transactions/TX-5000001"))
    client = app.test_client()
    response = client.get(path)
    assert response.status_code == 302
    target = urlsplit(response.headers["Location"])
    assert target.path == "/login" and parse_qs(target.query) == {"next": [path]}
    login_page = page(client.get("/login"))
    for element_id in ("login-form", "login-submit"):
        assert login_page.has_id(element_id)
    assert not login_page.has_id("login-error")


def test_login_checks_password_and_csrf(orders_app: Flask) -> None:
    client = orders_app.test_client()
    wrong = login(client, ORDERS_USER, "nope")
    assert wrong.status_code == 200
    assert "Invalid username or password" in page(wrong).id("login-error").text
    forged = client.post("/login", data={"username": ORDERS_USER, "password": ORDERS_PASSWORD,
                                         "csrf_token": "forged"})
    assert page(forged).has_id("login-error")
    assert client.get("/orders").status_code == 302  # still not logged in
    ok = login(client, ORDERS_USER, ORDERS_PASSWORD, next_path="/orders/ORD-100002")
    assert ok.headers["Location"] == "/orders/ORD-100002"
    assert client.get("/orders/ORD-100002").status_code == 200
    assert login(client, ORDERS_USER, ORDERS_PASSWORD,
                 next_path="//evil.example/").headers["Location"] == "/orders"
    client.get("/logout")
    assert client.get("/orders").status_code == 302


def test_apps_use_their_own_cookies(orders_app: Flask, payments_app: Flask) -> None:
    """Both run on 127.0.0.1: browsers share cookies across ports, so names must differ."""
    assert orders_app.config["SESSION_COOKIE_NAME"] != payments_app.config["SESSION_COOKIE_NAME"]


def test_custom_users(dbs: tuple[Path, Path]) -> None:
    client = create_payments_app(dbs[1], users={"alice": "s3cret"}).test_client()
    assert login(client, PAYMENTS_USER, PAYMENTS_PASSWORD).status_code == 200
    assert login(client, "alice", "s3cret").status_code == 302


# -- order system ---------------------------------------------------------------------------

def result_numbers(response) -> list[str]:  # noqa: ANN001
    return page(response).texts("order-link")


def test_search_by_order_number_email_and_phone(orders: FlaskClient, ds: Dataset) -> None:
    order = pick_scenarios(ds)["eligible"]
    customer = ds.customer(order.customer_id)
    by_number = orders.get(f"/orders?field=order_number&q={order.order_number.lower()}")
    assert result_numbers(by_number) == [order.order_number]
    rows = page(by_number)
    assert rows.texts("customer") == [customer.name]
    assert rows.texts("email") == [customer.email]
    assert rows.texts("order-date") == [eu(order.order_date)]
    assert rows.texts("status") == ["delivered"]
    assert rows.texts("total") == [f"{order.total:,.2f}"]
    assert rows.all("order-link")[0].attrs["href"] == f"/orders/{order.order_number}"

    mine = sorted(o.order_number for o in ds.orders if o.customer_id == customer.customer_id)
    by_email = orders.get("/orders", query_string={"field": "email",
                                                   "q": f"  {customer.email.upper()} "})
    assert sorted(result_numbers(by_email)) == mine
    national = "0 " + re.sub(r"\D", "", customer.phone)[-9:]  # typed another way
    by_phone = orders.get("/orders", query_string={"field": "phone", "q": national})
    assert sorted(result_numbers(by_phone)) == mine
    nothing = orders.get("/orders", query_string={"field": "email", "q": "nobody@example.com"})
    assert page(nothing).id("no-results").text == "No orders found"
    too_short = orders.get("/orders", query_string={"field": "phone", "q": "0123"})
    assert page(too_short).has_id("no-results")


def test_search_pages_by_twenty(orders: FlaskClient, ds: Dataset) -> None:
    seen: list[str] = []
    response = orders.get("/orders?field=order_number&q=")
    while True:
        p = page(response)
        numbers = p.texts("order-link")
        assert len(numbers) <= 20 and p.has_id("search-form") and p.has_id("export-form")
        seen += numbers
        links = p.all("next-page")
        if not links:
            break
        response = orders.get(links[0].attrs["href"])
    assert sorted(seen) == sorted(o.order_number for o in ds.orders)


def test_order_detail_shows_every_field(orders: FlaskClient, ds: Dataset) -> None:
    order = pick_scenarios(ds)["final_sale"]
    customer = ds.customer(order.customer_id)
    p = page(orders.get(f"/orders/{order.order_number}"))
    expected = {
        "order-number": order.order_number, "customer-name": customer.name,
        "customer-email": customer.email, "customer-phone": customer.phone,
        "order-date": eu(order.order_date), "delivery-date": eu(order.delivery_date),
        "order-status": "delivered", "currency": "EUR",
        "shipping-fee": f"{order.shipping_fee:,.2f}", "order-total": f"{order.total:,.2f}",
        "payment-method": order.payment_card,
    }
    assert {k: p.id(k).text for k in expected} == expected
    assert p.texts("sku") == [i.sku for i in order.items]
    assert p.texts("item-name") == [i.name for i in order.items]
    assert p.texts("category") == [i.category for i in order.items]
    assert p.texts("unit-price") == [f"{i.unit_price:,.2f}" for i in order.items]
    assert p.texts("quantity") == [str(i.quantity) for i in order.items]
    assert p.texts("final-sale") == ["Yes" if i.final_sale else "No" for i in order.items]
    for element_id in ("line-items", "notes", "note-form", "note-submit"):
        assert p.has_id(element_id)

    shipped = page(orders.get(f"/orders/{pick_scenarios(ds)['not_delivered'].order_number}"))
    assert shipped.id("delivery-date").text == "" and shipped.id("order-status").text == "shipped"
    big = [o for o in ds.orders if o.total >= 1000][0]
    assert "," in page(orders.get(f"/orders/{big.order_number}")).id("order-total").text


def test_unknown_order_is_a_404_page(orders: FlaskClient) -> None:
    response = orders.get("/orders/ORD-999999")
    assert response.status_code == 404
    assert page(response).id("not-found").text == "Order not found"


def test_notes_round_trip(orders: FlaskClient, ds: Dataset) -> None:
    number = pick_scenarios(ds)["eligible"].order_number
    token = csrf_of(orders, f"/orders/{number}")
    response = orders.post(f"/orders/{number}/notes",
                           data={"note": "Refund RF-000099 issued by bot", "csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"] == f"/orders/{number}"
    p = page(orders.get(f"/orders/{number}"))
    assert p.id("flash").text == "Note added"
    note = p.texts("note")[-1]
    assert "Refund RF-000099 issued by bot" in note and "ops.bot" in note
    assert re.search(r"\d{2}/\d{2}/\d{4} \d{2}:\d{2}", note)
    orders.post(f"/orders/{number}/notes", data={"note": "forged", "csrf_token": "x"})
    assert not any("forged" in n for n in page(orders.get(f"/orders/{number}")).texts("note"))


def test_orders_export_csv(orders: FlaskClient, ds: Dataset) -> None:
    start, end = TODAY - timedelta(days=30), TODAY
    response = orders.get(f"/orders/export?from={start}&to={end}")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == (
        f"attachment; filename=orders_{start}_{end}.csv")
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert list(rows[0]) == ["order_number", "customer_name", "email", "phone", "order_date",
                             "delivery_date", "status", "currency", "total"]
    assert [r["order_number"] for r in rows] == [
        o.order_number for o in ds.orders if start <= o.order_date <= end]
    assert orders.get("/orders/export?from=&to=").status_code == 400


# -- payment portal -------------------------------------------------------------------------

def refund(client: FlaskClient, txn_id: str, amount: str, reason: str = "damaged",
           reference: str = "bot ref"):  # noqa: ANN201
    token = csrf_of(client, f"/transactions/{txn_id}")
    return client.post(f"/transactions/{txn_id}/refund", data={
        "amount": amount, "reason": reason, "reference": reference, "csrf_token": token})


def refund_rows(payments_db: Path) -> list[dict[str, object]]:
    with sqlite3.connect(payments_db) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM refunds ORDER BY id")]


def test_transaction_search_and_detail(payments: FlaskClient, ds: Dataset) -> None:
    order = pick_scenarios(ds)["partly_refunded"]
    charge = ds.charge_for(order.order_number)
    assert charge is not None
    p = page(payments.get(f"/transactions?order={order.order_number.lower()}"))
    assert p.texts("txn-link") == [charge.transaction_id]
    assert p.texts("amount") == [f"{charge.amount:.2f}"]
    assert p.texts("currency") == ["EUR"] and p.texts("status") == ["partially refunded"]
    assert page(payments.get("/transactions?order=ORD-999999")).has_id("no-results")

    t = page(payments.get(f"/transactions/{charge.transaction_id}"))
    (manual,) = ds.refunds_for(order.order_number)
    assert t.id("txn-id").text == charge.transaction_id
    assert t.id("txn-order").text == order.order_number
    assert t.id("txn-amount").text == f"{charge.amount:.2f}"
    assert t.id("txn-currency").text == "EUR" and t.id("txn-card").text == charge.card
    assert t.id("txn-refunded").text == f"{manual.amount:.2f}"
    assert t.id("txn-remaining").text == f"{charge.amount - manual.amount:.2f}"
    assert t.texts("refund-id") == [manual.refund_id]
    assert t.texts("refund-operator") == ["j.smith"]
    assert t.texts("refund-reference") == [manual.reference]
    assert t.texts("refund-created") == [manual.created_at.strftime("%Y-%m-%d %H:%M:%S")]
    submit = t.id("refund-submit")
    assert submit.attrs["onclick"] == "return confirm('Issue refund? This cannot be undone.')"
    assert t.id("refund-form").attrs["action"] == f"/transactions/{charge.transaction_id}/refund"
    reasons = [e.attrs["value"] for e in t.elements if e.tag == "option"]
    assert reasons == ["customer_request", "damaged", "not_received", "wrong_item",
                       "duplicate_charge", "other"]
    reference = next(e for e in t.elements if e.attrs.get("name") == "reference")
    assert reference.attrs["maxlength"] == "40"
    assert payments.get("/transactions/TX-0").status_code == 404


def test_refund_within_balance_is_recorded_everywhere(payments: FlaskClient, ds: Dataset,
                                                      dbs: tuple[Path, Path]) -> None:
    order = pick_scenarios(ds)["eligible"]
    charge = ds.charge_for(order.order_number)
    assert charge is not None
    before = len(refund_rows(dbs[1]))
    response = refund(payments, charge.transaction_id, "10.5", reference="RB-abc123")
    assert response.status_code == 302
    refund_id = f"RF-{before + 1:06d}"
    assert response.headers["Location"] == f"/refunds/{refund_id}"
    confirmation = page(payments.get(response.headers["Location"]))
    assert confirmation.id("refund-number").text == refund_id
    assert confirmation.id("refund-amount").text == "10.50"
    assert confirmation.id("refund-reference").text == "RB-abc123"
    assert confirmation.id("refund-txn").text == charge.transaction_id

    t = page(payments.get(f"/transactions/{charge.transaction_id}"))
    assert t.texts("refund-id") == [refund_id] and t.texts("refund-operator") == [PAYMENTS_USER]
    assert t.id("txn-remaining").text == f"{charge.amount - Decimal('10.50'):.2f}"

    today = datetime.now(UTC).date().isoformat()  # created_at is "now", in UTC
    listing = page(payments.get("/refunds"))
    assert refund_id in listing.texts("refund-id")
    assert len(listing.texts("refund-id")) == before + 1
    filtered = page(payments.get(f"/refunds?from={today}&to={today}"))
    assert filtered.texts("refund-id") == [refund_id]
    export = listing.id("export-csv").attrs["href"]
    assert export == "/refunds/export.csv?from=&to="
    csv_response = payments.get(export)
    assert csv_response.headers["Content-Disposition"].startswith("attachment; filename=")
    rows = list(csv.DictReader(io.StringIO(csv_response.get_data(as_text=True))))
    assert list(rows[0]) == ["refund_id", "transaction_id", "order_number", "amount", "currency",
                             "reason", "reference", "operator", "created_at"]
    assert rows[-1] | {"created_at": ""} == {
        "refund_id": refund_id, "transaction_id": charge.transaction_id,
        "order_number": order.order_number, "amount": "10.50", "currency": "EUR",
        "reason": "damaged", "reference": "RB-abc123", "operator": PAYMENTS_USER,
        "created_at": ""}
    stored = refund_rows(dbs[1])[-1]
    assert stored["amount"] == "10.50" and stored["operator"] == PAYMENTS_USER
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", str(stored["created_at"]))
    old = page(payments.get("/refunds?from=2000-01-01&to=2000-12-31"))
    assert old.texts("refund-id") == []


@pytest.mark.parametrize("amount", ["0", "-5", "abc", "1.234", "1e3", "NaN", ""])
def test_invalid_refund_amounts_are_refused(payments: FlaskClient, ds: Dataset,
                                            dbs: tuple[Path, Path], amount: str) -> None:
    charge = ds.charges[-1]
    before = refund_rows(dbs[1])
    response = refund(payments, charge.transaction_id, amount)
    assert response.status_code == 422
    assert page(response).has_id("refund-error")
    assert refund_rows(dbs[1]) == before


def test_refund_above_remaining_is_refused_and_writes_nothing(
        payments: FlaskClient, ds: Dataset, dbs: tuple[Path, Path]) -> None:
    order = pick_scenarios(ds)["partly_refunded"]
    charge = ds.charge_for(order.order_number)
    assert charge is not None
    remaining = charge.amount - ds.refunds_for(order.order_number)[0].amount
    before = refund_rows(dbs[1])
    response = refund(payments, charge.transaction_id, f"{remaining + Decimal('0.01'):.2f}")
    assert response.status_code == 422
    assert page(response).id("refund-error").text == (
        f"Refund amount {remaining + Decimal('0.01'):.2f} exceeds refundable balance "
        f"{remaining:.2f}")
    assert refund_rows(dbs[1]) == before
    fully = ds.charge_for(pick_scenarios(ds)["fully_refunded"].order_number)
    assert fully is not None
    assert refund(payments, fully.transaction_id, "0.01").status_code == 422


def test_second_refund_over_the_balance_is_refused(payments: FlaskClient, ds: Dataset,
                                                   dbs: tuple[Path, Path]) -> None:
    charge = ds.charge_for(pick_scenarios(ds)["duplicate"].order_number)
    assert charge is not None
    share = f"{charge.amount * Decimal('0.6'):.2f}"
    assert refund(payments, charge.transaction_id, share).status_code == 302
    second = refund(payments, charge.transaction_id, share)
    assert second.status_code == 422 and page(second).has_id("refund-error")
    # Identical refunds that fit are NOT deduplicated: the portal is legacy, the bot must.
    assert refund(payments, charge.transaction_id, "1.00", reference="same").status_code == 302
    assert refund(payments, charge.transaction_id, "1.00", reference="same").status_code == 302
    mine = [r for r in refund_rows(dbs[1]) if r["transaction_id"] == charge.transaction_id]
    assert [r["amount"] for r in mine] == [share, "1.00", "1.00"]


def test_concurrent_refunds_cannot_both_exceed_the_balance(
        payments_app: Flask, ds: Dataset, dbs: tuple[Path, Path]) -> None:
    charge = ds.charge_for(pick_scenarios(ds)["eligible2"].order_number)
    assert charge is not None
    share = f"{charge.amount * Decimal('0.6'):.2f}"
    clients = [payments_app.test_client() for _ in range(4)]
    tokens = []
    for client in clients:
        login(client, PAYMENTS_USER, PAYMENTS_PASSWORD)
        tokens.append(csrf_of(client, f"/transactions/{charge.transaction_id}"))
    statuses: list[int] = []
    barrier = threading.Barrier(len(clients))

    def post(client: FlaskClient, token: str) -> None:
        barrier.wait()
        statuses.append(client.post(f"/transactions/{charge.transaction_id}/refund", data={
            "amount": share, "reason": "other", "reference": "race", "csrf_token": token,
        }).status_code)

    threads = [threading.Thread(target=post, args=ct) for ct in zip(clients, tokens,
                                                                     strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(statuses) == [302, 422, 422, 422]
    assert sum(1 for r in refund_rows(dbs[1]) if r["transaction_id"] == charge.transaction_id) == 1


def test_refund_requires_csrf(payments: FlaskClient, ds: Dataset,
                              dbs: tuple[Path, Path]) -> None:
    before = refund_rows(dbs[1])
    response = payments.post(f"/transactions/{ds.charges[0].transaction_id}/refund",
                             data={"amount": "1.00", "reason": "other", "reference": "x",
                                   "csrf_token": "forged"})
    assert response.status_code == 400 and page(response).has_id("refund-error")
    assert refund_rows(dbs[1]) == before


# -- faults ---------------------------------------------------------------------------------

def set_faults(client: FlaskClient, **fields: object) -> dict[str, object]:
    response = client.post("/_sandbox/faults", json=fields)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_error_rate_one_answers_500_but_not_the_sandbox_endpoints(orders: FlaskClient) -> None:
    set_faults(orders, error_rate=1.0)
    for path in ("/orders", "/login", "/orders/ORD-100001"):
        response = orders.get(path)
        assert response.status_code == 500 and page(response).has_id("server-error")
    assert orders.get("/_sandbox/health").get_data(as_text=True) == "ok"
    assert orders.get("/_sandbox/faults").get_json()["error_rate"] == 1.0
    set_faults(orders, error_rate=0.0)
    assert orders.get("/orders").status_code == 200


def test_maintenance_page(payments: FlaskClient) -> None:
    set_faults(payments, maintenance=True)
    response = payments.get("/transactions")
    assert response.status_code == 503
    assert page(response).id("maintenance").text == "Scheduled maintenance"
    assert payments.get("/_sandbox/health").status_code == 200
    set_faults(payments, maintenance=False)
    assert payments.get("/transactions").status_code == 200


def test_session_expires_after_max_requests(orders_app: Flask) -> None:
    client = orders_app.test_client()
    set_faults(client, session_max_requests=3)
    login(client, ORDERS_USER, ORDERS_PASSWORD)
    for _ in range(3):
        assert client.get("/orders/ORD-100001").status_code == 200
    expired = client.get("/orders/ORD-100002")
    assert expired.status_code == 302
    target = urlsplit(expired.headers["Location"])
    assert target.path == "/login"
    assert parse_qs(target.query) == {"next": ["/orders/ORD-100002"], "expired": ["1"]}
    notice = page(client.get(expired.headers["Location"])).id("login-notice").text
    assert "Your session has expired" in notice
    assert client.get("/orders").status_code == 302  # the old session stays dead
    login(client, ORDERS_USER, ORDERS_PASSWORD)
    assert client.get("/orders").status_code == 200


def test_session_expires_after_max_age(payments: FlaskClient) -> None:
    set_faults(payments, session_max_age_s=0.0)
    response = payments.get("/transactions")
    assert response.status_code == 302 and "expired=1" in response.headers["Location"]


def test_latency_and_hangs_delay_but_answer(orders: FlaskClient) -> None:
    set_faults(orders, latency_ms=50, hang_rate=1.0, hang_seconds=0.05)
    started = time.monotonic()
    assert orders.get("/orders").status_code == 200
    assert time.monotonic() - started >= 0.1  # a lower bound: injected delay, not speed


@pytest.mark.perf
def test_the_health_page_is_never_delayed(orders: FlaskClient) -> None:
    set_faults(orders, latency_ms=50, hang_rate=1.0, hang_seconds=0.05)
    started = time.monotonic()
    assert orders.get("/_sandbox/health").status_code == 200
    assert time.monotonic() - started < 0.05


def test_faults_endpoint_validates(orders_app: Flask) -> None:
    client = orders_app.test_client()
    assert client.post("/_sandbox/faults", json={"nope": 1}).status_code == 400
    assert client.post("/_sandbox/faults", json={"error_rate": 2}).status_code == 400
    assert client.post("/_sandbox/faults", json={"maintenance": 1}).status_code == 400
    assert client.post("/_sandbox/faults", json=[1]).status_code == 400
    assert client.get("/_sandbox/faults").get_json() == FaultConfig().to_dict()
    assert set_faults(client, session_max_requests=None, seed=3)["seed"] == 3


def test_hangs_can_be_limited_to_a_path_and_a_method() -> None:
    faults = FaultInjector(FaultConfig(hang_rate=1.0, hang_seconds=7.0, hang_paths=r"/refund$",
                                       hang_methods="post"))
    assert faults.config.hang_methods == "POST"
    assert faults.decide("/transactions/T-1/refund", "POST").sleep_s == 7.0
    assert faults.decide("/transactions/T-1/refund", "GET").sleep_s == 0
    assert faults.decide("/login", "POST").sleep_s == 0
    faults.update({"hang_paths": None, "hang_methods": None})
    assert faults.decide("/login", "GET").sleep_s == 7.0


@pytest.mark.parametrize("changes", [{"hang_paths": "("}, {"hang_methods": "FETCH"},
                                     {"hang_methods": " , "}, {"hang_paths": 3}])
def test_bad_hang_filters_are_refused(orders_app: Flask, changes: dict[str, object]) -> None:
    client = orders_app.test_client()
    response = client.post("/_sandbox/faults", json=changes)
    assert response.status_code == 400 and "hang_" in response.get_json()["error"]
    with pytest.raises(ValueError, match="hang_"):
        FaultConfig(**changes)  # type: ignore[arg-type]


def test_a_sandbox_process_gets_every_fault_on_its_command_line() -> None:
    from bots.sandbox.__main__ import faults_from, parse_args
    from bots.sandbox.server import _fault_args

    wanted = FaultConfig(latency_ms=5, error_rate=0.5, error_paths="^/x", hang_rate=0.25,
                         hang_seconds=9.0, hang_paths="/refund$", hang_methods="POST",
                         session_max_age_s=60.0, session_max_requests=9, seed=4)
    assert faults_from(parse_args(_fault_args(wanted))) == wanted


def test_sandbox_command_refuses_a_bad_fault_without_a_traceback(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bots.cli import app

    result = CliRunner().invoke(app, ["sandbox", "--data-dir", str(tmp_path),
                                      "--hang-methods", "FETCH"])
    assert result.exit_code == 1 and "unknown HTTP method" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_faults_given_at_creation(dbs: tuple[Path, Path]) -> None:
    client = create_orders_app(dbs[0], faults=FaultConfig(maintenance=True)).test_client()
    assert client.get("/login").status_code == 503


# -- selectors files match the pages --------------------------------------------------------

def ids_in(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from ids_in(v)
    elif isinstance(value, str):
        yield from re.findall(r"#([\w-]+)", value)


def test_selector_files_name_only_ids_the_pages_have(orders: FlaskClient, payments: FlaskClient,
                                                     ds: Dataset) -> None:
    s = pick_scenarios(ds)
    charge = ds.charge_for(s["eligible"].order_number)
    assert charge is not None
    order_pages = [orders.get(p).get_data(as_text=True) for p in (
        "/orders", f"/orders/{s['eligible'].order_number}", "/orders/ORD-1",
        "/orders/export?from=x&to=y")]
    order_pages.append(orders.get("/login?expired=1").get_data(as_text=True))
    response = refund(payments, charge.transaction_id, "1.00")
    pay_pages = [payments.get(p).get_data(as_text=True) for p in (
        "/transactions?order=none", f"/transactions?order={charge.order_number}",
        f"/transactions/{charge.transaction_id}",
        response.headers["Location"], "/refunds", "/transactions/TX-0")]
    pay_pages += [refund(payments, charge.transaction_id, "99999").get_data(as_text=True),
                  payments.get("/login?expired=1").get_data(as_text=True)]
    order_pages.append(orders.get("/orders?field=email&q=none").get_data(as_text=True))
    for client, pages in ((orders, order_pages), (payments, pay_pages)):
        for fault in ({"maintenance": True}, {"error_rate": 1.0}):
            set_faults(client, **fault)
            pages.append(client.get("/").get_data(as_text=True))
            set_faults(client, maintenance=False, error_rate=0.0)
    detail = f"/orders/{s['eligible'].order_number}"
    orders.post(f"{detail}/notes", data={"note": "x", "csrf_token": csrf_of(orders, detail)})
    order_pages.append(orders.get(detail).get_data(as_text=True))
    for client, pages in ((orders, order_pages), (payments, pay_pages)):
        refused = login(client.application.test_client(), "x", "y")
        pages.append(refused.get_data(as_text=True))
    for name, pages in (("orders", order_pages), ("payments", pay_pages)):
        html = "\n".join(pages)
        data = yaml.safe_load((ROOT / "selectors" / f"{name}.yaml").read_text(encoding="utf-8"))
        for element_id in set(ids_in(data)):
            assert f'id="{element_id}"' in html, f"{name}.yaml names #{element_id}"


# -- the real process -----------------------------------------------------------------------

def test_sandbox_process_serves_both_apps(tmp_path: Path) -> None:
    with SandboxProcess(data_dir=tmp_path / "sb", seed=SEED, today=TODAY) as sb, \
            httpx.Client(timeout=5) as http:
        assert sb.orders_db.exists() and sb.payments_db.exists()
        for url in (sb.orders_url, sb.payments_url):
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
            assert http.get(f"{url}/_sandbox/health").text == "ok"
        sb.set_faults(maintenance=True)
        assert http.get(f"{sb.payments_url}/login").status_code == 503
        sb.set_faults(maintenance=False)
        assert http.get(f"{sb.orders_url}/orders").status_code == 302
        process = sb.process
    assert process is not None and process.poll() is not None


def test_prepare_data_keeps_data_unless_reset(tmp_path: Path) -> None:
    orders_db, payments_db = prepare_data(tmp_path, SEED, TODAY, reset=False)
    with sqlite3.connect(payments_db) as db:
        db.execute("DELETE FROM refunds")
    db.close()
    prepare_data(tmp_path, SEED, TODAY, reset=False)
    assert refund_rows(payments_db) == []
    prepare_data(tmp_path, SEED, TODAY, reset=True)
    assert refund_rows(payments_db) and orders_db.exists()
