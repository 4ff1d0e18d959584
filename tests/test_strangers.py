"""Never tell a stranger (issue #12, section 4).

Customer messages go only to the address the order system has for the order's customer;
anyone else (another sender, a foreign Reply-To) is told only that the message was
received and will be checked, with no order facts, and the case escalates.
"""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from paths import CONFIG
from test_notify import notify, outbox, settings, smtp  # noqa: F401 - the smtp fixture

from bots.models import LineItem, OrderFacts, RefundRequest
from bots.notify import Notifier, OrderCustomer, same_phone
from bots.queue import Case, Queue

OWNER = OrderCustomer("ada@example.com", "+44 20 7946 0123")
ORDER_FACTS = ("ORD-100001", "1,234.50", "RF-000042", "Within 30 days", "4242")


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    return Queue(f"sqlite:///{tmp_path / 'q.sqlite'}")


@pytest.fixture
def notifier(tmp_path: Path, queue: Queue) -> Notifier:
    templates = Path(shutil.copytree(CONFIG / "templates", tmp_path / "templates"))
    return Notifier(settings(tmp_path, templates, None), queue.engine)


def case_of(queue: Queue, *reqs: RefundRequest) -> Case:
    case_id = 0
    for r in reqs:
        case_id, _ = queue.add_request(r)
    case = queue.get_case(case_id)
    assert case is not None
    return case


def req(source_id: str, channel: str = "email", email: str | None = "ada@example.com",
        **fields: Any) -> RefundRequest:
    return RefundRequest(channel=channel, source_id=source_id,
                         received_at=datetime(2026, 11, 28, tzinfo=UTC),
                         reason_text="refund please", customer_email=email,
                         customer_name=fields.pop("name", "Ada"), order_number="ORD-100001",
                         reply_to=fields.pop("reply_to", email), **fields)


def test_a_rejection_to_another_sender_says_only_received(
        notifier: Notifier, queue: Queue, tmp_path: Path) -> None:
    case = case_of(queue, req("<m1@x>", email="mallory@evil.example"))
    results = notify(notifier, case, "rejected", customer=OWNER)
    assert [r.to for r in results] == ["mallory@evil.example"]
    (line,) = outbox(tmp_path, "email")
    text = line["subject"] + line["body"]
    assert "received" in text.lower() and "will be checked" in text
    assert not any(fact in text for fact in ORDER_FACTS), text
    assert line["customer_name"] is None  # not even the name the sender gave back


def test_the_owner_is_answered_with_the_facts(
        notifier: Notifier, queue: Queue, tmp_path: Path) -> None:
    case = case_of(queue, req("<m1@x>"), req("<m2@x>", email="mallory@evil.example"))
    results = notify(notifier, case, "rejected", customer=OWNER)
    assert sorted(r.to for r in results) == ["ada@example.com", "mallory@evil.example"]
    lines = {line["to"]: line for line in outbox(tmp_path, "email")}
    assert "ORD-100001" in lines["ada@example.com"]["body"]
    assert "ORD-100001" not in lines["mallory@evil.example"]["body"]
    assert "ORD-100001" not in lines["mallory@evil.example"]["subject"]


def test_a_foreign_reply_to_is_never_answered(
        notifier: Notifier, queue: Queue, tmp_path: Path) -> None:
    """The customer's own From gets the answer; a Reply-To elsewhere gets nothing."""
    case = case_of(queue, req("<m1@x>", reply_to="collector@evil.example"))
    results = notify(notifier, case, "refunded", customer=OWNER)
    assert [r.to for r in results] == ["ada@example.com"]
    assert all(line["to"] == "ada@example.com" for line in outbox(tmp_path, "email"))


def test_a_stranger_with_a_foreign_reply_to_gets_the_note_at_the_sender(
        notifier: Notifier, queue: Queue, tmp_path: Path) -> None:
    case = case_of(queue, req("<m1@x>", email="eve@evil.example",
                                 reply_to="else@evil.example"))
    results = notify(notifier, case, "partial", customer=OWNER)
    assert [r.to for r in results] == ["eve@evil.example"]


def test_a_social_handle_is_never_told_order_facts(
        notifier: Notifier, queue: Queue, tmp_path: Path) -> None:
    """The order system has no handles: a handle is never proven to be the customer."""
    case = case_of(queue, req("twitter:1", channel="social", email=None,
                                 customer_handle="twitter:@ana", reply_to="twitter:@ana"))
    notify(notifier, case, "refunded", customer=OWNER)
    (line,) = outbox(tmp_path, "social")
    assert line["to"] == "twitter:@ana"
    assert not any(fact in line["body"] for fact in ORDER_FACTS)


def test_a_phone_contact_matching_the_order_is_the_customer(
        notifier: Notifier, queue: Queue, tmp_path: Path) -> None:
    case = case_of(queue, req("CALL-1", channel="phone", email=None,
                                 customer_phone="+442079460123", reply_to="+442079460123"))
    notify(notifier, case, "refunded", customer=OWNER)
    (line,) = outbox(tmp_path, "phone")
    assert "ORD-100001" in line["body"]


def test_same_phone_reads_one_number_however_written() -> None:
    assert same_phone("+44 20 7946 0123", "020 7946 0123")
    assert not same_phone("+44 20 7946 0124", "020 7946 0123")
    assert not same_phone("0123", "0123")  # too short to tell


def test_received_can_be_worded_by_ops(
        notifier: Notifier, queue: Queue, tmp_path: Path) -> None:
    (notifier.templates.folder / "received.txt.j2").write_text(
        "Subject: Got it {{ case_ref }}\nWe will look at it. {{ company_name }}\n")
    case = case_of(queue, req("<m1@x>", email="eve@evil.example"))
    notify(notifier, case, "rejected", customer=OWNER)
    (line,) = outbox(tmp_path, "email")
    assert line["subject"].startswith("Got it C-") and "Shop Ltd" in line["body"]


# -- the processor escalates a stranger's case before any rule runs ---------------------------


def _order(email: str = "ada@example.com") -> OrderFacts:
    return OrderFacts("ORD-100001", "Ada", email, "+44 20 7946 0123", date(2026, 11, 1), None,
                      "delivered", (LineItem("A-1", "Mug", "home", Decimal("10.00"), 1),),
                      Decimal("0.00"), "EUR", "**** 4242", Decimal("10.00"))


def test_processing_escalates_a_stranger_before_deciding(queue: Queue, tmp_path: Path) -> None:
    from bots.work.processing import Escalation, Processor

    stranger = case_of(queue, req("<m1@x>", email="mallory@evil.example"))
    with pytest.raises(Escalation, match="mallory@evil.example"):
        Processor._stranger(None, stranger, _order())  # type: ignore[arg-type]
    own = Queue(f"sqlite:///{tmp_path / 'own.sqlite'}")
    Processor._stranger(None, case_of(own, req("<m2@x>")), _order())  # type: ignore[arg-type]
    by_phone = Queue(f"sqlite:///{tmp_path / 'phone.sqlite'}")
    Processor._stranger(None, case_of(by_phone, req(  # type: ignore[arg-type]
        "CALL-1", channel="phone", email=None, customer_phone="+442079460123")), _order())


# -- never store a card (issue #12, section 4) -------------------------------------------------

VISA = "4111111111111111"


@pytest.mark.parametrize("sep", [" ", "\u00a0", "\u202f", ".", "_", "/", "\n", "-", " - ",
                                 "\u2060", "\u200b"])
def test_a_card_is_masked_across_any_separator(sep: str) -> None:
    from bots.intake.extract import clean_text, mask_secrets

    text = f"card {sep.join(VISA[i:i + 4] for i in range(0, 16, 4))} thanks"
    for stored in (mask_secrets(text), clean_text(mask_secrets(text))):
        digits = "".join(ch for ch in stored if ch.isdigit())
        assert VISA not in digits and digits.endswith("1111"), stored


def test_masking_before_the_nbsp_clean_up_still_masks() -> None:
    """Issue #12: masking ran before NBSPs became spaces, so the card was stored in clear."""
    from bots.intake.extract import clean_text, mask_secrets

    text = "\u00a0".join(VISA[i:i + 4] for i in range(0, 16, 4))
    assert "4111 1111 1111 1111" not in clean_text(mask_secrets(text))


@pytest.mark.parametrize("text", [
    "CVV 123", "cvv: 123", "CVC2 123", "my security code is 123", "Prüfziffer: 123",
    "Kartenprüfnummer 123", "Sicherheitscode 123", "cryptogramme visuel : 123",
    "code de sécurité 123", "código de seguridad: 123", "codice di sicurezza 123",
    "codice CVV è 123", "beveiligingscode: 123", "kaartverificatiecode 123", "CVV-Code 123",
])
def test_cvv_words_in_six_languages(text: str) -> None:
    from bots.intake.extract import mask_secrets

    assert "123" not in mask_secrets(text), mask_secrets(text)


@pytest.mark.parametrize("text", [
    "REFUND_BOTS_ORDERS_PASSWORD=Or~d*e%r+s&=9", "api_key=abc123def", "DB_SECRET = hunter22",
    "https://x.example/login?user=a&password=Or~d*e", "token=eyJhbGciOi.x.y",
])
def test_name_equals_secret_is_masked(text: str) -> None:
    from bots.intake.extract import mask_secrets

    masked = mask_secrets(text)
    assert "[redacted]" in masked and not any(
        s in masked for s in ("Or~d*e", "abc123def", "hunter22", "eyJhbGciOi")), masked


def test_agent_comments_and_notes_are_masked(queue: Queue) -> None:
    from bots.queue import CaseState

    case = case_of(queue, req("<m1@x>"))
    with queue.session() as s:
        from bots.queue.schema import Case as CaseRow

        row = s.get(CaseRow, case.id)
        assert row is not None
        row.state = CaseState.ESCALATED
    queue.human_decision(case.id, decision="reject", amount=None, agent="ana",
                         comment=f"customer gave card {VISA} cvc 999", run_id=None)
    after = queue.get_case(case.id)
    assert after is not None
    stored = " ".join([after.human_comment or "", after.reason or "",
                       *(a.detail for a in queue.audit_trail(case.id))])
    assert VISA not in stored and "999" not in stored


def test_quarantine_file_names_and_excerpts_are_masked(queue: Queue) -> None:
    from bots.models import Quarantined

    queue.add_quarantined(Quarantined("spreadsheet", "x", f"refund_{VISA}.xlsx: unreadable",
                                      "password=Or~d*e%r", f"/in/refund_{VISA}.xlsx"))
    from bots.queue.schema import QuarantineRow

    with queue.session() as s:
        (row,) = s.query(QuarantineRow).all()
        text = row.reason + row.excerpt + row.source_ref
    assert VISA not in text and "Or~d*e" not in text


def test_traces_lose_the_password_in_every_encoding(tmp_path: Path) -> None:
    """Form-urlencoded (browser style, %7E, '*'), JSON, HTML and base64 post bodies."""
    import base64
    import json
    import zipfile
    from urllib.parse import quote

    from bots.legacy.artifacts import scrub_zip

    password = "Or~d*e%r+s&=9 x"
    form = f"username=ops.bot&password={quote(password, safe='*-._')}".encode()
    bodies = {
        "form.dat": form,
        "form-lower.dat": form.lower(),
        "json.dat": json.dumps({"user": "ops.bot", "pass": password}).encode(),
        "trace.trace": json.dumps({"type": "action", "params": {"value": password}}).encode(),
        "b64.json": json.dumps({"postData": base64.b64encode(b"x" + form).decode()}).encode(),
        "b64-2.json": base64.b64encode(b"yy" + password.encode()),
        "html.html": b"<input value=\"Or~d*e%r+s&amp;=9 x\">",
    }
    path = tmp_path / "trace.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in bodies.items():
            z.writestr(name, data)
    scrub_zip(path, [password])
    with zipfile.ZipFile(path) as z:
        everything = b"\n".join(z.read(i) for i in z.infolist())
    for name, data in bodies.items():
        assert data not in everything, name
    for needle in (b"Or~d*e", b"Or%7Ed", b"or%7ed", b"Or~d\\u002a",
                   base64.b64encode(password.encode())[:8]):
        assert needle not in everything, needle
