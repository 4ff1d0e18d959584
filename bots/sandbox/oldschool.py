"""The "oldschool" skin: the same two back-offices, built as a hostile legacy vendor would.

Same databases and business rules as the default skin, other everything else, so that
the bots are proven to adapt by selector files only (`selectors/examples/oldschool/`):
other URLs, ids, classes and form field names; German formats (`1.234,56 €`,
`31.01.2025`, "k. A." for no date, `Ja`/`Nein`); order lines as a div grid with line
totals only (no unit price); status as an icon's `title`, in a frame of its own nested in
the order's; categories as codes and the final-sale flag only on each line's own page
(linked from the line); the order detail inside an `<iframe>`; the refund form in an
`<iframe>` of its own (the rest of the transaction page is not framed); a news page
(orders) and a password notice (payments) after login that must be clicked through;
relative "next" links, three rows a page; email search only through the customer's
page; the refund behind an HTML modal instead of `window.confirm`; the refund number
only in a flash message on the next page and in that page's address
(`/beleg?nr=RF-...`); a `;` CSV export in cp1252.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, flash, get_flashed_messages, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from bots.sandbox import orders_app as oa
from bots.sandbox import payments_app as pa
from bots.sandbox.common import (
    LoginForm,
    acknowledge_interstitial,
    create_legacy_app,
    csrf_ok,
    current_user,
    get_db,
    safe_next,
    site,
    utc_now,
)
from bots.sandbox.faults import FaultConfig

PAGE_SIZE = 3  # small pages, so that following "next" links is exercised
STATUS_TITLES = {"processing": "In Bearbeitung", "shipped": "Versandt",
                 "delivered": "Zugestellt", "cancelled": "Storniert"}
CATEGORY_CODES = {"apparel": "BEK", "electronics": "ELE", "home": "HAU", "beauty": "KOS",
                  "gift-cards": "GUT"}
SYMBOLS = {"EUR": "€", "GBP": "£", "USD": "$"}
REASONS_DE = (("kundenwunsch", "customer_request", "Kundenwunsch"),
              ("beschaedigt", "damaged", "Beschädigt"),
              ("nicht_erhalten", "not_received", "Nicht erhalten"),
              ("falscher_artikel", "wrong_item", "Falscher Artikel"),
              ("doppelt", "duplicate_charge", "Doppelte Belastung"),
              ("sonstiges", "other", "Sonstiges"))
EXPORT_HEADER = ("Erstattungsnr", "Transaktion", "Bestellnr", "Betrag", "Währung", "Grund",
                 "Verwendungszweck", "Bearbeiter", "Erstellt")


def de_amount(value: str | Decimal) -> str:
    return f"{Decimal(value):,.2f}".replace(",", "_").replace(".", ",").replace("_", ".")


def de_money(value: str | Decimal, currency: str) -> str:
    return f"{de_amount(value)}\u00a0{SYMBOLS.get(currency, currency)}"


def de_date(value: str | None) -> str:
    return date.fromisoformat(value[:10]).strftime("%d.%m.%Y") if value else "k. A."


def de_datetime(value: str) -> str:
    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").strftime("%d.%m.%Y %H:%M:%S")


def _filters(app: Flask) -> None:
    app.jinja_env.filters.update(de_amount=de_amount, de_money=de_money, de_date=de_date,
                                 de_datetime=de_datetime)
    app.jinja_env.globals.update(status_title=STATUS_TITLES.get,
                                 category_code=CATEGORY_CODES.get)


def _interstitial(template: str) -> BaseResponse | str:
    if request.method == "POST" and csrf_ok():
        acknowledge_interstitial()
        return redirect(safe_next(request.args.get("next"), site().home))
    return render_template(template, next=request.args.get("next", ""))


def _page() -> int:
    raw = request.args.get("seite", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else 1


def _next_link(count: int, page: int, **params: object) -> str | None:
    """A relative link to the next page (`?...&seite=2`), as 2000s software wrote them."""
    if page * PAGE_SIZE >= count:
        return None
    return "?" + urlencode({**params, "seite": page + 1})


# -- the order system ----------------------------------------------------------------------------

SEARCH_FIELDS = {"nr": "order_number", "mail": "email", "tel": "phone"}


def _orders_where(where: str, params: list[Any], page: int) -> tuple[list[Any], int]:
    db = get_db()
    count = db.execute("SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id "
                       f"WHERE {where}", params).fetchone()[0]
    rows = db.execute(f"{oa.ORDER_SELECT} WHERE {where} ORDER BY o.order_date DESC, "
                      "o.order_number DESC LIMIT ? OFFSET ?",
                      [*params, PAGE_SIZE, (page - 1) * PAGE_SIZE]).fetchall()
    return rows, count


def search() -> str:
    nach = request.args.get("nach", "nr")
    begriff = request.args.get("begriff", "").strip()
    page = _page()
    rows, count = (_orders_where(*oa._where(SEARCH_FIELDS.get(nach, "order_number"), begriff),
                                 page) if begriff else ([], 0))
    return render_template("oldschool/orders/search.html", rows=rows, nach=nach,
                           begriff=begriff, page=page,
                           next_url=_next_link(count, page, nach=nach, begriff=begriff))


def customers() -> str:
    mail = request.args.get("mail", "").strip()
    rows = get_db().execute("SELECT * FROM customers WHERE lower(email) = lower(?) ORDER BY id",
                            (mail,)).fetchall() if mail else []
    return render_template("oldschool/orders/customers.html", rows=rows, mail=mail)


def customer(customer_id: int) -> str | tuple[str, int]:
    row = get_db().execute("SELECT * FROM customers WHERE id = ?", (customer_id,)).fetchone()
    if row is None:
        return render_template("oldschool/not_found.html", what="Kunde"), 404
    page = _page()
    orders, count = _orders_where("c.id = ?", [customer_id], page)
    return render_template("oldschool/orders/customer.html", customer=row, orders=orders,
                           page=page, next_url=_next_link(count, page))


def order_shell(order_number: str) -> str:
    return render_template("oldschool/orders/shell.html", order_number=order_number)


def order_content(order_number: str) -> str | tuple[str, int]:
    order = oa._find_order(order_number)
    if order is None:
        return render_template("oldschool/not_found.html", what="Bestellung"), 404
    db = get_db()
    items = db.execute("SELECT * FROM items WHERE order_number = ? ORDER BY line_no",
                       (order["order_number"],)).fetchall()
    notes = db.execute("SELECT * FROM notes WHERE order_number = ? ORDER BY created_at, id",
                       (order["order_number"],)).fetchall()
    lines = [{**dict(i), "line_total": Decimal(i["unit_price"]) * i["quantity"]} for i in items]
    return render_template("oldschool/orders/content.html", order=order, items=lines,
                           notes=notes, messages=get_flashed_messages())


def order_status(order_number: str) -> str | tuple[str, int]:
    """The status icon alone, in a frame nested inside the order's frame."""
    order = oa._find_order(order_number)
    if order is None:
        return render_template("oldschool/not_found.html", what="Bestellung"), 404
    return render_template("oldschool/orders/status.html", status=order["status"])


def order_line(order_number: str, line_no: int) -> str | tuple[str, int]:
    """A line's own page: the only place its category and final-sale flag are shown."""
    order = oa._find_order(order_number)
    item = get_db().execute("SELECT * FROM items WHERE order_number = ? AND line_no = ?",
                            (order["order_number"], line_no)).fetchone() if order else None
    if item is None:
        return render_template("oldschool/not_found.html", what="Position"), 404
    return render_template("oldschool/orders/line.html", item=item)


def add_note(order_number: str) -> BaseResponse | tuple[str, int]:
    order = oa._find_order(order_number)
    if order is None:
        return render_template("oldschool/not_found.html", what="Bestellung"), 404
    number = str(order["order_number"])
    text = request.form.get("notiz", "").strip()[:oa.NOTE_MAX_LENGTH]
    if csrf_ok() and text:
        get_db().execute("INSERT INTO notes (order_number, author, body, created_at) "
                         "VALUES (?, ?, ?, ?)", (number, current_user(), text, utc_now()))
        flash("Notiz gespeichert.")
    return redirect(f"/bestellung/{number}/inhalt")


def create_orders_app(db_path: Path, faults: FaultConfig | None = None,
                      users: dict[str, str] | None = None) -> Flask:
    app = create_legacy_app(__name__, name="Bestellwesen", db_path=db_path, faults=faults,
                            users=users or oa.DEFAULT_ORDERS_USERS, home="/suche",
                            layout="oldschool/layout.html", cookie_name="BW_SITZUNG",
                            login=LoginForm(path="/anmeldung",
                                            template="oldschool/login.html",
                                            username="benutzer", password="kennwort",
                                            interstitial="/neuigkeiten"))
    _filters(app)
    app.add_url_rule("/neuigkeiten", "news", lambda: _interstitial("oldschool/orders/news.html"),
                     methods=["GET", "POST"])
    app.add_url_rule("/suche", "search", search)
    app.add_url_rule("/kunden", "customers", customers)
    app.add_url_rule("/kunden/<int:customer_id>", "customer", customer)
    app.add_url_rule("/bestellung/<order_number>", "shell", order_shell)
    app.add_url_rule("/bestellung/<order_number>/inhalt", "content", order_content)
    app.add_url_rule("/bestellung/<order_number>/notiz", "note", add_note, methods=["POST"])
    app.add_url_rule("/bestellung/<order_number>/status", "status", order_status)
    app.add_url_rule("/bestellung/<order_number>/position/<int:line_no>", "line", order_line)
    return app


# -- the payment portal --------------------------------------------------------------------------

def transactions() -> str:
    order = request.args.get("bestellung", "").strip()
    db = get_db()
    rows = db.execute("SELECT * FROM transactions WHERE order_number = ? COLLATE NOCASE "
                      "ORDER BY created_at, transaction_id", (order,)).fetchall() if order else []
    return render_template("oldschool/payments/transactions.html", order=order,
                           txns=pa._with_balance(db, rows))


def _transaction_page(txn: dict[str, Any], *, error: str | None = None,
                      status: int = 200) -> tuple[str, int]:
    refunds = get_db().execute("SELECT * FROM refunds WHERE transaction_id = ? ORDER BY id",
                               (txn["transaction_id"],)).fetchall()
    return render_template("oldschool/payments/transaction.html", txn=txn, refunds=refunds,
                           reasons=REASONS_DE, error=error,
                           messages=get_flashed_messages()), status


def transaction(txn_id: str) -> tuple[str, int]:
    txn = pa._transaction(txn_id)
    if txn is None:
        return render_template("oldschool/not_found.html", what="Zahlung"), 404
    return _transaction_page(txn)


def refund_form(txn_id: str) -> str | tuple[str, int]:
    """The refund form alone, framed in the transaction page; it answers as the whole page."""
    txn = pa._transaction(txn_id)
    if txn is None:
        return render_template("oldschool/not_found.html", what="Zahlung"), 404
    return render_template("oldschool/payments/form.html", txn=txn, reasons=REASONS_DE)


def refund(txn_id: str) -> BaseResponse | tuple[str, int]:
    txn = pa._transaction(txn_id)
    if txn is None:
        return render_template("oldschool/not_found.html", what="Zahlung"), 404
    if not csrf_ok():
        return _transaction_page(txn, error="Formular abgelaufen.", status=400)
    reasons = {de: en for de, en, _ in REASONS_DE}
    raw = request.form.get("betrag", "").strip().replace(".", "").replace(",", ".")
    form = {"amount": raw, "reason": reasons.get(request.form.get("grund", ""), "?"),
            "reference": request.form.get("verwendungszweck", "")}
    try:
        amount, reason, reference = pa._validate(form)
        with site().write_lock:
            refund_id = pa._insert_refund(get_db(), txn, amount, reason, reference)
    except pa.Refused as exc:
        return _transaction_page(pa._transaction(txn_id) or txn, error=str(exc), status=422)
    flash(f"Erstattung {refund_id} über {de_money(amount, txn['currency'])} wurde "
          "durchgeführt.")
    return redirect("/beleg?" + urlencode({"nr": refund_id, "tx": txn["transaction_id"]}))


def receipt() -> tuple[str, int]:
    """The transaction page again, with the flash: the only place the number is shown."""
    txn = pa._transaction(request.args.get("tx", ""))
    if txn is None:
        return render_template("oldschool/not_found.html", what="Zahlung"), 404
    return _transaction_page(txn)


def export() -> Response | tuple[str, int]:
    try:
        start, end = (datetime.strptime(request.args.get(k, ""), "%d.%m.%Y").date().isoformat()
                      for k in ("von", "bis"))
    except ValueError:
        return render_template("oldschool/not_found.html", what="Zeitraum"), 400
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";")
    writer.writerow(EXPORT_HEADER)
    for r in pa._refunds_between(start, end):
        writer.writerow([r["refund_id"], r["transaction_id"], r["order_number"],
                         de_amount(r["amount"]), r["currency"], r["reason"], r["reference"],
                         r["operator"], de_datetime(r["created_at"])])
    return Response(out.getvalue().encode("cp1252"), mimetype="text/csv",
                    headers={"Content-Disposition": "attachment; filename=erstattungen.csv"})


def create_payments_app(db_path: Path, faults: FaultConfig | None = None,
                        users: dict[str, str] | None = None) -> Flask:
    app = create_legacy_app(__name__, name="ZahlWerk", db_path=db_path, faults=faults,
                            users=users or pa.DEFAULT_PAYMENTS_USERS, home="/zahlungen",
                            layout="oldschool/layout.html", cookie_name="ZW_SITZUNG",
                            login=LoginForm(path="/anmeldung",
                                            template="oldschool/login.html",
                                            username="benutzer", password="kennwort",
                                            interstitial="/hinweis"))
    _filters(app)
    app.add_url_rule("/hinweis", "notice",
                     lambda: _interstitial("oldschool/payments/notice.html"),
                     methods=["GET", "POST"])
    app.add_url_rule("/zahlungen", "search", transactions)
    app.add_url_rule("/zahlung/<txn_id>", "detail", transaction)
    app.add_url_rule("/zahlung/<txn_id>/formular", "form", refund_form)
    app.add_url_rule("/zahlung/<txn_id>/erstatten", "refund", refund, methods=["POST"])
    app.add_url_rule("/beleg", "receipt", receipt)
    app.add_url_rule("/erstattungen/export", "export", export)
    return app
