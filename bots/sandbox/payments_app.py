"""The sandbox legacy payment portal ("PayGate"): transactions, refunds, refund listing.

Like many real portals it refuses a refund above the remaining balance but happily
records the same refund twice: deduplication is the bot's job, and the demo proves it.
Amounts are plain `1234.50` here and timestamps ISO-like UTC, unlike the order system.
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from flask import Flask, Response, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse  # what `redirect` returns

from bots.models import money
from bots.sandbox.common import create_legacy_app, csrf_ok, current_user, get_db, site, utc_now
from bots.sandbox.faults import FaultConfig

DEFAULT_PAYMENTS_USERS: dict[str, str] = {"refund.bot": "sandbox-payments"}
REASONS: tuple[tuple[str, str], ...] = (
    ("customer_request", "Customer request"), ("damaged", "Damaged goods"),
    ("not_received", "Not received"), ("wrong_item", "Wrong item"),
    ("duplicate_charge", "Duplicate charge"), ("other", "Other"),
)
REFERENCE_MAX_LENGTH = 40
LATEST_TRANSACTIONS = 25
AMOUNT_RX = re.compile(r"^\d{1,9}(\.\d{1,2})?$")
ID_RX = re.compile(r"^[A-Za-z0-9-]{1,40}$")
EXPORT_COLUMNS = ("refund_id", "transaction_id", "order_number", "amount", "currency", "reason",
                  "reference", "operator", "created_at")


def plain_amount(value: str | Decimal) -> str:
    return f"{Decimal(value):.2f}"


def parse_amount(raw: str) -> Decimal | None:
    """A positive amount with at most two decimals, else None (no floats, no exponents)."""
    text = raw.strip()
    if not AMOUNT_RX.match(text):
        return None
    amount = Decimal(text)
    return money(amount) if amount > 0 else None


# -- transactions ---------------------------------------------------------------------------

def _refunded(db: sqlite3.Connection, txn_ids: Iterable[str]) -> dict[str, Decimal]:
    """Refunded total per transaction, summed as Decimal (SQLite would sum text as floats)."""
    ids = list(txn_ids)
    totals = dict.fromkeys(ids, Decimal("0.00"))
    if ids:
        rows = db.execute(f"SELECT transaction_id, amount FROM refunds WHERE transaction_id IN "
                          f"({', '.join('?' * len(ids))})", ids)
        for row in rows:
            totals[row["transaction_id"]] += Decimal(row["amount"])
    return totals


def _status(amount: Decimal, refunded: Decimal) -> str:
    if refunded <= 0:
        return "settled"
    return "refunded" if refunded >= amount else "partially refunded"


def _with_balance(db: sqlite3.Connection, rows: list[sqlite3.Row]) -> list[dict[str, Any]]:
    refunded = _refunded(db, (r["transaction_id"] for r in rows))
    txns = []
    for row in rows:
        txn = dict(row)
        amount, done = Decimal(row["amount"]), refunded[row["transaction_id"]]
        txn.update(refunded=done, remaining=money(amount - done), status=_status(amount, done))
        txns.append(txn)
    return txns


def _transaction(txn_id: str) -> dict[str, Any] | None:
    if not ID_RX.match(txn_id):
        return None
    db = get_db()
    row = db.execute("SELECT * FROM transactions WHERE transaction_id = ? COLLATE NOCASE",
                     (txn_id,)).fetchone()
    return _with_balance(db, [row])[0] if row else None


def search_transactions() -> str:
    order = request.args.get("order", "").strip()
    db = get_db()
    if order:
        rows = db.execute("SELECT * FROM transactions WHERE order_number = ? COLLATE NOCASE "
                          "ORDER BY created_at, transaction_id", (order,)).fetchall()
    else:
        rows = db.execute("SELECT * FROM transactions ORDER BY created_at DESC LIMIT ?",
                          (LATEST_TRANSACTIONS,)).fetchall()
    return render_template("payments/transactions.html", order=order,
                           txns=_with_balance(db, rows))


def not_found(what: str, ref: str) -> tuple[str, int]:
    return render_template("shared/not_found.html", what=what, ref=ref,
                           back="/transactions"), 404


def _transaction_page(txn: dict[str, Any], *, error: str | None = None,
                      form: dict[str, str] | None = None, status: int = 200) -> tuple[str, int]:
    refunds = get_db().execute("SELECT * FROM refunds WHERE transaction_id = ? ORDER BY id",
                               (txn["transaction_id"],)).fetchall()
    form = form or {"amount": "", "reason": "customer_request", "reference": ""}
    return render_template("payments/transaction.html", txn=txn, refunds=refunds,
                           reasons=REASONS, error=error, form=form), status


def transaction_detail(txn_id: str) -> tuple[str, int]:
    txn = _transaction(txn_id)
    return not_found("Transaction", txn_id) if txn is None else _transaction_page(txn)


# -- refunds --------------------------------------------------------------------------------

class Refused(Exception):
    """The portal's answer to a refund it will not issue (shown on the form, HTTP 422)."""


def _validate(form: dict[str, str]) -> tuple[Decimal, str, str]:
    amount = parse_amount(form["amount"])
    if amount is None:
        raise Refused(f"Invalid refund amount '{form['amount'].strip()}': enter a positive "
                      "amount with at most 2 decimals, e.g. 12.50")
    if form["reason"] not in dict(REASONS):
        raise Refused(f"Invalid refund reason '{form['reason']}'")
    # The legacy column is 40 characters wide: longer references are silently cut, as the
    # browser's maxlength would do.
    return amount, form["reason"], form["reference"].strip()[:REFERENCE_MAX_LENGTH]


def _insert_refund(db: sqlite3.Connection, txn: dict[str, Any], amount: Decimal, reason: str,
                   reference: str) -> str:
    """Check the balance and insert in one write transaction, so two concurrent refunds
    cannot both pass the check. Returns the new refund number."""
    db.execute("BEGIN IMMEDIATE")
    try:
        txn_id = txn["transaction_id"]
        remaining = money(Decimal(txn["amount"]) - _refunded(db, [txn_id])[txn_id])
        if amount > remaining:
            raise Refused(f"Refund amount {amount:.2f} exceeds refundable balance "
                          f"{remaining:.2f}")
        number = db.execute("SELECT coalesce(max(id), 0) + 1 FROM refunds").fetchone()[0]
        refund_id = f"RF-{number:06d}"
        db.execute("INSERT INTO refunds (id, refund_id, transaction_id, order_number, amount, "
                   "currency, reason, reference, operator, created_at) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (number, refund_id, txn_id, txn["order_number"], f"{amount:.2f}",
                    txn["currency"], reason, reference, current_user(), utc_now()))
        db.execute("COMMIT")
        return refund_id
    except BaseException:
        db.execute("ROLLBACK")
        raise


def issue_refund(txn_id: str) -> BaseResponse | tuple[str, int]:
    txn = _transaction(txn_id)
    if txn is None:
        return not_found("Transaction", txn_id)
    form = {k: request.form.get(k, "") for k in ("amount", "reason", "reference")}
    if not csrf_ok():
        return _transaction_page(txn, error="Your form has expired. Please reload the page "
                                 "and try again.", form=form, status=400)
    try:
        amount, reason, reference = _validate(form)
        with site().write_lock:
            refund_id = _insert_refund(get_db(), txn, amount, reason, reference)
    except Refused as exc:
        fresh = _transaction(txn["transaction_id"]) or txn
        return _transaction_page(fresh, error=str(exc), form=form, status=422)
    return redirect(f"/refunds/{refund_id}")


def refund_confirmation(refund_id: str) -> str | tuple[str, int]:
    row = get_db().execute("SELECT * FROM refunds WHERE refund_id = ? COLLATE NOCASE",
                           (refund_id,)).fetchone()
    if row is None:
        return not_found("Refund", refund_id)
    return render_template("payments/confirmation.html", refund=row)


# -- listing and export ---------------------------------------------------------------------

def _date_arg(name: str) -> tuple[str, bool]:
    """(the YYYY-MM-DD value or "", whether it is valid)."""
    raw = request.args.get(name, "").strip()
    if not raw:
        return "", True
    try:
        return date.fromisoformat(raw).isoformat(), True
    except ValueError:
        return raw, False


def _refunds_between(start: str, end: str) -> list[sqlite3.Row]:
    return get_db().execute(
        "SELECT * FROM refunds WHERE substr(created_at, 1, 10) BETWEEN ? AND ? "
        "ORDER BY created_at, id", (start or "0000-01-01", end or "9999-12-31")).fetchall()


def _bad_dates() -> tuple[str, int]:
    return render_template("shared/error.html", error_id="filter-error",
                           message="Dates must be entered as YYYY-MM-DD."), 400


def list_refunds() -> str | tuple[str, int]:
    (start, ok_start), (end, ok_end) = _date_arg("from"), _date_arg("to")
    if not (ok_start and ok_end):
        return _bad_dates()
    return render_template("payments/refunds.html", start=start, end=end,
                           refunds=_refunds_between(start, end))


def export_refunds() -> Response | tuple[str, int]:
    (start, ok_start), (end, ok_end) = _date_arg("from"), _date_arg("to")
    if not (ok_start and ok_end):
        return _bad_dates()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    for r in _refunds_between(start, end):
        writer.writerow([r["refund_id"], r["transaction_id"], r["order_number"],
                         plain_amount(r["amount"]), r["currency"], r["reason"], r["reference"],
                         r["operator"], r["created_at"]])
    filename = f"refunds_{start or 'all'}_{end or 'all'}.csv"
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename={filename}"})


def create_payments_app(db_path: Path, faults: FaultConfig | None = None,
                        users: dict[str, str] | None = None) -> Flask:
    """The payment portal over a payments database written by `data.write_databases`."""
    app = create_legacy_app(__name__, name="PayGate", db_path=db_path, faults=faults,
                            users=users or DEFAULT_PAYMENTS_USERS, home="/transactions",
                            layout="payments/layout.html", cookie_name="PAYGATE_SID")
    app.jinja_env.filters.update(plain_amount=plain_amount)
    app.add_url_rule("/transactions", "search", search_transactions)
    app.add_url_rule("/transactions/<txn_id>", "detail", transaction_detail)
    app.add_url_rule("/transactions/<txn_id>/refund", "refund", issue_refund, methods=["POST"])
    app.add_url_rule("/refunds", "refunds", list_refunds)
    app.add_url_rule("/refunds/export.csv", "export", export_refunds)
    app.add_url_rule("/refunds/<refund_id>", "confirmation", refund_confirmation)
    return app
