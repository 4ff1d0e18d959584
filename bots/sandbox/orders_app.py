"""The sandbox legacy order system ("OrderDesk 4.2"): search, order detail, notes, export.

It prints dates the European way (DD/MM/YYYY) and amounts as `1,234.50`, unlike the
payment portal, because real back-offices come from different vendors and the bots'
selectors files must cope with that.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlencode

from flask import Flask, Response, flash, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse  # what `redirect` returns

from bots.sandbox.common import create_legacy_app, csrf_ok, current_user, get_db, utc_now
from bots.sandbox.faults import FaultConfig

DEFAULT_ORDERS_USERS: dict[str, str] = {"ops.bot": "sandbox-orders"}
PAGE_SIZE = 20
PHONE_MATCH_DIGITS = 9
NOTE_MAX_LENGTH = 2000
SEARCH_FIELDS = (("order_number", "Order number"), ("email", "E-mail"), ("phone", "Telephone"))
EXPORT_COLUMNS = ("order_number", "customer_name", "email", "phone", "order_date",
                  "delivery_date", "status", "currency", "total")

ORDER_SELECT = """
SELECT o.*, c.name, c.email, c.phone FROM orders o JOIN customers c ON c.id = o.customer_id
"""


# -- display formats ------------------------------------------------------------------------

def eu_date(value: str | None) -> str:
    """ISO date (or datetime) text from the DB as DD/MM/YYYY; empty when there is none."""
    if not value:
        return ""
    return date.fromisoformat(value[:10]).strftime("%d/%m/%Y")


def eu_datetime(value: str) -> str:
    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").strftime("%d/%m/%Y %H:%M")


def eu_amount(value: str | Decimal) -> str:
    return f"{Decimal(value):,.2f}"


# -- search ---------------------------------------------------------------------------------

def digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def phone_matches(query: str, phone: str) -> bool:
    """Phones are typed every which way: compare the last 9 digits, ignoring the rest."""
    q, p = digits(query), digits(phone)
    n = PHONE_MATCH_DIGITS
    return len(q) >= n and len(p) >= n and q[-n:] == p[-n:]


def _where(field: str, query: str) -> tuple[str, list[object]]:
    """SQL condition and parameters for one search; an empty query lists every order."""
    if not query:
        return "1 = 1", []
    if field == "email":
        return "lower(c.email) = lower(?)", [query]
    if field == "phone":
        ids = [row["id"] for row in get_db().execute("SELECT id, phone FROM customers")
               if phone_matches(query, row["phone"])]
        return f"c.id IN ({', '.join('?' * len(ids)) or 'NULL'})", list(ids)
    return "o.order_number = ? COLLATE NOCASE", [query]


def _page_url(field: str, query: str, page: int) -> str:
    return "/orders?" + urlencode({"field": field, "q": query, "page": page})


def _page_number(raw: str | None) -> int:
    return int(raw) if raw and raw.isdigit() and int(raw) > 0 else 1


def search_orders() -> str:
    field = request.args.get("field", "order_number")
    if field not in dict(SEARCH_FIELDS):
        field = "order_number"
    query = request.args.get("q", "").strip()
    page = _page_number(request.args.get("page"))
    where, params = _where(field, query)
    db = get_db()
    count = db.execute(f"SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id "
                       f"WHERE {where}", params).fetchone()[0]
    rows = db.execute(f"{ORDER_SELECT} WHERE {where} "
                      "ORDER BY o.order_date DESC, o.order_number DESC LIMIT ? OFFSET ?",
                      [*params, PAGE_SIZE, (page - 1) * PAGE_SIZE]).fetchall()
    first = (page - 1) * PAGE_SIZE + 1
    return render_template(
        "orders/search.html", fields=SEARCH_FIELDS, field=field, q=query, orders=rows,
        page=page, count=count, first=first, last=first + len(rows) - 1,
        next_url=_page_url(field, query, page + 1) if page * PAGE_SIZE < count else None,
        prev_url=_page_url(field, query, page - 1) if page > 1 else None,
        export_from=request.args.get("from", ""), export_to=request.args.get("to", ""))


# -- export ---------------------------------------------------------------------------------

def _iso(raw: str | None) -> date | None:
    try:
        return date.fromisoformat(raw or "")
    except ValueError:
        return None


def bad_request(message: str, error_id: str) -> tuple[str, int]:
    return render_template("shared/error.html", message=message, error_id=error_id), 400


def export_orders() -> Response | tuple[str, int]:
    start, end = _iso(request.args.get("from")), _iso(request.args.get("to"))
    if start is None or end is None:
        return bad_request("Please enter both dates as YYYY-MM-DD.", "export-error")
    rows = get_db().execute(f"{ORDER_SELECT} WHERE o.order_date BETWEEN ? AND ? "
                            "ORDER BY o.order_number", (start.isoformat(), end.isoformat()))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    for r in rows:
        writer.writerow([r["order_number"], r["name"], r["email"], r["phone"], r["order_date"],
                         r["delivery_date"] or "", r["status"], r["currency"], r["total"]])
    filename = f"orders_{start.isoformat()}_{end.isoformat()}.csv"
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename={filename}"})


# -- order detail and notes -----------------------------------------------------------------

ORDER_NUMBER_RX = re.compile(r"^[A-Za-z0-9-]{1,40}$")


def _find_order(order_number: str) -> dict[str, object] | None:
    if not ORDER_NUMBER_RX.match(order_number):
        return None
    row = get_db().execute(f"{ORDER_SELECT} WHERE o.order_number = ? COLLATE NOCASE",
                           (order_number,)).fetchone()
    return dict(row) if row else None


def not_found(order_number: str) -> tuple[str, int]:
    return render_template("shared/not_found.html", what="Order", ref=order_number,
                           back="/orders"), 404


def order_detail(order_number: str) -> str | tuple[str, int]:
    order = _find_order(order_number)
    if order is None:
        return not_found(order_number)
    db = get_db()
    items = db.execute("SELECT * FROM items WHERE order_number = ? ORDER BY line_no",
                       (order["order_number"],)).fetchall()
    notes = db.execute("SELECT * FROM notes WHERE order_number = ? ORDER BY created_at, id",
                       (order["order_number"],)).fetchall()
    return render_template("orders/detail.html", order=order, items=items, notes=notes)


def add_note(order_number: str) -> BaseResponse | tuple[str, int]:
    order = _find_order(order_number)
    if order is None:
        return not_found(order_number)
    number = str(order["order_number"])
    if not csrf_ok():
        flash("Your form has expired. Please try again.", "error")
        return redirect(f"/orders/{number}")
    text = request.form.get("note", "").strip()[:NOTE_MAX_LENGTH]
    if not text:
        flash("Please enter a note.", "error")
        return redirect(f"/orders/{number}")
    db = get_db()
    db.execute("INSERT INTO notes (order_number, author, body, created_at) VALUES (?, ?, ?, ?)",
               (number, current_user(), text, utc_now()))
    flash("Note added", "ok")
    return redirect(f"/orders/{number}")


def create_orders_app(db_path: Path, faults: FaultConfig | None = None,
                      users: dict[str, str] | None = None) -> Flask:
    """The order system over an orders database written by `data.write_databases`."""
    app = create_legacy_app(__name__, name="OrderDesk", db_path=db_path, faults=faults,
                            users=users or DEFAULT_ORDERS_USERS, home="/orders",
                            layout="orders/layout.html", cookie_name="ORDERDESK_SESSION")
    app.jinja_env.filters.update(eu_date=eu_date, eu_datetime=eu_datetime, eu_amount=eu_amount)
    app.add_url_rule("/orders", "search", search_orders)
    app.add_url_rule("/orders/export", "export", export_orders)
    app.add_url_rule("/orders/<order_number>", "detail", order_detail)
    app.add_url_rule("/orders/<order_number>/notes", "add_note", add_note, methods=["POST"])
    return app
