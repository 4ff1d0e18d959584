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
