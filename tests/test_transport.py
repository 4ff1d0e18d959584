"""Encryption in transit by default: clear text to another machine is refused unless the
settings explicitly allow it (and then doctor warns)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from paths import ROOT
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from bots.cli import app
from bots.config import load_settings
from bots.transport import insecure_transports, is_loopback, secure_postgres_url
from bots.work.exit_codes import EXIT_ERROR
from bots.work.pipeline import execute


@pytest.fixture(autouse=True)
def _root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def settings(tmp_path: Path, **over: object):  # noqa: ANN201
    base = {"orders__url": "https://orders.example.com", "payments__url":
            "https://pay.example.com", "queue_url": f"sqlite:///{tmp_path / 'q.sqlite'}",
            "runs_dir": str(tmp_path / "runs"), "intake__sources": []}
    return load_settings(None, **{**base, **over})


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.8.9.1", "::1", "[::1]"])
def test_loopback(host: str) -> None:
    assert is_loopback(host)


def test_tls_everywhere_is_clean(tmp_path: Path) -> None:
    assert insecure_transports(settings(tmp_path)) == []


def test_each_clear_text_connection_is_named(tmp_path: Path) -> None:
    s = settings(tmp_path, orders__url="http://orders.example.com",
                 queue_url="postgresql+psycopg://bot@db.example.com/q?sslmode=disable",
                 intake__sources=[{"kind": "imap", "host": "imap.example.com", "port": 143,
                                   "user": "u", "password_secret": "IMAP_PW", "ssl": False,
                                   "starttls": False}],
                 notify={"from_address": "shop@example.com",
                         "smtp": {"host": "smtp.example.com", "security": "none"}})
    found = " | ".join(insecure_transports(s))
    assert "orders.url" in found and "IMAP" in found and "smtp" in found
    assert "sslmode=disable" in found and "payments" not in found


def test_remote_postgres_gets_sslmode_require_by_default() -> None:
    url = secure_postgres_url(make_url("postgresql+psycopg://bot@db.example.com/q"))
    assert url.query["sslmode"] == "require"
    local = secure_postgres_url(make_url("postgresql+psycopg://bot@127.0.0.1:5432/q"))
    assert "sslmode" not in local.query
    explicit = secure_postgres_url(make_url("postgresql+psycopg://b@db.example.com/q?sslmode="
                                            "verify-full"))
    assert explicit.query["sslmode"] == "verify-full"


def test_a_run_refuses_clear_text_unless_allowed(tmp_path: Path) -> None:
    s = settings(tmp_path, payments__url="http://pay.example.com")
    assert execute(s, "intake", intake=True, process=False) == EXIT_ERROR
    allowed = settings(tmp_path, payments__url="http://pay.example.com",
                       allow_insecure_transport=True)
    assert execute(allowed, "intake", intake=True, process=False) == 0


def test_doctor_warns_when_clear_text_is_allowed(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "config" / "settings.yaml").read_text())
    data["orders"]["url"] = "http://orders.example.com"
    data.update(queue_url=f"sqlite:///{tmp_path / 'q.sqlite'}", allow_insecure_transport=True)
    cfg = tmp_path / "settings.yaml"
    cfg.write_text(yaml.safe_dump(data))
    out = CliRunner().invoke(app, ["doctor", "--config", str(cfg)], env={"COLUMNS": "250"})
    assert "WARNING allow_insecure_transport" in out.output
