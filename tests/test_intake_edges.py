"""Intake edge cases: BOM'd and huge-header mail, oversized CSV cells, batched queue inserts."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bots.config import IntakeSettings
from bots.intake import eml, imap
from bots.intake.eml import MAX_HEADER_BYTES, parse_eml_bytes, read_eml_folder
from bots.intake.imap import MailboxConfig
from bots.intake.sources import SourceConfig, read_source
from bots.intake.spreadsheet import CELL_LIMIT, _cut, read_spreadsheet
from bots.models import IntakeItem, Quarantined, RefundRequest
from bots.queue import AuditRow, Case, Queue, RequestRow
from bots.runs import RunFolder
from bots.work import pipeline

WHEN = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)

# --------------------------------------------------------------------------- email


def mail(subject: str = "Refund ORD-100001") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Ada Lovelace <ada@example.org>"
    msg["To"] = "refunds@shop.example"
    msg["Subject"] = subject
    msg["Date"] = "Sat, 28 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = "<edge-1@mail.example>"
    msg.set_content("The kettle arrived broken. Please refund 24.50 EUR.\n")
    return bytes(msg)


def with_header(data: bytes, line: bytes) -> bytes:
    """A raw header line added on top (EmailMessage would fold it, slowly)."""
    return line + b"\r\n" + data


def fields(item: IntakeItem) -> dict[str, Any]:
    assert isinstance(item, RefundRequest), item
    return {k: v for k, v in dataclasses.asdict(item).items() if k != "source_ref"}


@pytest.mark.parametrize("lead", [b"\xef\xbb\xbf", b"\r\n\r\n", b"\n  \n", b"\xef\xbb\xbf\r\n"],
                         ids=["bom", "blank lines", "whitespace", "bom and blank line"])
def test_mail_with_a_bom_or_blank_lines_first_reads_like_without(lead: bytes,
                                                                  tmp_path: Path) -> None:
    (tmp_path / "a-plain.eml").write_bytes(mail())
    (tmp_path / "b-lead.eml").write_bytes(lead + mail())
    plain, led = read_eml_folder(tmp_path)
    assert fields(led) == fields(plain)
    assert led.order_number == "ORD-100001" and led.customer_email == "ada@example.org"
    assert led.requested_amount == Decimal("24.50")


def test_a_file_of_blank_lines_is_still_not_a_mail() -> None:
    item = parse_eml_bytes(b"\xef\xbb\xbf\r\n\r\n  \n", source_ref="blank.eml")
    assert isinstance(item, Quarantined) and "no mail headers" in item.reason


@pytest.mark.parametrize("line", [
    b"Subject: " + b"refund " * 150_000,  # ~1 MB of words: ~18 s in the stdlib parser
    b"X-Junk: " + b"x" * 1_000_000,
], ids=["subject", "x-header"])
def test_a_megabyte_of_headers_is_quarantined_with_the_reason(line: bytes) -> None:
    item = parse_eml_bytes(with_header(mail(), line), source_ref="huge.eml")
    assert isinstance(item, Quarantined), item
    assert item.reason.startswith("mail headers are 1.0 MB, more than the 256 KB")
    assert item.source_id.startswith("sha256:") and len(item.excerpt) <= 200


def test_thousands_of_received_lines_are_quarantined() -> None:
    received = b"".join(b"Received: from relay%d.example by mx.example; "
                        b"Sat, 28 Nov 2026 10:00:00 +0000\r\n" % i for i in range(5000))
    item = parse_eml_bytes(received + mail(), source_ref="loop.eml")
    assert isinstance(item, Quarantined) and "more than the 256 KB" in item.reason


def test_headers_just_under_the_limit_are_read() -> None:
    pad = b"X-Pad: " + b"x" * (MAX_HEADER_BYTES - 2000)
    item = parse_eml_bytes(with_header(mail(), pad), source_ref="pad.eml")
    assert isinstance(item, RefundRequest) and item.order_number == "ORD-100001"


def test_a_large_body_without_headers_is_not_called_a_header_problem() -> None:
    item = parse_eml_bytes(b"just text " * 40_000, source_ref="text.eml")
    assert isinstance(item, Quarantined) and "no mail headers" in item.reason


def test_a_header_value_is_cut_before_the_structured_parse() -> None:
    # Comments make the stdlib's address parser cubic (16,000 characters: 4 s). Cut at
    # MAX_FIELD_CHARS, the address behind them is gone: no sender, quarantined at once.
    data = mail().replace(b"From: Ada Lovelace", b"From: " + b"(x)" * 5000 + b" Ada", 1)
    item = parse_eml_bytes(data, source_ref="comments.eml")
    assert isinstance(item, Quarantined) and "no sender" in item.reason


def test_a_long_card_number_run_at_the_scan_limit_is_cut_cheaply() -> None:
    # The old end-anchored regex was quadratic here (~17 s for 50,000 digits).
    text = "1" * 30_000 + "a" + "2" * 40_000
    assert eml._bounded(text) == "1" * 30_000 + "a"


def test_imap_shares_the_parse_and_the_bounded_header_policy() -> None:
    assert imap.parse_eml_bytes is parse_eml_bytes

    class Conn:  # the UID FETCH of an oversized message's three headers
        def uid(self, *_: object) -> tuple[str, list[Any]]:
            head = (b"Message-ID: <big@mail.example>\r\nFrom: " + b"(x)" * 20_000
                    + b" <ada@example.org>\r\nSubject: " + b"refund " * 100_000 + b"\r\n\r\n")
            return "OK", [(b"7 (UID 7 BODY[HEADER.FIELDS (MESSAGE-ID FROM SUBJECT)] {1}", head)]

    cfg = MailboxConfig(host="imap.example", user="u", password_secret="x")
    item = imap._oversized(Conn(), cfg, "7", "1", 9_000_000, "imap://u@imap.example/INBOX")
    assert isinstance(item, Quarantined) and item.source_id == "big@mail.example"
    assert "larger than the 5,000,000-byte limit" in item.reason and len(item.excerpt) <= 200


# --------------------------------------------------------------------------- spreadsheet


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["Order #", "Email", "Amount", "Reason"], *rows])
    return path


def test_one_oversized_cell_costs_only_its_own_length(tmp_path: Path) -> None:
    limit = csv.field_size_limit()
    path = write_csv(tmp_path / "sheet.csv", [
        ["ORD-100001", "ada@example.org", "12.00", "kettle broken"],
        ["ORD-100002", "bo@example.org", "13.00", "the parcel never arrived. " + "x" * 300_000],
        ["ORD-100003", "cy@example.org", "14.00", "late"],
    ])
    items = list(read_spreadsheet(path))
    assert [type(i).__name__ for i in items] == ["RefundRequest"] * 3, items
    first, big, last = items
    assert isinstance(big, RefundRequest) and big.order_number == "ORD-100002"
    assert big.reason_text.startswith("the parcel never arrived") and len(big.reason_text) == 5000
    assert (first.order_number, last.order_number) == ("ORD-100001", "ORD-100003")
    assert csv.field_size_limit() == limit  # the process-wide limit is put back


def test_an_oversized_multiline_cell_is_read_too(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "sheet.csv", [
        ["ORD-100001", "ada@example.org", "", "broken\n" * 40_000],
        ["ORD-100002", "bo@example.org", "", "late"],
    ])
    items = list(read_spreadsheet(path))
    assert [getattr(i, "order_number", None) for i in items] == ["ORD-100001", "ORD-100002"]


def test_an_oversized_order_cell_quarantines_that_row_only(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "sheet.csv", [
        ["ORD-100001", "ada@example.org", "", "broken"],
        ["x" * 200_000, "bo@example.org", "", "late"],
    ])
    ok, bad = read_spreadsheet(path)
    assert isinstance(ok, RefundRequest)
    assert isinstance(bad, Quarantined) and bad.reason.startswith("row 3 of sheet.csv: order")


def test_a_cut_cell_never_ends_in_half_a_card_number() -> None:
    cell = "x" * (CELL_LIMIT - 10) + " 4111 1111 1111 1111"
    assert _cut(cell) == "x" * (CELL_LIMIT - 10)
    assert _cut("short 4111") == "short 4111"


# --------------------------------------------------------------------------- queue


def req(source_id: str, channel: str = "email", order: str | None = "ORD-100001",
        email: str | None = "ada@example.org", amount: str | None = None,
        name: str | None = None, phone: str | None = None) -> RefundRequest:
    return RefundRequest(channel=channel, source_id=source_id, received_at=WHEN,
                         reason_text=f"refund {source_id}", customer_email=email,
                         customer_name=name, customer_phone=phone, order_number=order,
                         requested_amount=Decimal(amount) if amount else None,
                         currency="EUR" if amount else None, source_ref=f"ref {source_id}")


SEED = [req("s1", order="ORD-200000", amount="10.00"), req("s2", order=None, email="cy@x.org")]
REQUESTS = [
    req("m1"),
    req("row-9", channel="spreadsheet", amount="12.00", name="Ada L."),  # same order, 2nd channel
    req("m1", order="ORD-999999", amount="99.00"),  # the same source again in the batch
    req("m1", channel="chat"),  # the same id on another channel is another request
    req("m2", order="ord-100001", amount="30.00"),  # one order, whatever the case
    req("m3", order=None, email="bo@example.org"),  # keyed by customer
    req("m4", order=None, email="BO@example.org", amount="5.00"),
    req("c1", channel="phone", order=None, email=None, phone="+441234567890"),  # contact key
    req("s1", order="ORD-200000"),  # re-read of a source stored before
    req("m5", order="ORD-200000", amount="50.00", name="Seed"),  # linked to a stored case
    req("m6", order=None, email="cy@x.org"),  # linked to a stored customer case
    req("m7", order="ORD-300000"), req("m8", order="ORD-300000", amount="1.00"),
    req("row-9", channel="spreadsheet", amount="77.00"),  # re-read at the end
]
IGNORED = {"created_at", "updated_at", "at",  # timestamps: when, not what
           "salt", "detail_hash", "prev_hash", "row_hash"}  # random salt, hashes over `at`


def table(queue: Queue, model: type[Any]) -> list[dict[str, Any]]:
    with queue.engine.connect() as conn:
        rows = conn.execute(select(model.__table__).order_by(model.__table__.c.id))
        return [{k: v for k, v in row._mapping.items() if k not in IGNORED} for row in rows]


def contents(queue: Queue) -> tuple[list[dict[str, Any]], ...]:
    return tuple(table(queue, m) for m in (Case, RequestRow, AuditRow))


def seeded(path: Path) -> Queue:
    queue = Queue(f"sqlite:///{path}")
    for r in SEED:
        queue.add_request(r, "seed")
    case_id = queue.add_request(SEED[0], "seed")[0]
    while (held := queue.claim("bot", 60, "seed")) is not None and held.id != case_id:
        queue.release(held.lease, actor="bot", run_id="seed", why="not this one")
    assert held is not None
    queue.finish(held.lease, state="done", outcome="refunded", reason="paid", actor="bot",
                 run_id="seed")  # a contact about a finished case opens a follow-up case
    return queue


@pytest.mark.parametrize("batch", [1, 2, 3, 500])
def test_batched_inserts_store_exactly_what_one_by_one_stores(batch: int,
                                                              tmp_path: Path) -> None:
    one, many = seeded(tmp_path / "one.sqlite"), seeded(tmp_path / "many.sqlite")
    answers = [one.add_request(r, "run-1") for r in REQUESTS]
    assert many.add_requests(REQUESTS, "run-1", batch=batch) == answers
    assert contents(many) == contents(one)
    again = [one.add_request(r, "run-2") for r in REQUESTS]  # a second run reads it all again
    assert many.add_requests(REQUESTS, "run-2", batch=batch) == again
    assert not any(new for _, new in again)
    assert contents(many) == contents(one)
    assert many.verify_chain().ok and one.verify_chain().ok  # both ways chain the trail
    cases = {c.case_key: c for c in many.cases()}
    assert cases["order:ORD-100001"].requested_amount == Decimal("30.00")
    assert cases["customer:bo@example.org"].requested_amount == Decimal("5.00")


def test_no_requests_is_no_transaction(tmp_path: Path) -> None:
    queue = Queue(f"sqlite:///{tmp_path / 'q.sqlite'}")
    assert queue.add_requests([], "run") == []
    with pytest.raises(ValueError):
        queue.add_requests(REQUESTS, "run", batch=0)


# --------------------------------------------------------------------------- run_intake


def _settings(*sources: Any) -> Any:
    return IntakeSettings(sources=list(sources))


def _intake_twice(source: Any, queue: Queue, tmp_path: Path
                  ) -> tuple[pipeline.IntakeStats, pipeline.IntakeStats]:
    """The intake of one source, then the same again (which must add nothing)."""
    run = RunFolder.create(tmp_path / "runs")
    try:
        return (pipeline.run_intake(_settings(source), queue, run),
                pipeline.run_intake(_settings(source), queue, run))
    finally:
        run.close()


def _old_stats(queue: Queue, items: list[IntakeItem]) -> pipeline.IntakeStats:
    """What run_intake counted when it stored one request per transaction."""
    stats, before = pipeline.IntakeStats(), {c.id for c in queue.cases()}
    for item in items:
        if isinstance(item, Quarantined):
            stats.quarantined += queue.add_quarantined(item, "x")
            continue
        case_id, new = queue.add_request(item, "x")
        if not new:
            stats.already_seen += 1
            continue
        stats.new_requests += 1
        stats.by_channel[item.channel] += 1
        stats.linked += case_id in before
        stats.new_cases += case_id not in before
        before.add(case_id)
    return stats


def test_run_intake_counts_as_before_across_batches(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Queue, "insert_batch", 3)
    rows = [[f"ORD-1000{i % 7:02d}", f"c{i}@example.org", "", f"reason {i}"] for i in range(20)]
    rows += [["bad order", "x@example.org", "", "?"], rows[0]]  # quarantined, repeated
    source = SourceConfig(kind="spreadsheet", path=write_csv(tmp_path / "s.csv", rows))
    items = list(read_source(source))
    expected = _old_stats(Queue(f"sqlite:///{tmp_path / 'old.sqlite'}"), items)
    queue = Queue(f"sqlite:///{tmp_path / 'new.sqlite'}")
    stats, again = _intake_twice(source, queue, tmp_path)
    assert stats == expected and stats.new_requests == 20 and stats.quarantined == 1
    assert (again.new_requests, again.already_seen) == (0, 21)


def test_mail_is_stored_before_the_mailbox_is_asked_for_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The IMAP reader files a message away when the next is asked for: it must be stored."""
    queue = Queue(f"sqlite:///{tmp_path / 'q.sqlite'}")
    mails = [req(f"mail-{i}", order=f"ORD-4000{i:02d}") for i in range(5)]

    def stored() -> set[str]:
        with queue.engine.connect() as conn:
            return set(conn.scalars(select(RequestRow.source_id)))

    def mailbox(_: object) -> Iterator[IntakeItem]:
        for item in mails:
            yield item
            assert item.source_id in stored()  # where _read_imap files the message away

    monkeypatch.setattr(pipeline, "read_source", mailbox)
    box = MailboxConfig(host="imap.example", user="u", password_secret="x")
    run = RunFolder.create(tmp_path / "runs")
    try:
        stats = pipeline.run_intake(_settings(box), queue, run)
    finally:
        run.close()
    assert stats.new_requests == 5


# -- Maildir ------------------------------------------------------------------------------


def _mail(n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Ada {n} <ada{n}@example.com>"
    msg["To"] = "refunds@shop.example"
    msg["Subject"] = f"Refund ORD-10000{n}"
    msg["Message-ID"] = f"<maildir-{n}@mail.example>"
    msg.set_content(f"The lamp arrived broken. Order ORD-10000{n}.\n")
    return bytes(msg)


def test_maildir_source_reads_new_and_cur_never_tmp(tmp_path: Path) -> None:
    import mailbox

    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    box.add(_mail(1))  # delivered, unread: new/
    seen = mailbox.MaildirMessage(_mail(2))
    seen.set_subdir("cur")
    seen.add_flag("S")  # read in a mail client: cur/...:2,S
    box.add(seen)
    (tmp_path / "Maildir" / "tmp" / "123.partial").write_bytes(_mail(3)[:40])  # in delivery
    (tmp_path / "Maildir" / "cur" / ".hidden").write_bytes(b"junk")
    cfg = SourceConfig(kind="maildir", path=tmp_path / "Maildir")
    items = list(read_source(cfg))
    assert [(i.channel, i.source_id, i.order_number) for i in items] == [
        ("email", "maildir-1@mail.example", "ORD-100001"),
        ("email", "maildir-2@mail.example", "ORD-100002")]
    assert [i.source_id for i in read_source(cfg)] == [i.source_id for i in items]  # read-only
    assert len(list((tmp_path / "Maildir" / "new").iterdir())) == 1


def test_a_folder_that_is_not_a_maildir_is_reported(tmp_path: Path) -> None:
    (tmp_path / "mail").mkdir()
    [item] = list(read_source(SourceConfig(kind="maildir", path=tmp_path / "mail")))
    assert isinstance(item, Quarantined) and "should be a Maildir" in item.reason


def test_a_ragged_call_log_with_a_huge_cell_keeps_its_other_rows(tmp_path: Path) -> None:
    """Exports with uneven rows take the csv module's path: the same cut, not a lost file."""
    from bots.intake.sources import ExportSourceConfig

    log = tmp_path / "calls.csv"
    log.write_text("Call ID,Caller,Agent Notes,Order Number\n"
                   "C1,+442079460123,lamp broken,ORD-100001,extra\n"
                   f"C2,+442079460124,{'x' * 300_000},ORD-100002\n"
                   "C3,+442079460125,never arrived,ORD-100003\n", encoding="utf-8")
    items = list(read_source(ExportSourceConfig(kind="phone", path=log)))
    assert [i.order_number for i in items if isinstance(i, RefundRequest)] == [
        "ORD-100001", "ORD-100002", "ORD-100003"]


# -- our own answers echoed back in an export (issue #12) ----------------------------------

OUR_ANSWER = ("Hi Ada, we have refunded 20.00 EUR for order ORD-100001 (refund RF-000007). "
              "It can take 5-10 working days to show. Ref. {ref}")


def test_our_own_answer_echoed_in_a_chat_export_is_quarantined_not_a_case(
        tmp_path: Path) -> None:
    """A chat tool that marks nothing: our answer comes back as if the customer wrote it."""
    import json

    from bots.intake.sources import ExportSourceConfig
    from bots.queue.schema import NotificationRow, case_ref

    queue = Queue(f"sqlite:///{tmp_path / 'q.sqlite'}")
    case_id, _ = queue.add_request(req("mail-1"), "run-0")
    body = OUR_ANSWER.format(ref=case_ref(case_id))
    with queue.session() as s:
        request_id = s.scalar(select(RequestRow.id))
        s.add(NotificationRow(notification_id="n-1", case_id=case_id, request_id=request_id,
                              kind="refunded", channel="chat", recipient="ada@example.org",
                              subject="Your refund", body=body, state="sent"))
    conversations = [
        {"id": "chat-echo", "customer": {"email": "ada@example.org"},
         "messages": [{"text": body.replace(" It can", "\nIt can")}]},  # re-flowed by the tool
        {"id": "chat-cut", "customer": {"email": "ada@example.org"},
         "messages": [{"text": body[30:]}]},  # the tool dropped the greeting
        {"id": "chat-followup", "customer": {"email": "ada@example.org"},
         "messages": [{"text": f"About {case_ref(case_id)}: the refund never arrived, "
                               "please check ORD-100001 again"}]},
    ]
    export = tmp_path / "chat.json"
    export.write_text(json.dumps(conversations))
    source = ExportSourceConfig(kind="chat", path=export)
    stats, again = _intake_twice(source, queue, tmp_path)
    assert (stats.quarantined, stats.new_requests) == (2, 1)
    assert (again.quarantined, again.new_requests) == (0, 0)  # nothing twice
    reasons = {q.source_id: q.reason for q in queue.quarantined()}
    assert set(reasons) == {"chat-echo", "chat-cut"}
    assert all(f"our own message about {case_ref(case_id)} echoed back" in r
               for r in reasons.values())
    with queue.session() as s:
        assert s.scalar(select(RequestRow.id).where(
            RequestRow.source_id == "chat-followup")) is not None


def test_echo_needs_the_whole_message_or_a_long_part_of_it() -> None:
    from bots.intake.echo import case_ids_named, echoed

    sent = [OUR_ANSWER.format(ref="C-000042")]
    assert case_ids_named("see C-000042 and C-000043, not C-42") == {42, 43}
    assert echoed(sent[0].upper(), sent)
    assert echoed(sent[0][:40], sent) and not echoed(sent[0][:39], sent)
    assert not echoed("Hi Ada,", sent) and not echoed("", sent)
    assert not echoed(sent[0] + " But it never arrived!", sent)  # quoted, then a new ask
