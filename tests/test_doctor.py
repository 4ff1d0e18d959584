"""`doctor --live` and the health check before `process`: a broken selector, a wrong
password or a stopped app is found before the first case, with a message naming it."""

from __future__ import annotations

import socket
from datetime import date
from pathlib import Path

import pytest
import yaml
from paths import CONFIG, ROOT, SELECTORS
from typer.testing import CliRunner

from bots.cli import app
from bots.queue import Queue
from bots.sandbox.data import build_dataset, pick_scenarios
from bots.tools.demo import DEMO_SEED, prepare_inputs
from bots.work.exit_codes import EXIT_ERROR, EXIT_OK
from bots.work.pipeline import execute

pytestmark = pytest.mark.e2e


def _order_number() -> str:
    return pick_scenarios(build_dataset(seed=DEMO_SEED, today=date.today()))["eligible"] \
        .order_number


def _settings_file(tmp_path: Path, sandbox, *, orders_selectors: dict | None = None,
                   orders_url: str | None = None) -> Path:
    data = yaml.safe_load((CONFIG / "settings.yaml").read_text(encoding="utf-8"))
    data.update(queue_url=f"sqlite:///{tmp_path / 'queue.sqlite'}",
                runs_dir=str(tmp_path / "runs"), intake={"sources": []},
                health={"order_number": _order_number()})
    data["orders"]["url"] = orders_url or sandbox.orders_url
    data["payments"]["url"] = sandbox.payments_url
    data["notify"]["outbox_dir"] = str(tmp_path / "outbox")
    if orders_selectors is not None:
        path = tmp_path / "orders.yaml"
        path.write_text(yaml.safe_dump(orders_selectors), encoding="utf-8")
        data["orders"]["selectors"] = str(path)
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump(data), encoding="utf-8")
    return settings


def _orders() -> dict:
    return yaml.safe_load((SELECTORS / "orders.yaml").read_text(encoding="utf-8"))


def _doctor(settings: Path, **env: str):  # noqa: ANN202
    return CliRunner().invoke(app, ["doctor", "--live", "-c", str(settings)],
                              env={"COLUMNS": "250", **env})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_doctor_live_passes_and_names_a_fallback_that_matched(sandbox, tmp_path: Path,
                                                              monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    orders = _orders()
    orders["order"]["status"] = ["#order-state", "#order-status"]  # the first one is gone
    result = _doctor(_settings_file(tmp_path, sandbox, orders_selectors=orders))
    assert result.exit_code == EXIT_OK, result.output
    line = next(x for x in result.output.splitlines() if "order.status" in x)
    assert "found (fallback)" in line and "#order-status" in line
    assert "0 missing/empty/unparseable, 0 problem(s)" in result.output


def test_doctor_live_fails_on_a_selector_that_matches_nothing(sandbox, tmp_path: Path,
                                                              monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    orders = _orders()
    orders["order"]["final_sale"] = "td.final-sale-flag"
    result = _doctor(_settings_file(tmp_path, sandbox, orders_selectors=orders))
    assert result.exit_code == EXIT_ERROR
    line = next(x for x in result.output.splitlines() if "order.final_sale" in x)
    assert "missing" in line and "/orders/" in line


def test_doctor_fails_on_a_deleted_required_key(sandbox, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    orders = _orders()
    del orders["order"]["delivery_date"]
    result = _doctor(_settings_file(tmp_path, sandbox, orders_selectors=orders))
    assert result.exit_code == EXIT_ERROR
    assert "order.delivery_date: Field required" in result.output


def test_doctor_live_fails_on_a_wrong_password(sandbox, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("REFUND_BOTS_PAYMENTS_PASSWORD", "not-the-password")
    result = _doctor(_settings_file(tmp_path, sandbox))
    assert result.exit_code == EXIT_ERROR
    # the login check says so once, and --live does not type the password again
    assert "refused" in result.output and "payment portal: login:" not in result.output


def test_doctor_live_fails_on_a_stopped_app(sandbox, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    stopped = f"http://127.0.0.1:{_free_port()}"
    result = _doctor(_settings_file(tmp_path, sandbox, orders_url=stopped))
    assert result.exit_code == EXIT_ERROR
    assert f"{stopped} does not answer" in result.output
    assert "order system: login: not answering" in result.output


def test_process_stops_before_the_first_case_when_a_key_is_missing(
        sandbox, settings_for, tmp_path: Path, capsys) -> None:
    today = date.today()
    prepare_inputs(tmp_path, build_dataset(seed=DEMO_SEED, today=today), today)
    orders = _orders()
    orders["order"]["status"] = "#order-state"
    path = tmp_path / "orders.yaml"
    path.write_text(yaml.safe_dump(orders), encoding="utf-8")
    settings = settings_for(sandbox, orders__selectors=str(path))
    assert execute(settings, "run", intake=True, process=True, today=today) == EXIT_ERROR
    out = capsys.readouterr().out
    assert "Selector health check failed before the first case" in out
    assert "order.status: missing" in out
    queue = Queue(settings.queue_url)
    assert all(c.attempts == 0 and c.state == "queued" for c in queue.cases()
               if c.state != "merged")
    assert not [r for r in sandbox.refunds() if r["operator"] == "refund.bot"]
