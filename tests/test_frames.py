"""Per-key frames and values read on a line's own page (issue 14, section 2).

The oldschool skin shows an order's status only in a frame nested inside the order's
frame, the refund form in a frame of its own (the rest of the transaction page is not
framed), and each line's category and final-sale flag only on the line's own page,
linked from the line. The selectors say so (`frame:` on a key, `order.line_page`),
nothing else changes. A frame or a line page that is not there is a system exception
naming the key: never a status '', never "not final sale".
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from datetime import date
from pathlib import Path

import pytest
import yaml
from paths import CONFIG, ROOT, SELECTORS
from typer.testing import CliRunner

from bots.cli import app
from bots.errors import SelectorMissing, UnknownPage
from bots.legacy.base import Found, Reading
from bots.legacy.selectors import Formats, Sel, SelectorFileError, load_orders, load_payments
from bots.legacy.session import BotSession
from bots.models import OrderFacts
from bots.queue import Queue
from bots.sandbox.data import build_dataset
from bots.tools.demo import DEMO_SEED, prepare_inputs
from bots.work.exit_codes import EXIT_OK, EXIT_PROBLEMS
from bots.work.pipeline import execute

OLDSCHOOL = SELECTORS / "examples" / "oldschool"


def _load(name: str) -> dict:
    return yaml.safe_load((OLDSCHOOL / name).read_text(encoding="utf-8"))


def _write(tmp_path: Path, data: dict, name: str = "orders.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


# -- the schema ------------------------------------------------------------------------------

def test_a_key_may_say_which_frames_it_lives_in() -> None:
    sel = Sel.model_validate({"css": "img", "frame": "iframe.status", "attr": "title"})
    assert sel.frame == ("iframe.status",)
    nested = Sel.model_validate({"css": "img", "frame": ["iframe.a", "iframe.b"]})
    assert nested.frame == ("iframe.a", "iframe.b")
    assert Sel.model_validate("#status").frame == ()
    o, p = load_orders(OLDSCHOOL / "orders.yaml"), load_payments(OLDSCHOOL / "payments.yaml")
    assert o.order.frame and o.order.status.frame  # nested: the status inside the order's
    assert p.refund_form.submit.frame and not p.transaction.frame


@pytest.mark.parametrize(("section", "key"), [
    ("order", "detail"), ("order", "not_found"), ("order", "sku"), ("search", "rows"),
    ("login", "submit"),
])
def test_a_frame_where_it_would_be_ignored_is_refused_naming_file_and_key(
        tmp_path: Path, section: str, key: str) -> None:
    data = _load("orders.yaml")
    data[section][key] = {"css": "x", "frame": "iframe.elsewhere"}
    path = _write(tmp_path, data)
    with pytest.raises(SelectorFileError, match=re.escape(f"{path}: {section}.{key}: ")
                       + ".*cannot have a frame of its own"):
        load_orders(path)


def test_an_empty_frame_and_a_split_note_form_are_refused(tmp_path: Path) -> None:
    data = _load("orders.yaml")
    data["order"]["status"] = {"css": "img", "frame": ""}
    with pytest.raises(SelectorFileError, match=r"order\.status\.frame: .*iframe's CSS"):
        load_orders(_write(tmp_path, data))
    data = _load("orders.yaml")
    data["order"]["note_submit"] = {"css": "input.notiz-speichern", "frame": "iframe.x"}
    with pytest.raises(SelectorFileError, match="notes, note_text and note_submit must be in "
                                                "the same frame"):
        load_orders(_write(tmp_path, data))


def test_line_page_keys_are_read_in_one_place_exactly(tmp_path: Path) -> None:
    data = _load("orders.yaml")
    data["order"]["final_sale"] = "span.abverkauf"  # also under line_page
    with pytest.raises(SelectorFileError, match=r"order\.final_sale is given in the order "
                                                r"line and under order\.line_page"):
        load_orders(_write(tmp_path, data))
    data = _load("orders.yaml")
    del data["order"]["line_page"]["category"]
    with pytest.raises(SelectorFileError, match=r"order\.category: Field required \(in the "
                                                r"order line, or under order\.line_page\)"):
        load_orders(_write(tmp_path, data))
    data = _load("orders.yaml")
    data["order"]["line_page"] = {"link": "a", "detail": "dl", "not_found": "div"}
    with pytest.raises(SelectorFileError, match="line_page reads none of"):
        load_orders(_write(tmp_path, data))
    data = _load("orders.yaml")
    data["order"]["line_page"]["link"] = {"css": "a", "frame": "iframe.x"}
    with pytest.raises(SelectorFileError, match=r"order\.line_page\.link: .*cannot have a "
                                                "frame"):
        load_orders(_write(tmp_path, data))


def test_a_key_whose_frame_is_missing_is_unknown_never_empty() -> None:
    sel = Sel.model_validate({"css": "td.final", "frame": "iframe.lines"})
    reading = Reading("order system", "http://x/o/1",
                      {"v": Found("order.v", sel, -3, "no frame")}, Formats())
    assert reading.found["v"].state == "missing"
    with pytest.raises(SelectorMissing, match=r"order\.v \(td\.final in frame iframe\.lines\) "
                                              r"not found: its frame is not there"):
        reading.flag("v")


# -- live, in Chromium, against the oldschool skin --------------------------------------------

def _db_order(orders_db: Path) -> tuple[str, list[tuple[str, str, bool]], str]:
    """An order with several lines, one of them final sale: (number, lines, status)."""
    with sqlite3.connect(orders_db) as db:
        number, status = db.execute(
            "SELECT o.order_number, o.status FROM orders o WHERE "
            "(SELECT count(*) FROM items i WHERE i.order_number = o.order_number) > 1 AND "
            "EXISTS (SELECT 1 FROM items i WHERE i.order_number = o.order_number "
            "AND i.final_sale) ORDER BY o.order_number LIMIT 1").fetchone()
        lines = [(sku, cat, bool(fs)) for sku, cat, fs in db.execute(
            "SELECT sku, category, final_sale FROM items WHERE order_number = ? "
            "ORDER BY line_no", (number,))]
    return number, lines, status


def _find(settings, number: str) -> OrderFacts | None:  # noqa: ANN001
    async def go() -> OrderFacts | None:
        async with BotSession(settings) as session:
            worker = await session.worker("t")
            try:
                await worker.orders.login()
                return await worker.orders.find_order(number)
            finally:
                await worker.context.close()
    return asyncio.run(go())


@pytest.mark.e2e
@pytest.mark.parametrize("sandbox", ["oldschool"], indirect=True)
def test_status_in_a_nested_frame_and_flags_from_each_lines_own_page(
        sandbox, settings_for, tmp_path: Path) -> None:
    number, lines, status = _db_order(sandbox.orders_db)
    order = _find(settings_for(sandbox), number)
    assert order is not None and order.status == status
    assert [(i.sku, i.category, i.final_sale) for i in order.items] == lines

    # The status's frame renamed: the key is missing, named, never an empty status.
    data = _load("orders.yaml")
    data["order"]["status"]["frame"] = "dd.b-status iframe.zustandsrahmen"
    data["recognise_ms"] = 500
    settings = settings_for(sandbox, orders__selectors=str(_write(tmp_path, data)))
    with pytest.raises(SelectorMissing, match=r"order\.status .*iframe\.zustandsrahmen"):
        _find(settings, number)

    # The final-sale flag not on the line page: unknown, never "not final sale".
    data = _load("orders.yaml")
    data["order"]["line_page"]["final_sale"] = "dd.p-ausverkauf"
    settings = settings_for(sandbox, orders__selectors=str(_write(tmp_path, data)))
    with pytest.raises(SelectorMissing, match=r"order\.line_page\.final_sale \(dd\.p-ausverkauf"
                                              r"\) not found"):
        _find(settings, number)

    # A link that leads to the app's "not found" page: unknown too, naming what is unread.
    data = _load("orders.yaml")
    data["order"]["line_page"]["link"] = {
        "css": "span.bez a", "attr": "href",
        "map": {f"position/{n}": f"position/9{n}" for n in range(1, 4)}}
    settings = settings_for(sandbox, orders__selectors=str(_write(tmp_path, data)))
    with pytest.raises(UnknownPage, match="line page .* says not found: its category, "
                                          "final_sale cannot be read"):
        _find(settings, number)


@pytest.mark.e2e
@pytest.mark.parametrize("sandbox", ["oldschool"], indirect=True)
def test_doctor_live_reads_framed_keys_and_the_line_page(sandbox, tmp_path: Path,
                                                        monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    number, _, _ = _db_order(sandbox.orders_db)
    base = yaml.safe_load((CONFIG / "settings.yaml").read_text(encoding="utf-8"))
    base.update(queue_url=f"sqlite:///{tmp_path / 'queue.sqlite'}",
                runs_dir=str(tmp_path / "runs"), intake={"sources": []},
                health={"order_number": number})
    base["orders"].update(url=sandbox.orders_url, selectors=str(OLDSCHOOL / "orders.yaml"))
    base["payments"].update(url=sandbox.payments_url,
                            selectors=str(OLDSCHOOL / "payments.yaml"))
    base["notify"]["outbox_dir"] = str(tmp_path / "outbox")
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(base), encoding="utf-8")
    result = CliRunner().invoke(app, ["doctor", "--live", "-c", str(path)],
                                env={"COLUMNS": "250"})
    assert result.exit_code == EXIT_OK, result.output
    for key in ("order.status", "order.line_page.final_sale", "order.line_page.category",
                "order.line_page.link", "refund_form.submit", "refund_form.confirm.modal"):
        assert re.search(rf"│ {re.escape(key)}\s+│ found\s+│", result.output), key

    data = _load("orders.yaml")
    data["order"]["status"]["frame"] = "dd.b-status iframe.zustandsrahmen"
    data["recognise_ms"] = 500
    base["orders"]["selectors"] = str(_write(tmp_path, data))
    path.write_text(yaml.safe_dump(base), encoding="utf-8")
    result = CliRunner().invoke(app, ["doctor", "--live", "-c", str(path)],
                                env={"COLUMNS": "250"})
    assert result.exit_code != EXIT_OK
    assert re.search(r"│ order\.status\s+│ missing\s+│ img in frame dd\.b-status "
                     r"iframe\.zustandsrahmen", result.output), result.output


@pytest.mark.e2e
@pytest.mark.parametrize("sandbox", ["oldschool"], indirect=True)
def test_an_unreadable_final_sale_flag_fails_cases_pays_and_tells_no_one(
        sandbox, settings_for, tmp_path: Path) -> None:
    """Absent is unknown: no case is rejected or paid on a flag the bot could not read."""
    today = date.today()
    prepare_inputs(tmp_path, build_dataset(seed=DEMO_SEED, today=today), today)
    data = _load("orders.yaml")
    data["order"]["line_page"]["final_sale"] = "dd.p-ausverkauf"
    settings = settings_for(sandbox, orders__selectors=str(_write(tmp_path, data)),
                            health={"before_process": False},
                            processing={"max_attempts": 1, "backoff_seconds": 0,
                                        "backoff_max_seconds": 0, "circuit_breaker": 100,
                                        "step_retries": 0})

    assert execute(settings, "run", intake=True, process=True, today=today) == EXIT_PROBLEMS

    assert not [r for r in sandbox.refunds() if r["operator"] == "refund.bot"]
    every = [c for c in Queue(settings.queue_url).cases() if c.state != "merged"]
    read = [c for c in every if "final_sale" in (c.last_error or "")]
    assert read and all(c.state == "failed" for c in read)
    assert not [c for c in every if c.outcome in ("rejected", "refunded", "partial")
                and c.order_number != "ORD-999999"]
    told = [json.loads(line) for f in (tmp_path / "outbox").glob("*.jsonl")
            for line in f.read_text().splitlines()]
    refs = {c.ref for c in read}
    assert not [m for m in told if m["case_ref"] in refs]


# -- read_page over several frames, in Chromium, on a page made for the test ------------------

PAGE = """<dl><dd class="nr">ORD-1</dd></dl>
<iframe class="outer" srcdoc='<p>outer</p><iframe class="inner"
  srcdoc="&lt;span class=status&gt;shipped&lt;/span&gt;"></iframe>'></iframe>
<iframe class="lines" srcdoc='<table><tr class="line"><td class="sku">A-1</td></tr>
  <tr class="line"><td class="sku">B-2</td></tr></table>'></iframe>"""


@pytest.mark.e2e
def test_read_page_reads_each_key_in_its_own_frame_and_a_missing_one_as_missing() -> None:
    from playwright.async_api import async_playwright

    from bots.legacy.base import LegacyApp
    from bots.legacy.browser import find_browser, launch_options

    sel = load_orders(SELECTORS / "orders.yaml").model_copy(update={"recognise_ms": 1500})

    async def go() -> None:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(**launch_options(find_browser()))
            try:
                page = await browser.new_page()
                await page.set_content(PAGE)
                app = LegacyApp(page, "http://127.0.0.1:1", sel, "u", lambda: "p")
                fields = {
                    "nr": Sel.model_validate("dd.nr"),
                    "status": Sel.model_validate({"css": "span.status",
                                                  "frame": ["iframe.outer", "iframe.inner"]}),
                    "gone": Sel.model_validate({"css": "span", "frame": "iframe.nowhere"}),
                }
                rows = ("line_items", Sel.model_validate({"css": "tr.line",
                                                          "frame": "iframe.lines"}),
                        {"sku": Sel.model_validate("td.sku")})
                got = await app.read_page(page.main_frame, "order", fields, rows)
                assert got.fields.text("nr") == "ORD-1"
                assert got.fields.text("status") == "shipped"  # two frames down
                assert [r.text("sku") for r in got.rows] == ["A-1", "B-2"]
                assert got.rows_found is not None and got.rows_found.matched == 0
                assert got.fields.found["gone"].state == "missing"
                with pytest.raises(SelectorMissing, match=r"order\.gone \(span in frame "
                                                          r"iframe\.nowhere\) not found: its "
                                                          "frame is not there"):
                    got.fields.text("gone")
                # acting on keys: where (which frame) and what to click
                at = await app.require_all(page.main_frame, {"status": fields["status"]})
                assert at["status"][1] == "span.status" and at["status"][0] != page.main_frame
                with pytest.raises(SelectorMissing, match="gone: the frame iframe.nowhere"):
                    await app.require_all(page.main_frame, {"gone": fields["gone"]})
            finally:
                await browser.close()

    asyncio.run(go())
