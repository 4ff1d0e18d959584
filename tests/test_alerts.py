"""Alerts to ops staff through a real SMTP server (aiosmtpd) and a local webhook receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from paths import ROOT
from test_escalations import escalated_case
from test_notify import Inbox, free_port, start_smtp

from bots.alerts import Alert, Alerter, AlertSettings
from bots.config import Settings, load_settings
from bots.queue import Queue, utcnow
from bots.work import alerts
from bots.work.exit_codes import EXIT_PROBLEMS
from bots.work.pipeline import execute


class Receiver:
    """A webhook endpoint on a free port that keeps every JSON body it is sent."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def smtp() -> Iterator[tuple[int, Inbox]]:
    port = free_port()
    controller, inbox = start_smtp(port)
    try:
        yield port, inbox
    finally:
        controller.stop()


@pytest.fixture
def hook() -> Iterator[Receiver]:
    receiver = Receiver()
    try:
        yield receiver
    finally:
        receiver.close()


def settings_with_alerts(tmp_path: Path, port: int, hook_url: str, **extra: Any) -> Settings:
    return load_settings(
        ROOT / "config/settings.yaml", queue_url=f"sqlite:///{tmp_path / 'q.sqlite'}",
        runs_dir=str(tmp_path / "runs"), policy=str(ROOT / "config/policy.yaml"),
        signals=str(ROOT / "config/signals.yaml"),
        # a mailbox nobody answers for: the source cannot be read, the run exits 3
        intake={"sources": [{"kind": "imap", "host": "127.0.0.1", "port": free_port(),
                             "ssl": False, "user": "refunds", "password_secret": "NO_IMAP"}]},
        console={"public_url": "http://ops.example:8200", "sla_hours": 2},
        alerts={"email_to": ["ops@shop.example"], "from_address": "bots@shop.example",
                "smtp": {"host": "127.0.0.1", "port": port, "security": "none",
                         "timeout_seconds": 5},
                "webhook": {"url": hook_url}, **extra})


def test_a_run_that_exits_3_alerts_by_email_and_webhook_once(
        tmp_path: Path, smtp: tuple[int, Inbox], hook: Receiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("REFUND_BOTS_NO_IMAP", "x")
    port, inbox = smtp
    settings = settings_with_alerts(tmp_path, port, hook.url)
    assert execute(settings, "intake", intake=True, process=False) == EXIT_PROBLEMS

    [mail] = inbox.messages
    assert mail["To"] == "ops@shop.example" and "exited 3" in mail["Subject"]
    assert "http://ops.example:8200/runs#" in mail.get_content()
    [body] = hook.bodies
    assert body["condition"] == "run_problems" and body["details"]["exit_code"] == 3
    assert body["link"].startswith("http://ops.example:8200/runs#") and "exited 3" in body["text"]

    # the next run fails the same way within the hour: no second alert (no storm)
    assert execute(settings, "intake", intake=True, process=False) == EXIT_PROBLEMS
    assert len(inbox.messages) == 1 and len(hook.bodies) == 1
    # ...until the next period
    later = utcnow() + timedelta(hours=1)
    sender = alerts.alerter(settings)
    assert sender is not None
    again = sender.send(alerts.run_conditions(settings, "r2", "intake", 3, {})[0], later)
    assert again is not None and again.delivered == {"email": "sent", "webhook": "sent"}


def test_escalations_past_their_sla_alert_with_a_link_to_the_inbox(
        tmp_path: Path, smtp: tuple[int, Inbox], hook: Receiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    port, inbox = smtp
    settings = settings_with_alerts(tmp_path, port, hook.url)
    escalated_case(Queue(settings.queue_url), 1)
    assert alerts.check(settings, forecast=False) == []  # within the SLA
    [sent] = alerts.check(settings, forecast=False, now=utcnow() + timedelta(hours=3))
    assert sent.alert.condition == "escalations_past_sla"
    assert hook.bodies[0]["link"] == "http://ops.example:8200/inbox?overdue=1"
    assert "past the 2 h SLA" in inbox.messages[0]["Subject"]


def test_a_broken_channel_never_stops_the_other(tmp_path: Path, smtp: tuple[int, Inbox],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    port, inbox = smtp
    failing = Receiver(status=500)
    try:
        settings = settings_with_alerts(tmp_path, port, failing.url)
        sender = Alerter(settings.queue_url, settings.alerts or AlertSettings())
        sent = sender.send(Alert("test", "a test", "body", "http://x/"))
        assert sent is not None
        assert sent.delivered == {"email": "sent", "webhook": "HTTPStatusError 500"}
        assert len(inbox.messages) == 1
        assert json.loads(sender.history()[0].delivered)["webhook"] == "HTTPStatusError 500"
    finally:
        failing.close()


def test_webhook_url_comes_from_a_secret(monkeypatch: pytest.MonkeyPatch,
                                         hook: Receiver, tmp_path: Path) -> None:
    monkeypatch.setenv("REFUND_BOTS_TEAMS_HOOK", hook.url)
    sender = Alerter(f"sqlite:///{tmp_path / 'q.sqlite'}",
                     AlertSettings(webhook={"url_secret": "TEAMS_HOOK"}))  # type: ignore[arg-type]
    assert sender.send(Alert("x", "subject", "body", "http://c/")) is not None
    assert hook.bodies[0]["subject"] == "subject"
