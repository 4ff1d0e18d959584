"""Customer notifications against a real SMTP server (aiosmtpd) and real outbox files."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from paths import CONFIG
from sqlalchemy import update
from sqlalchemy.orm import Session

from bots.models import RefundRequest
from bots.notify import (
    OUTCOMES,
    Notifier,
    NotifySettings,
    NotifyState,
    SmtpSettings,
    TemplateError,
    card_numbers_in,
    sent_notifications,
)
from bots.queue import Case, NotificationRow, Queue

TEMPLATES = CONFIG / "templates"
CARD = "4111 1111 1111 1111"


class Inbox:
    """aiosmtpd handler keeping every accepted message."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted for delivery"


def free_port() -> int:
    # aiosmtpd's Controller cannot listen on port 0: take a free port from the OS first.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_smtp(port: int, **kwargs: Any) -> tuple[Controller, Inbox]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller, inbox


@pytest.fixture
def smtp() -> Iterator[tuple[int, Inbox]]:
    port = free_port()
    controller, inbox = start_smtp(port)
    try:
        yield port, inbox
    finally:
        controller.stop()


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    return Path(shutil.copytree(TEMPLATES, tmp_path / "templates"))


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    return Queue(f"sqlite:///{tmp_path / 'q.sqlite'}")


def settings(tmp_path: Path, templates: Path, port: int | None, **smtp: Any) -> NotifySettings:
    return NotifySettings(
        smtp=SmtpSettings(host="127.0.0.1", port=port, security="none", timeout_seconds=5,
                          **smtp) if port else None,
        outbox_dir=tmp_path / "outbox", templates_dir=templates,
        from_address="refunds@shop.example", company_name="Shop Ltd")


def request(source_id: str, channel: str = "email", email: str | None = "ada@example.com",
            order: str = "ORD-100001", **fields: Any) -> RefundRequest:
    return RefundRequest(channel=channel, source_id=source_id,
                         received_at=datetime(2026, 11, 28, tzinfo=UTC), reason_text="refund",
                         customer_email=email, customer_name=fields.pop("name", "Ada Lovelace"),
                         order_number=order, reply_to=fields.pop("reply_to", email), **fields)


def make_case(queue: Queue, *reqs: RefundRequest) -> Case:
    case_id = 0
    for r in reqs:
        case_id, _ = queue.add_request(r)
    case = queue.get_case(case_id)
    assert case is not None
    return case


def notify(notifier: Notifier, case: Case, outcome: str = "refunded", **kw: Any) -> list[Any]:
    args: dict[str, Any] = {"amount": Decimal("1234.5"), "currency": "EUR",
                            "refund_number": "RF-000042", "reason": "Within 30 days.",
                            "card_last4": "4242", "run_id": "run-1", **kw}
    return notifier.notify_case(case, outcome=outcome, **args)


def outbox(tmp_path: Path, channel: str) -> list[dict[str, Any]]:
    path = tmp_path / "outbox" / f"{channel}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- email ------------------------------------------------------------------------------------


def test_email_reply_is_threaded_and_its_message_id_stored(tmp_path: Path, templates: Path,
                                                           queue: Queue, smtp: Any) -> None:
    port, inbox = smtp
    case = make_case(queue, request("CAFE.1234@mail.example"))
    notifier = Notifier(settings(tmp_path, templates, port), queue.engine)

    [result] = notify(notifier, case)

    assert result.state is NotifyState.SENT and result.to == "ada@example.com"
    [msg] = inbox.messages
    assert msg["In-Reply-To"] == "<CAFE.1234@mail.example>"
    assert msg["References"] == "<CAFE.1234@mail.example>"
    assert msg["Subject"] == f"Re: Your refund for order ORD-100001 ({case.ref})"
    assert msg["From"] == "Shop Ltd <refunds@shop.example>"
    assert msg["To"] == "Ada Lovelace <ada@example.com>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert inbox.envelopes == [("refunds@shop.example", ["ada@example.com"])]
    [row] = sent_notifications(queue.engine, case.id)
    assert row.state == "sent" and row.message_id == msg["Message-ID"]
    assert row.message_id.endswith("@shop.example>")
    body = msg.get_content()
    assert "We have refunded 1,234.50 EUR" in body and "RF-000042" in body
    assert "card ending in 4242" in body


def test_in_reply_to_wins_and_hashed_source_ids_do_not_thread(tmp_path: Path, templates: Path,
                                                              queue: Queue, smtp: Any) -> None:
    port, inbox = smtp
    threaded = make_case(queue, request("sha256:abc", in_reply_to="<orig@mail.example>"))
    unthreaded = make_case(queue, request("sha256:def", email="bob@example.com",
                                          order="ORD-100002"))
    notifier = Notifier(settings(tmp_path, templates, port), queue.engine)
    notify(notifier, threaded)
    notify(notifier, unthreaded)
    first, second = inbox.messages
    assert first["In-Reply-To"] == "<orig@mail.example>"
    assert second["In-Reply-To"] is None and second["References"] is None


def test_one_message_per_contact_on_its_own_channel(tmp_path: Path, templates: Path,
                                                    queue: Queue, smtp: Any) -> None:
    port, inbox = smtp
    case = make_case(
        queue,
        request("m1@mail.example"),
        request("m2@mail.example"),  # Ada again, same address: one answer, threaded to both
        request("m3@mail.example", email="bob@example.com", name="Bob"),
        request("chat-77", channel="chat", email=None, reply_to=None, customer_handle="@ada"),
        request("sheet#1", channel="spreadsheet", email="ada@example.com",
                reply_to="ada@example.com"),
        request("call-9", channel="phone", email=None, reply_to=None,
                customer_phone="+442079460958"),
    )
    notifier = Notifier(settings(tmp_path, templates, port), queue.engine)

    results = notify(notifier, case)

    assert [(r.channel, r.to, r.state) for r in results] == [
        ("email", "ada@example.com", NotifyState.SENT),
        ("email", "bob@example.com", NotifyState.SENT),
        ("chat", "@ada", NotifyState.SENT),
        ("spreadsheet", "ada@example.com", NotifyState.SENT),
        ("phone", "+442079460958", NotifyState.SENT),
    ]
    assert [m["To"] for m in inbox.messages] == ["Ada Lovelace <ada@example.com>",
                                                 "Bob <bob@example.com>"]
    ada = inbox.messages[0]
    assert ada["In-Reply-To"] == "<m2@mail.example>"
    assert ada["References"] == "<m1@mail.example> <m2@mail.example>"
    [chat] = outbox(tmp_path, "chat")
    assert chat["to"] == "@ada" and chat["case_ref"] == case.ref and chat["channel"] == "chat"
    assert chat["subject"].startswith("Your refund for order ORD-100001")  # no "Re: " here
    assert "1,234.50 EUR" in chat["body"] and chat["notification_id"].startswith("n-")
    assert {"created_at", "in_reply_to", "kind"} <= chat.keys()
    assert [line["to"] for line in outbox(tmp_path, "spreadsheet")] == ["ada@example.com"]
    assert [line["to"] for line in outbox(tmp_path, "phone")] == ["+442079460958"]


def test_running_twice_sends_nothing_new(tmp_path: Path, templates: Path, queue: Queue,
                                         smtp: Any) -> None:
    port, inbox = smtp
    case = make_case(queue, request("m1@mail.example"),
                     request("chat-1", channel="chat", email=None, reply_to="conv-1"))
    first = notify(Notifier(settings(tmp_path, templates, port), queue.engine), case)
    again = notify(Notifier(settings(tmp_path, templates, port), queue.engine), case)

    assert [r.state for r in first] == [NotifyState.SENT, NotifyState.SENT]
    assert [r.state for r in again] == [NotifyState.SKIPPED, NotifyState.SKIPPED]
    assert all(r.detail.startswith("already sent") for r in again)
    assert [r.notification_id for r in again] == [r.notification_id for r in first]
    assert len(inbox.messages) == 1 and len(outbox(tmp_path, "chat")) == 1
    # Another outcome for the same contacts is a new message.
    later = notify(Notifier(settings(tmp_path, templates, port), queue.engine), case,
                   outcome="approved")
    assert [r.state for r in later] == [NotifyState.SENT, NotifyState.SENT]
    assert len(inbox.messages) == 2


# -- card numbers -----------------------------------------------------------------------------


def test_card_numbers_never_leave_in_full(tmp_path: Path, templates: Path, queue: Queue,
                                          smtp: Any) -> None:
    port, inbox = smtp
    case = make_case(queue, request("m1@mail.example", name=f"Ada {CARD}"),
                     request("c1", channel="chat", email=None, reply_to="conv-1"))
    notifier = Notifier(settings(tmp_path, templates, port), queue.engine)

    results = notify(notifier, case, outcome="partial", card_last4="4111111111111111",
                     reason=f"You paid with {CARD}; final-sale items are not refundable.")

    assert [r.state for r in results] == [NotifyState.SENT, NotifyState.SENT]
    texts = [str(inbox.messages[0]), json.dumps(outbox(tmp_path, "chat"))]
    for text in texts:
        assert "4111111111111111" not in text.replace(" ", "")
        assert not card_numbers_in(text)
    body = inbox.messages[0].get_content()
    assert "card ending in 1111" in body and "**** **** **** 1111" in body
    assert inbox.messages[0]["To"] == "Ada **** **** **** 1111 <ada@example.com>"


def test_a_card_number_the_mask_misses_is_refused(tmp_path: Path, templates: Path,
                                                  queue: Queue, smtp: Any) -> None:
    port, inbox = smtp
    case = make_case(queue, request("m1@mail.example"))
    notifier = Notifier(settings(tmp_path, templates, port), queue.engine)
    [result] = notify(notifier, case, outcome="rejected",
                      reason="Card 4111.1111.1111.1111 was declined.")
    assert result.state is NotifyState.FAILED and "card number" in (result.error or "")
    assert inbox.messages == [] and sent_notifications(queue.engine, case.id) == []


def test_card_check_leaves_order_and_phone_numbers_alone() -> None:
    assert card_numbers_in("order ORD-100001, call +44 20 7946 0958, total 1,234.50") == []
    assert card_numbers_in("pay 4111-1111-1111-1111 now") == ["4111111111111111"]


# -- templates --------------------------------------------------------------------------------


def test_template_edits_take_effect(tmp_path: Path, templates: Path, queue: Queue,
                                    smtp: Any) -> None:
    port, inbox = smtp
    notifier = Notifier(settings(tmp_path, templates, port), queue.engine)
    notify(notifier, make_case(queue, request("m1@mail.example")))
    (templates / "refunded.txt.j2").write_text(
        "Subject: Money back for {{ order_number }}\nHi {{ customer_name }}, "
        "{{ amount }} {{ currency }} is on its way.\n", encoding="utf-8")
    notify(notifier, make_case(queue, request("m2@mail.example", email="bob@example.com",
                                              order="ORD-100002", name="Bob")))
    assert inbox.messages[1]["Subject"] == "Re: Money back for ORD-100002"
    assert inbox.messages[1].get_content().replace("\r\n", "\n") == (
        "Hi Bob, 1,234.50 EUR is on its way.\n")


@pytest.mark.parametrize(("text", "words"), [
    ("Subject: x\n{% if amount %}no end\n", ["refunded.txt.j2", "line 2", "syntax"]),
    ("Subject: x\nDear {{ customer_nmae }}\n", ["refunded.txt.j2", "customer_nmae"]),
    ("Dear {{ customer_name }}\n", ["refunded.txt.j2", "Subject:"]),
    ("Subject: {{ ''.__class__.__mro__ }}\n", ["refunded.txt.j2", "template error"]),
])
def test_broken_template_names_the_file_and_sends_nothing(
        tmp_path: Path, templates: Path, queue: Queue, smtp: Any, text: str,
        words: list[str]) -> None:
    port, inbox = smtp
    (templates / "refunded.txt.j2").write_text(text, encoding="utf-8")
    notifier = Notifier(settings(tmp_path, templates, port), queue.engine)
    case = make_case(queue, request("m1@mail.example"))
    with pytest.raises(TemplateError) as err:
        notify(notifier, case)
    for word in words:
        assert word in str(err.value)
    assert inbox.messages == [] and sent_notifications(queue.engine, case.id) == []


def test_missing_template_and_check_templates(tmp_path: Path, templates: Path,
                                              queue: Queue) -> None:
    notifier = Notifier(settings(tmp_path, templates, None), queue.engine)
    assert [p.name for p in notifier.check_templates()] == [f"{o}.txt.j2" for o in OUTCOMES]
    (templates / "approved.txt.j2").unlink()
    with pytest.raises(TemplateError, match=r"approved\.txt\.j2: template not found"):
        notifier.check_templates()


# -- failures and retries ---------------------------------------------------------------------


def test_smtp_down_fails_then_sends_on_retry(tmp_path: Path, templates: Path,
                                             queue: Queue) -> None:
    port = free_port()  # nothing listens here yet
    case = make_case(queue, request("m1@mail.example"),
                     request("c1", channel="chat", email=None, reply_to="conv-1"))
    notifier = Notifier(settings(tmp_path, templates, port), queue.engine)

    down = notify(notifier, case)
    assert [r.state for r in down] == [NotifyState.FAILED, NotifyState.SENT]
    assert "Connection" in (down[0].error or "") or "refused" in (down[0].error or "")
    assert [r.state for r in sent_notifications(queue.engine, case.id)] == ["failed", "sent"]

    controller, inbox = start_smtp(port)
    try:
        retry = notify(Notifier(settings(tmp_path, templates, port), queue.engine), case)
        third = notify(notifier, case)
    finally:
        controller.stop()
    assert [r.state for r in retry] == [NotifyState.SENT, NotifyState.SKIPPED]
    assert retry[0].notification_id == down[0].notification_id
    assert [r.state for r in third] == [NotifyState.SKIPPED, NotifyState.SKIPPED]
    assert len(inbox.messages) == 1 and len(outbox(tmp_path, "chat")) == 1
    [row, _] = sent_notifications(queue.engine, case.id)
    assert row.attempts == 2 and inbox.messages[0]["Message-ID"] == row.message_id


def test_pending_smtp_row_is_retried_only_after_a_minute(tmp_path: Path, templates: Path,
                                                         queue: Queue, smtp: Any) -> None:
    """A crash between 'pending' and 'sent' (or a run sending right now) leaves a pending row."""
    port, inbox = smtp
    case = make_case(queue, request("m1@mail.example"))
    notifier = Notifier(settings(tmp_path, templates, port), queue.engine)
    notify(notifier, case)
    _set_row(queue, case, state="pending", sent_at=None)

    [fresh] = notify(notifier, case)
    assert fresh.state is NotifyState.FAILED and "less than 60 s" in (fresh.error or "")
    assert len(inbox.messages) == 1

    _set_row(queue, case, updated_at=datetime.now(UTC) - timedelta(minutes=2))
    [stale] = notify(notifier, case)
    assert stale.state is NotifyState.SENT
    assert len(inbox.messages) == 2  # the documented at-least-once edge
    assert inbox.messages[0]["Message-ID"] == inbox.messages[1]["Message-ID"]


def test_pending_outbox_row_is_retried_at_once_with_the_same_id(tmp_path: Path, templates: Path,
                                                                queue: Queue) -> None:
    case = make_case(queue, request("c1", channel="chat", email=None, reply_to="conv-1"))
    notifier = Notifier(settings(tmp_path, templates, None), queue.engine)
    notify(notifier, case)
    _set_row(queue, case, state="pending", sent_at=None)
    [result] = notify(notifier, case)
    assert result.state is NotifyState.SENT
    first, second = outbox(tmp_path, "chat")
    assert first == second  # same notification id: the chat tool drops the repeat


def test_smtp_login_uses_the_named_secret(tmp_path: Path, templates: Path, queue: Queue,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bytes, bytes]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                      data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        seen.append((data.login, data.password))
        return AuthResult(success=data.password == b"s3cret")

    monkeypatch.setenv("REFUND_BOTS_SMTP_PASSWORD", "s3cret")
    port = free_port()
    controller, inbox = start_smtp(port, authenticator=authenticator, auth_require_tls=False)
    try:
        notifier = Notifier(settings(tmp_path, templates, port, username="bot",
                                     password_secret="SMTP_PASSWORD"), queue.engine)
        [result] = notify(notifier, make_case(queue, request("m1@mail.example")))
    finally:
        controller.stop()
    assert result.state is NotifyState.SENT and seen == [(b"bot", b"s3cret")]
    assert len(inbox.messages) == 1


def test_email_without_smtp_goes_to_the_email_outbox(tmp_path: Path, templates: Path,
                                                     queue: Queue) -> None:
    case = make_case(queue, request("m1@mail.example"))
    [result] = notify(Notifier(settings(tmp_path, templates, None), queue.engine), case)
    assert result.state is NotifyState.SENT
    [line] = outbox(tmp_path, "email")
    assert line["references"] == ["<m1@mail.example>"] and line["message_id"].startswith("<")


def test_disabled_or_no_address_is_skipped(tmp_path: Path, templates: Path,
                                           queue: Queue) -> None:
    case = make_case(queue, request("c1", channel="chat", email=None, reply_to=None))
    [no_address] = notify(Notifier(settings(tmp_path, templates, None), queue.engine), case)
    assert no_address.state is NotifyState.SKIPPED and "no address" in no_address.detail
    off = settings(tmp_path, templates, None).model_copy(update={"enabled": False})
    [disabled] = notify(Notifier(off, queue.engine), case)
    assert disabled.state is NotifyState.SKIPPED and "disabled" in disabled.detail
    assert not (tmp_path / "outbox").exists()


def _set_row(queue: Queue, case: Case, **values: Any) -> None:
    with Session(queue.engine) as s, s.begin():
        s.execute(update(NotificationRow).where(NotificationRow.case_id == case.id)
                  .values(**values))


# -- the transactional outbox -------------------------------------------------------------------


def _finish_with_outbox(queue: Queue, notifier: Notifier, case: Case,
                        outcome: str = "refunded") -> None:
    held = queue.claim("w", 60)
    assert held is not None and held.id == case.id

    def record(s: Session, fenced: Case) -> object:
        return notifier.record(s, fenced, outcome=outcome, amount=Decimal("10.00"),
                               currency="EUR", refund_number="RF-000042", reason="ok",
                               card_last4="4242", run_id="run-1")

    queue.finish(held.lease, state="done", outcome=outcome, reason="ok", actor="w",
                 run_id="run-1", outbox=record)


def test_a_crash_between_finishing_and_telling_loses_no_message(
        tmp_path: Path, templates: Path, queue: Queue, smtp: Any) -> None:
    port, inbox = smtp
    notifier = Notifier(settings(tmp_path, templates, port), queue.engine)
    case = make_case(queue, request("m1@mail.example"),
                     request("c1", channel="chat", email=None, reply_to="conv-1"))
    _finish_with_outbox(queue, notifier, case)  # ... and the runner dies here
    assert [r.state for r in sent_notifications(queue.engine, case.id)] == ["pending"] * 2
    swept = Notifier(settings(tmp_path, templates, port), queue.engine).send_due()
    assert sorted(r.state for r in swept) == [NotifyState.SENT, NotifyState.SENT]
    assert len(inbox.messages) == 1 and len(outbox(tmp_path, "chat")) == 1
    assert "We have refunded 10.00 EUR" in inbox.messages[0].get_content()
    assert notifier.send_due() == []  # nothing twice


def test_a_lost_lease_records_no_message(tmp_path: Path, templates: Path, queue: Queue) -> None:
    from bots.queue import LeaseLost

    notifier = Notifier(settings(tmp_path, templates, None), queue.engine)
    case = make_case(queue, request("m1@mail.example"))
    held = queue.claim("w", 60)
    assert held is not None
    stale = held.lease
    queue.release(held.lease, actor="w", run_id="r", why="test")
    with pytest.raises(LeaseLost):
        queue.finish(stale, state="done", outcome="refunded", reason="x", actor="w",
                     run_id="r", outbox=lambda s, c: notifier.record(
                         s, c, outcome="refunded", amount=None, currency=None,
                         refund_number=None, reason="x", card_last4=None, run_id="r"))
    assert sent_notifications(queue.engine, case.id) == []


def test_an_outage_is_retried_with_backoff_then_given_up(tmp_path: Path, templates: Path,
                                                         queue: Queue) -> None:
    port = free_port()  # nothing listens: every try fails
    base = settings(tmp_path, templates, port)
    notifier = Notifier(base.model_copy(update={"max_tries": 3, "retry_backoff_seconds": 30}),
                        queue.engine)
    case = make_case(queue, request("m1@mail.example"))
    _finish_with_outbox(queue, notifier, case)
    [first] = notifier.send_due()
    assert first.state is NotifyState.FAILED
    assert notifier.send_due() == []  # not due yet: the backoff holds it
    [row] = sent_notifications(queue.engine, case.id)
    assert row.next_attempt_at is not None
    assert row.next_attempt_at > datetime.now(UTC) + timedelta(seconds=20)
    _set_row(queue, case, next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
    [second] = notifier.send_due()
    [row] = sent_notifications(queue.engine, case.id)
    assert second.state is NotifyState.FAILED and row.next_attempt_at is not None
    assert row.next_attempt_at > datetime.now(UTC) + timedelta(seconds=50)  # doubled
    _set_row(queue, case, next_attempt_at=None)
    [third] = notifier.send_due()
    assert third.state is NotifyState.GAVE_UP and third.error
    assert notifier.send_due() == []  # given up: ops look at it
    assert sent_notifications(queue.engine, case.id)[0].attempts == 3


def test_a_template_fixed_after_a_failure_is_used_on_the_retry(
        tmp_path: Path, templates: Path, queue: Queue, smtp: Any) -> None:
    port, inbox = smtp
    notifier = Notifier(settings(tmp_path, templates, port).model_copy(
        update={"retry_backoff_seconds": 0}), queue.engine)
    case = make_case(queue, request("m1@mail.example"))
    good = (templates / "refunded.txt.j2").read_text(encoding="utf-8")
    (templates / "refunded.txt.j2").write_text("Subject: x\n{% if %}\n", encoding="utf-8")
    _finish_with_outbox(queue, notifier, case)  # the refund is recorded all the same
    [broken] = notifier.send_due()
    assert broken.state is NotifyState.FAILED and "refunded.txt.j2" in (broken.error or "")
    (templates / "refunded.txt.j2").write_text(good, encoding="utf-8")
    [fixed] = notifier.send_due()
    assert fixed.state is NotifyState.SENT and len(inbox.messages) == 1
    [row] = sent_notifications(queue.engine, case.id)
    assert row.subject.startswith("Re: Your refund") and "RF-000042" in row.body
