"""The whole pipeline in a real headless Chromium against both sandbox apps.

Ground truth is the payment portal's own database, never the bot's word.
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import date
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
import yaml
from paths import CONFIG, SELECTORS
from typer.testing import CliRunner

from bots.cli import app
from bots.decide.policy import load_policy
from bots.queue import Queue
from bots.queue.staff import Staff
from bots.reports.report import read_report
from bots.sandbox.data import Dataset, build_dataset, pick_scenarios
from bots.tools.chaos import expected_refunds as chaos_expected
from bots.tools.demo import DEMO_SEED, DemoRequest, prepare_inputs
from bots.work.exit_codes import EXIT_OK, EXIT_PROBLEMS
from bots.work.pipeline import execute

pytestmark = pytest.mark.e2e
KEY = re.compile(r"^C\d{6}-[0-9a-f]{8}$")


def expected_refunds(ds: Dataset, reqs: list[DemoRequest]) -> dict[str, Decimal]:
    """What a careful agent would refund for the demo requests, computed independently."""
    return chaos_expected(ds, reqs, load_policy(CONFIG / "policy.yaml"))


@pytest.mark.parametrize("sandbox", ["default", "oldschool"], indirect=True)
def test_pipeline_refunds_exactly_the_eligible_orders_once(sandbox, settings_for,
                                                           tmp_path: Path) -> None:
    """Both skins, by selector files only: the same refunds, exactly once, in the portal."""
    today = date.today()
    ds = build_dataset(seed=DEMO_SEED, today=today)
    reqs = prepare_inputs(tmp_path, ds, today)
    settings = settings_for(sandbox)
    before = {r["refund_id"] for r in sandbox.refunds()}

    assert execute(settings, "run", intake=True, process=True, today=today) == EXIT_OK

    new = [r for r in sandbox.refunds() if r["refund_id"] not in before]
    got = {r["order_number"]: Decimal(r["amount"]) for r in new}
    assert got == expected_refunds(ds, reqs)
    assert len(new) == len(got), "an order was refunded twice"
    assert all(KEY.match(r["reference"]) and r["operator"] == "refund.bot" for r in new)

    queue = Queue(settings.queue_url)
    cases = {c.order_number: c for c in queue.cases()}
    s = pick_scenarios(ds)
    dup = [r.channel for r in reqs if r.order_number == s["duplicate"].order_number]
    assert len(dup) == 2 and cases[s["duplicate"].order_number].channels == sorted(set(dup))
    assert cases[s["high_value"].order_number].state == "escalated"
    assert cases[s["outside_window"].order_number].outcome == "rejected"
    assert "refund window" in (cases[s["outside_window"].order_number].reason or "")
    assert cases["ORD-999999"].outcome == "rejected"
    for r in new:  # the refund number recorded is the portal's, and the order got its note
        assert cases[r["order_number"]].refund_number == r["refund_id"]
    with sqlite3.connect(sandbox.orders_db) as db:
        notes = [row[0] for row in db.execute("SELECT body FROM notes")]
    assert all(any(r["refund_id"] in n for n in notes) for r in new)

    run_dir = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    book = read_report(run_dir / "reconciliation.xlsx")
    assert list(book) == ["Summary", "Cases", "Reconciliation", "Breaks", "Quarantine"]
    assert book["Breaks"] == []
    assert len(book["Cases"]) == len({r.order_number for r in reqs})
    assert len(book["Reconciliation"]) == len(new)
    assert {str(r["Status"]) for r in book["Reconciliation"]} == {"matched"}
    assert len(book["Quarantine"]) >= 3
    assert (run_dir / "run.log").stat().st_size > 0

    # Every contact got an answer on its own channel (email: no SMTP set, so the outbox).
    outbox = tmp_path / "outbox"
    sent = [json.loads(line) for f in outbox.glob("*.jsonl") for line in f.read_text().splitlines()]
    assert {m["channel"] for m in sent} == {r.channel for r in reqs}
    assert len(sent) == len({(r.channel, r.email, r.order_number) for r in reqs})
    # Amounts are told in the order's currency, even when the customer did not write one.
    # (English answers here; German and French ones say it in their language: test_demo.)
    paid = [m for m in sent if m["kind"] in ("refunded", "partial")
            and m.get("language") in (None, "en") and m["channel"] not in ("chat", "social")]
    assert paid and all(re.search(r"refunded [\d,]+\.\d\d EUR", m["body"]) for m in paid)
    # A second run finds everything already seen, pays nothing and tells no one twice.
    assert execute(settings, "run", intake=True, process=True, today=today) == EXIT_OK
    assert len(sandbox.refunds()) == len(before) + len(new)
    assert sum(len(f.read_text().splitlines()) for f in outbox.glob("*.jsonl")) == len(sent)


def test_escalated_case_is_paid_after_a_human_approves(sandbox, settings_for,
                                                       tmp_path: Path) -> None:
    today = date.today()
    ds = build_dataset(seed=DEMO_SEED, today=today)
    prepare_inputs(tmp_path, ds, today)
    settings = settings_for(sandbox)
    execute(settings, "run", intake=True, process=True, today=today)
    high = pick_scenarios(ds)["high_value"]
    queue = Queue(settings.queue_url)
    [case] = [c for c in queue.cases() if c.order_number == high.order_number]
    assert case.state == "escalated" and case.approved_amount == high.total

    # Ops staff fill in the run's escalations workbook, as they would in Excel.
    run_dir = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    book = openpyxl.load_workbook(run_dir / "escalations.xlsx")
    sheet = book.active
    headers = [c.value for c in sheet[1]]
    for row in sheet.iter_rows(min_row=2):
        if row[headers.index("Case")].value == case.ref:
            row[headers.index("Decision")].value = "partial"
            row[headers.index("Amount")].value = 400
            row[headers.index("Agent")].value = "ana.ops"
            row[headers.index("Comment")].value = "goodwill"
    filled = tmp_path / "decided.xlsx"
    book.save(filled)
    Staff.on(queue).add_user("ana.ops", "agent", "a long enough password")  # a real user
    cli = CliRunner()
    args = ["decisions", "import", str(filled)]
    env = {"REFUND_BOTS_QUEUE_URL": settings.queue_url}
    assert cli.invoke(app, args, env=env).exit_code == 0
    assert "already applied 1" in cli.invoke(app, args, env=env).output

    assert execute(settings, "process", intake=False, process=True, today=today) == EXIT_OK
    assert execute(settings, "process", intake=False, process=True, today=today) == EXIT_OK
    paid = [r for r in sandbox.refunds() if r["order_number"] == high.order_number]
    assert [Decimal(r["amount"]) for r in paid] == [Decimal("400.00")]
    done = queue.get_case(case.id)
    assert done is not None and done.outcome == "partial" and "ana.ops" in (done.reason or "")


def test_dry_run_decides_everything_and_submits_nothing(sandbox, settings_for,
                                                        tmp_path: Path) -> None:
    today = date.today()
    ds = build_dataset(seed=DEMO_SEED, today=today)
    reqs = prepare_inputs(tmp_path, ds, today)
    settings = settings_for(sandbox)
    before = sandbox.refunds()
    assert execute(settings, "run", intake=True, process=True, today=today,
                   dry_run=True) == EXIT_OK
    assert sandbox.refunds() == before
    queue = Queue(settings.queue_url)
    assert all(c.state == "queued" for c in queue.cases() if c.state != "merged")
    run_dir = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    outcomes = {r["Order number"]: r["Outcome"]
                for r in read_report(run_dir / "reconciliation.xlsx")["Cases"]}
    expected = expected_refunds(ds, reqs)
    assert all(outcomes[o] in ("would be refunded", "would be partial") for o in expected)

    # The real run then does what the dry run said.
    assert execute(settings, "process", intake=False, process=True, today=today) == EXIT_OK
    got = {r["order_number"]: Decimal(r["amount"]) for r in sandbox.refunds()
           if r not in before}
    assert got == expected


@pytest.mark.parametrize("sandbox", ["oldschool"], indirect=True)
def test_an_unrecognised_interstitial_fails_cases_and_tells_no_customer(
        sandbox, settings_for, tmp_path: Path) -> None:
    """The selectors do not know the news page shown after login: nothing is decided on it."""
    today = date.today()
    prepare_inputs(tmp_path, build_dataset(seed=DEMO_SEED, today=today), today)
    orders = yaml.safe_load((SELECTORS / "examples" / "oldschool" / "orders.yaml").read_text(
        encoding="utf-8"))
    del orders["interstitials"]
    orders["recognise_ms"] = 500
    blind = tmp_path / "orders.yaml"
    blind.write_text(yaml.safe_dump(orders, allow_unicode=True), encoding="utf-8")
    settings = settings_for(sandbox, orders__selectors=str(blind), health={"before_process":
                                                                            False},
                            processing={"max_attempts": 2, "backoff_seconds": 0,
                                        "backoff_max_seconds": 0, "circuit_breaker": 100,
                                        "step_retries": 0})

    assert execute(settings, "run", intake=True, process=True, today=today) == EXIT_PROBLEMS

    assert not [r for r in sandbox.refunds() if r["operator"] == "refund.bot"]
    every = [c for c in Queue(settings.queue_url).cases() if c.state != "merged"]
    # A voicemail intake could not read for sure escalates before any page is opened;
    # every case that needed a page failed on the unknown one.
    unsure = {c.ref for c in every if c.doubts and c.state == "escalated"}
    cases = [c for c in every if c.ref not in unsure]
    assert cases and all(c.state == "failed" and c.outcome == "failed" for c in cases)
    assert all("UnknownPage" in (c.last_error or "") for c in cases), [c.last_error for c in cases]
    outbox = tmp_path / "outbox"
    told = [json.loads(line) for f in outbox.glob("*.jsonl") for line in f.read_text().splitlines()]
    assert not [m for m in told if m["case_ref"] not in unsure]
    run_dir = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert list((run_dir / "screenshots").glob("*.png"))
