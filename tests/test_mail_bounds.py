"""Mail: bounded and honest (issue #12, section 3)."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from bots.decide.signals import Contact, SignalSettings, _reply_to_elsewhere
from bots.intake.eml import MAX_MIME_CONTAINERS, MAX_MIME_PARTS, parse_eml_bytes, read_eml_folder
from bots.intake.sources import SourceConfig, read_source
from bots.models import Quarantined, RefundRequest
from bots.queue import Queue
from bots.runs import RunFolder
from bots.work.pipeline import IntakeStats, _enqueue


def mail(body: str = "Please refund ORD-100001, it arrived broken.",
         sender: str = "ada@example.org", message_id: str = "<a1@mail.example>",
         **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "refunds@shop.example"
    msg["Subject"] = "Refund"
    msg["Message-ID"] = message_id
    for key, value in headers.items():
        msg[key.replace("_", "-")] = value
    msg.set_content(body)
    return bytes(msg)


def multipart(parts: int, nesting: int = 1) -> bytes:
    inner = b"".join(b"--b0\r\nContent-Type: text/plain\r\n\r\nORD-100001 broken\r\n"
                     for _ in range(parts)) + b"--b0--\r\n"
    body, ctype = inner, b"multipart/mixed; boundary=b0"
    for level in range(1, nesting):
        body = (f"--b{level}\r\nContent-Type: ".encode() + ctype + b"\r\n\r\n" + body
                + f"--b{level}--\r\n".encode())
        ctype = f"multipart/mixed; boundary=b{level}".encode()
    return (b"From: ada@example.org\r\nMessage-ID: <m@x>\r\nSubject: refund\r\n"
            b"Content-Type: " + ctype + b"\r\n\r\n" + body)


def test_too_many_mime_parts_is_quarantined_before_parsing() -> None:
    item = parse_eml_bytes(multipart(20_000), source_ref="x", max_bytes=10**8)
    assert isinstance(item, Quarantined) and "MIME parts" in item.reason


def test_deep_nesting_is_quarantined() -> None:
    item = parse_eml_bytes(multipart(1, nesting=MAX_MIME_CONTAINERS + 2), source_ref="x")
    assert isinstance(item, Quarantined) and "nests" in item.reason


def test_an_ordinary_multipart_mail_is_read() -> None:
    item = parse_eml_bytes(multipart(3, nesting=3), source_ref="x")
    assert isinstance(item, RefundRequest) and item.order_number == "ORD-100001"
    assert MAX_MIME_PARTS >= 50


def test_a_symlink_in_the_inbox_is_refused_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("From: ada@example.org\n\nrefund ORD-100001 card data")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.eml").write_bytes(mail())
    (inbox / "link.eml").symlink_to(secret)
    items = list(read_eml_folder(inbox))
    refused = [i for i in items if isinstance(i, Quarantined)]
    assert len(items) == 2 and len(refused) == 1
    assert "symbolic link" in refused[0].reason and "card data" not in refused[0].excerpt


def test_a_fifo_in_the_inbox_is_refused_without_blocking(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    os.mkfifo(inbox / "pipe.eml")
    done: list[list[object]] = []
    reader = threading.Thread(target=lambda: done.append(list(read_eml_folder(inbox))),
                              daemon=True)
    reader.start()
    reader.join(10)
    assert done, "reading the folder blocked on the FIFO"
    (item,) = done[0]
    assert isinstance(item, Quarantined) and "FIFO" in item.reason


@pytest.mark.parametrize("kind", ["spreadsheet", "maildir"])
def test_other_folders_refuse_links_too(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "target.csv"
    target.write_text("Order #,E-mail\nORD-100001,ada@example.org\n")
    folder = tmp_path / "in"
    if kind == "maildir":
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True)
        (folder / "new" / "1.host").symlink_to(target)
    else:
        folder.mkdir()
        (folder / "link.csv").symlink_to(target)
    items = list(read_source(SourceConfig(kind=kind, path=folder)))  # type: ignore[arg-type]
    assert len(items) == 1 and isinstance(items[0], Quarantined), items
    assert "symbolic link" in items[0].reason


def test_a_reused_message_id_with_other_content_is_a_conflict(tmp_path: Path) -> None:
    queue = Queue(f"sqlite:///{tmp_path / 'q.sqlite'}")
    run = RunFolder.create(tmp_path / "runs")
    stats = IntakeStats()
    first = parse_eml_bytes(mail(), source_ref="1.eml")
    again = parse_eml_bytes(mail(), source_ref="1-copy.eml")
    forged = parse_eml_bytes(mail("Refund ORD-100002 to me please", sender="eve@evil.example"),
                             source_ref="2.eml")
    assert isinstance(first, RefundRequest) and isinstance(again, RefundRequest)
    assert isinstance(forged, RefundRequest) and forged.source_id == first.source_id
    _enqueue(queue, run, [first], stats)
    _enqueue(queue, run, [again], stats)
    assert stats.already_seen == 1 and stats.quarantined == 0  # the same mail read twice
    _enqueue(queue, run, [forged], stats)
    assert stats.quarantined == 1
    (row,) = queue.quarantined(run.run_id)
    assert "already used by another message" in row.reason
    run.close()


def test_reply_to_elsewhere_is_a_signal() -> None:
    from bots.decide.signals import SignalContext

    contacts = (Contact("email", "ada@example.org", None, datetime(2026, 11, 1, tzinfo=UTC),
                        reply_to="collector@evil.example"),)
    ctx = SignalContext.__new__(SignalContext)
    object.__setattr__(ctx, "contacts", contacts)
    signal = _reply_to_elsewhere(SignalSettings(), ctx)
    assert signal is not None and "collector@evil.example" in signal.explanation
    object.__setattr__(ctx, "contacts", (Contact("email", "ada@example.org", None,
                                                 datetime(2026, 11, 1, tzinfo=UTC),
                                                 reply_to="ADA@example.org"),))
    assert _reply_to_elsewhere(SignalSettings(), ctx) is None
