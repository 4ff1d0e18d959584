"""The three-way reconciliation against the real sandbox in Chromium: the portal's refunds,
the queue, and the order system's notes."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_reconcile_e2e import book, first_run, refund_by_hand
from typer.testing import CliRunner

from bots.cli import app
from bots.legacy.session import BotSession
from bots.work.exit_codes import EXIT_PROBLEMS

pytestmark = pytest.mark.e2e

NOTE_MISSING = "refund without its order note"
ORPHAN_NOTE = "order note without its refund"


def a_charge_nobody_refunded(sandbox, busy: set[str]) -> dict[str, object]:  # noqa: ANN001
    with sqlite3.connect(sandbox.payments_db) as db:
        db.row_factory = sqlite3.Row
        for row in db.execute("SELECT * FROM transactions ORDER BY transaction_id"):
            refunded = db.execute("SELECT count(*) FROM refunds WHERE transaction_id = ?",
                                  (row["transaction_id"],)).fetchone()[0]
            if not refunded and row["order_number"] not in busy:
                return {"transaction_id": row["transaction_id"],
                        "order_number": row["order_number"], "amount": "1.00",
                        "currency": row["currency"]}
    raise AssertionError("the sandbox has no charge without refunds")


def write_note(sandbox, order_number: str, body: str) -> None:  # noqa: ANN001
    with sqlite3.connect(sandbox.orders_db) as db:
        db.execute("INSERT INTO notes (order_number, author, body, created_at) "
                   "VALUES (?, ?, ?, ?)", (order_number, "someone", body,
                                           datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")))


def test_refunds_and_notes_agree_and_each_disagreement_is_a_break(
        sandbox, settings_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The normal pipeline: every refund the bot made has its note -> matched, exit 0.
    settings, queue, run1, paid = first_run(sandbox, settings_for, tmp_path)
    first = book(settings, run1)
    assert not [r for r in first["Reconciliation"]
                if r["Status"] in (NOTE_MISSING, ORPHAN_NOTE) or "notes" in str(r["Status"])]
    assert any(r["Status"] == "matched" for r in first["Reconciliation"])
    said = {(r["Section"], r["Item"]): r["Value"] for r in first["Summary"]}
    assert " 0 not read" in str(said[("Run", "Order notes (three-way)")])

    # A refund keyed straight into the portal, with no note on its order...
    ours = {str(r["order_number"]) for r in sandbox.refunds()}
    hand = refund_by_hand(sandbox.payments_db, a_charge_nobody_refunded(sandbox, ours),
                          "goodwill, customer called")
    # ...and a note of the bot naming a refund the portal never made.
    write_note(sandbox, str(paid["order_number"]),
               "Refund RF-999999 of 1.00 EUR issued by refund-bots for case C-000001.")

    for name, value in {"REFUND_BOTS_QUEUE_URL": settings.queue_url,
                        "REFUND_BOTS_RUNS_DIR": str(settings.runs_dir),
                        "REFUND_BOTS_PAYMENTS_URL": settings.payments.url,
                        "REFUND_BOTS_ORDERS_URL": settings.orders.url}.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["report", run1])
    assert result.exit_code == EXIT_PROBLEMS, result.output
    data = book(settings, run1)
    rows = {(r["Status"], r["Portal refund id"]): r for r in data["Reconciliation"]}
    assert (NOTE_MISSING, hand) in rows
    assert (ORPHAN_NOTE, "RF-999999") in rows
    assert rows[(ORPHAN_NOTE, "RF-999999")]["Order number"] == paid["order_number"]
    assert ("in portal, not in ledger", hand) in rows  # the listing's own break stays
    kinds = {b["Kind"] for b in data["Breaks"]}
    assert {NOTE_MISSING, ORPHAN_NOTE} <= kinds
    summary = {(r["Section"], r["Item"]): r["Value"] for r in data["Summary"]}
    assert summary[("Reconciliation", NOTE_MISSING)] == 1
    assert summary[("Reconciliation", ORPHAN_NOTE)] == 1
    assert "open break" in str(summary[("Result", "Reconciliation")])

    # The unsure path: the order's page answers only errors. Its refund is "not verified"
    # with the reason, never matched; the break about its stray note stays open.
    sandbox.set_faults(error_rate=1.0, error_paths=f"^/orders/{paid['order_number']}$")
    result = CliRunner().invoke(app, ["report", run1])
    assert result.exit_code == EXIT_PROBLEMS, result.output
    data = book(settings, run1)
    [unread] = [r for r in data["Reconciliation"]
                if r["Status"] == "not verified: order notes unread"]
    assert unread["Portal refund id"] == paid["refund_id"]
    assert "could not be read" in str(unread["Note"])
    assert ORPHAN_NOTE in {b["Kind"] for b in data["Breaks"]}


@pytest.mark.parametrize("sandbox", ["default", "oldschool"], indirect=True)
def test_the_order_page_object_reads_notes_in_both_skins(sandbox, settings_for) -> None:  # noqa: ANN001
    with sqlite3.connect(sandbox.orders_db) as db:
        order, body = db.execute("SELECT order_number, body FROM notes ORDER BY id").fetchone()
        bare = db.execute("SELECT order_number FROM orders WHERE order_number NOT IN "
                          "(SELECT order_number FROM notes) ORDER BY order_number").fetchone()[0]
    settings = settings_for(sandbox)

    async def read() -> tuple[list[str] | None, list[str] | None, list[str] | None]:
        async with BotSession(settings) as bots:
            worker = await bots.worker("notes")
            try:
                return (await worker.orders.read_notes(order),
                        await worker.orders.read_notes(bare),
                        await worker.orders.read_notes("NO-SUCH-ORDER-1"))
            finally:
                await worker.context.close()

    notes, none, missing = asyncio.run(read())
    assert notes is not None and any(body in n for n in notes)
    assert none == []  # an order without notes reads as no notes ("No notes" is not a note)
    assert missing is None  # the app's own "not found" page
