from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
import pytest
from pydantic import ValidationError

from bots.intake import (
    SourceConfig,
    parse_eml_bytes,
    read_eml_folder,
    read_source,
    read_spreadsheet,
)
from bots.models import IntakeItem, Quarantined, RefundRequest

FIXTURES = Path(__file__).parent / "fixtures" / "intake"
D = Decimal
VISA = "4111 1111 1111 1111"
MTIME = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def one(items: Any) -> IntakeItem:
    items = list(items)
    assert len(items) == 1, items
    return items[0]


def request(item: IntakeItem) -> RefundRequest:
    assert isinstance(item, RefundRequest), item
    return item


def quarantined(item: IntakeItem) -> Quarantined:
    assert isinstance(item, Quarantined), item
    return item


def all_text(item: IntakeItem) -> str:
    return " ".join(str(v) for v in item.__dict__.values())


# =========================================================================== email


def eml(body: str = "Please refund ORD-100001, it arrived broken.", *, subject: str = "Refund",
        sender: str | None = "Ada <ada@example.org>", headers: dict[str, str] | None = None,
        charset: str = "utf-8") -> bytes:
    msg = EmailMessage()
    if sender is not None:
        msg["From"] = sender
    msg["To"] = "refunds@shop.example"
    msg["Subject"] = subject
    msg["Date"] = "Sat, 28 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = "<m1@mail.example>"
    for name, value in (headers or {}).items():
        del msg[name]
        msg[name] = value
    msg.set_content(body, charset=charset)
    return bytes(msg)


def raw(head: str, body: bytes) -> bytes:
    return head.replace("\n", "\r\n").encode() + b"\r\n" + body


def parse(data: bytes, **kw: Any) -> IntakeItem:
    return parse_eml_bytes(data, source_ref="test.eml", fallback_time=MTIME, **kw)


def test_plain_email_fixture() -> None:
    r = request(parse((FIXTURES / "plain.eml").read_bytes()))
    assert r.channel == "email" and r.source_id == "plain-001@mail.example"
    assert r.customer_email == "ada.lovelace@example.org" and r.customer_name == "Ada Lovelace"
    assert r.reply_to == "ada.lovelace@example.org"
    assert r.received_at == datetime(2026, 11, 28, 9, 15, tzinfo=UTC)
    assert r.order_number == "ORD-100001"
    assert (r.requested_amount, r.currency) == (D("49.90"), "EUR")  # not the 59.90 paid
    assert r.reason_category == "damaged"
    assert r.reason_text.startswith("Refund for order ORD-100001\n\nHello,")


def test_html_only_email_drops_scripts_and_uses_reply_to() -> None:
    r = request(parse((FIXTURES / "html_only.eml").read_bytes()))
    assert r.order_number == "ORD-100002"  # not the ORD-999999 inside <script>
    assert (r.requested_amount, r.currency) == (D("19.99"), "EUR")
    assert r.reason_category == "not_received"
    assert r.reply_to == "bob.replies@example.com" and r.customer_email == "bob@example.com"
    for hidden in ("alert", "document.write", "ORD-888888", "color: red", "Newsletter"):
        assert hidden not in r.reason_text
    assert "Geld zurück" in r.reason_text and "&amp;" not in r.reason_text


def test_multipart_uses_text_part_not_attachments() -> None:
    r = request(parse((FIXTURES / "multipart_attachment.eml").read_bytes()))
    assert r.order_number == "ORD-100003" and r.reason_category == "wrong_item"
    assert r.requested_amount is None
    assert "ORD-555555" not in r.reason_text and "ORD-777777" not in r.reason_text
    assert r.received_at == datetime(2026, 11, 26, 21, 30, tzinfo=UTC)


def test_quoted_printable_latin1_with_euro_sign() -> None:
    r = request(parse((FIXTURES / "qp_latin1.eml").read_bytes()))
    assert r.customer_name == "José García"
    assert r.reason_text.startswith("Devolución\n\nHola, el artículo llegó dañado.")
    assert (r.requested_amount, r.currency) == (D("1234.50"), "EUR")
    assert r.reason_category == "damaged" and r.order_number == "ORD-100004"


def test_missing_message_id_uses_content_hash_stably() -> None:
    data = (FIXTURES / "no_message_id.eml").read_bytes()
    first, second = request(parse(data)), request(parse(data))
    assert first.source_id.startswith("sha256:") and first.source_id == second.source_id
    assert first.reason_category == "duplicate_charge"
    assert (first.requested_amount, first.currency) == (D("25.00"), "GBP")
    assert first.received_at == MTIME  # no Date header


def test_folder_reads_only_eml_sorted_and_uses_mtime(tmp_path: Path) -> None:
    for name in ("b.eml", "a.eml", "notes.txt", "c.EML.bak"):
        (tmp_path / name).write_bytes(eml(subject=name, headers={"Message-ID": f"<{name}@x>"}))
    (tmp_path / "sub.eml").mkdir()
    shutil.copy(FIXTURES / "no_message_id.eml", tmp_path / "z.eml")
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    os.utime(tmp_path / "z.eml", (stamp, stamp))
    items = [request(i) for i in read_eml_folder(tmp_path)]
    assert [i.source_ref.rsplit("/", 1)[-1] for i in items] == ["a.eml", "b.eml", "z.eml"]
    assert items[2].received_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_oversized_file_is_quarantined_without_parsing(tmp_path: Path) -> None:
    (tmp_path / "big.eml").write_bytes(eml("x" * 5000))
    q = quarantined(one(read_eml_folder(tmp_path, max_bytes=1000)))
    assert "larger than the 1,000-byte limit" in q.reason and q.source_id.startswith("sha256:")


def test_card_number_is_masked_in_every_field() -> None:
    data = eml(f"My card is {VISA}, CVV 123. Refund ORD-100001 please, 20 EUR.",
               subject=f"card {VISA}", sender=f"Ada {VISA.replace(' ', '')} <ada@example.org>")
    r = request(parse(data))
    text = all_text(r)
    assert "4111 1111 1111 1111" not in text and "4111111111111111" not in text
    assert "1111 1111" not in text and "123." not in text
    assert r.reason_text.count("**** **** **** 1111") == 2
    assert r.customer_name == "Ada **** **** **** 1111"
    assert (r.order_number, r.requested_amount) == ("ORD-100001", D("20.00"))


def test_card_number_is_masked_in_quarantine_excerpt() -> None:
    data = raw("From: MAILER-DAEMON@mx.example\nSubject: Undelivered\n", f"card {VISA}".encode())
    q = quarantined(parse(data))
    assert "automatic message" in q.reason
    assert VISA not in q.excerpt and "**** **** **** 1111" in q.excerpt


def test_reading_the_same_message_twice_gives_the_same_id(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES, tmp_path / "in")
    first = [i.source_id for i in read_eml_folder(tmp_path / "in")]
    assert first == [i.source_id for i in read_eml_folder(tmp_path / "in")]
    assert len(set(first)) == len(first) == 5


UNKNOWN_CHARSET_HEAD = ("From: a@example.org\nSubject: s\nMessage-ID: <cs@x>\n"
                        "Content-Type: text/plain; charset=x-klingon\n")

# (id, raw message, expected: "ok" + checks, or a fragment of the quarantine reason)
EMAIL_CASES: list[tuple[str, bytes, str | Callable[[RefundRequest], bool]]] = [
    ("empty file", b"", "the file is empty"),
    ("whitespace only", b"\r\n\r\n  \r\n", "no mail headers"),
    ("no headers at all", b"hello, this is not an email\nrefund ORD-100001\n", "no mail headers"),
    ("binary junk", bytes(range(256)) * 20, "no mail headers"),
    ("no From", eml(sender=None), "no sender"),
    ("From is not an address", eml(sender="Ada Lovelace"), "no sender"),
    ("From is a formula", eml(sender='=HYPERLINK("http://x","y")'), "no sender"),
    ("empty subject and body", eml("", subject=""), "no subject and no text"),
    ("broken multipart", raw("From: a@example.org\nSubject: \nContent-Type: multipart/mixed\n",
                             b"--X\r\nContent-Type: text/plain\r\n\r\nhi\r\n--X--\r\n"),
     "broken MIME structure"),
    ("bounce", eml(sender="Mail Delivery System <MAILER-DAEMON@mx.example>"), "automatic"),
    ("auto-reply", eml(headers={"Auto-Submitted": "auto-replied"}), "automatic"),
    ("undecodable charset", raw(UNKNOWN_CHARSET_HEAD, bytes(range(128, 256)) * 4),
     "cannot be decoded"),
    ("unknown charset but readable",
     raw(UNKNOWN_CHARSET_HEAD, b"Refund ORD-100001 please \xff thanks"),
     lambda r: r.order_number == "ORD-100001" and "\ufffd" in r.reason_text),
    ("utf-8 declared, latin-1 sent",
     raw("From: a@example.org\nSubject: s\nContent-Type: text/plain; charset=utf-8\n",
         "Rückerstattung für ORD-100001, das Gerät ist kaputt".encode("latin-1")),
     lambda r: r.reason_category == "damaged" and r.order_number == "ORD-100001"),
    ("8-bit utf-8 with no charset",
     raw("From: a@example.org\nSubject: s\n", "Erstattung 12,50 € bitte".encode()),
     lambda r: (r.requested_amount, r.currency) == (D("12.50"), "EUR")),
    ("base64 body", eml("Colis jamais reçu, commande ORD-100009"),
     lambda r: r.reason_category == "not_received" and r.order_number == "ORD-100009"),
    ("missing Date", raw("From: a@example.org\nSubject: s\n", b"hi"),
     lambda r: r.received_at == MTIME),
    ("invalid Date", eml(headers={"Date": "yesterday-ish"}), lambda r: r.received_at == MTIME),
    ("Date far in the future", eml(headers={"Date": "Mon, 01 Jan 2100 00:00:00 +0000"}),
     lambda r: r.received_at == MTIME),
    ("Date without zone", eml(headers={"Date": "Sat, 28 Nov 2026 10:00:00 -0000"}),
     lambda r: r.received_at == datetime(2026, 11, 28, 10, tzinfo=UTC)),
    ("control and bidi characters", eml("refund\x00 \u202eplease\x07 ORD-100001",
                                        subject="hi\u200b\x1b[31m"),
     lambda r: r.reason_text == "hi[31m\n\nrefund please ORD-100001"),
    ("formula-like subject stays text", eml("x", subject='=HYPERLINK("http://x","click")'),
     lambda r: r.reason_text.startswith('=HYPERLINK("http://x","click")')),
    ("password in body", eml("my password: hunter2 and pwd=abc"),
     lambda r: "hunter2" not in r.reason_text and "abc" not in r.reason_text),
    ("huge body is truncated", eml("Refund ORD-100001. " + "blah " * 400_000),
     lambda r: len(r.reason_text) == 5000 and r.reason_text.endswith("…")),
    ("card cut in half at the scan limit is dropped, not half shown",
     raw("From: a@example.org\nSubject: s\n", b"x" + b" " * 49_990 + VISA.encode()),
     lambda r: r.reason_text == "s\n\nx"),
    ("long Message-ID is hashed", eml(headers={"Message-ID": "<" + "x" * 400 + "@y>"}),
     lambda r: r.source_id.startswith("sha256:")),
    ("Message-ID with folding",
     raw("From: a@example.org\nSubject: s\nMessage-ID: <abc\n @example.org>\n", b"hi"),
     lambda r: r.source_id == "abc@example.org"),
    ("quoted history does not win", eml("Still waiting for ORD-222222!\n\n> Your refund for "
                                        "ORD-111111 of 80 EUR\n> was approved."),
     lambda r: r.order_number == "ORD-222222" and r.requested_amount is None),
    # Issue #12: an order named only in quoted history is context, not the request (the
    # customer is then identified by their address).
    ("order only quoted", eml("Any news?\n> Your order ORD-111111 shipped"),
     lambda r: r.order_number is None and "ORD-111111" in r.reason_text),
    ("subject only", eml("", subject="Refund ORD-100001"),
     lambda r: r.order_number == "ORD-100001" and r.reason_text == "Refund ORD-100001"),
    ("no order number is still a request", eml("I want my money back"),
     lambda r: r.order_number is None and r.customer_email == "ada@example.org"),
    ("display name with encoded words", eml(sender="=?utf-8?q?Z=C3=B6e?= <ZOE@Example.org>"),
     lambda r: (r.customer_name, r.customer_email) == ("Zöe", "zoe@example.org")),
]


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in EMAIL_CASES],
                         ids=[c[0] for c in EMAIL_CASES])
def test_hostile_emails(data: bytes, expected: str | Callable[[RefundRequest], bool]) -> None:
    item = parse(data)
    if isinstance(expected, str):
        q = quarantined(item)
        assert expected in q.reason
        assert q.channel == "email" and q.source_id and q.source_ref == "test.eml"
        assert len(q.excerpt) <= 200
    else:
        assert expected(request(item)), item


def test_empty_files_in_different_places_are_distinct_quarantines() -> None:
    a = parse_eml_bytes(b"", source_ref="a.eml")
    b = parse_eml_bytes(b"", source_ref="b.eml")
    assert a.source_id != b.source_id


# =========================================================================== spreadsheets

HEADER = ["Order #", "Customer", "E-mail", "Amount", "Reason", "Date"]
ROWS = [
    ["ORD-100001", "Ada", "ada@example.org", "49.90", "arrived broken", "28/11/2026"],
    ["ord100002", "Bob", "BOB@example.com", "1.234,50 €", "never arrived", "2026-11-27"],
    ["", "Carol", "carol@example.net", "", "changed my mind", ""],
]


def xlsx(path: Path, sheets: dict[str, list[list[Any]]]) -> Path:
    """A workbook written cell by cell, strings kept as strings (even "=...")."""
    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for r, row in enumerate(rows, start=1):
            for c, value in enumerate(row, start=1):
                if value is None or value == "":
                    continue
                cell = sheet.cell(r, c, value)
                if isinstance(value, str):
                    cell.data_type = "s"
    book.save(path)
    return path


def titled(rows: list[list[Any]], header: list[str] = HEADER) -> list[list[Any]]:
    """Header on row 4: a title, a subtitle, a blank row first (as people make them)."""
    return [["Refund requests (phone team)"], ["exported by Jo"], [], header, *rows]


def read(path: Path, **kw: Any) -> list[IntakeItem]:
    return list(read_spreadsheet(path, **kw))


def test_header_on_row_four(tmp_path: Path) -> None:
    items = read(xlsx(tmp_path / "r.xlsx", {"Refunds": titled(ROWS)}))
    a, b, c = (request(i) for i in items)
    assert (a.order_number, a.customer_name, a.customer_email) == ("ORD-100001", "Ada",
                                                                    "ada@example.org")
    assert a.requested_amount == D("49.90") and a.reason_category == "damaged"
    assert a.received_at == datetime(2026, 11, 28, tzinfo=UTC)
    assert (b.order_number, b.requested_amount, b.currency) == ("ORD-100002", D("1234.50"), "EUR")
    assert b.customer_email == "bob@example.com" and b.reply_to == "bob@example.com"
    assert b.received_at == datetime(2026, 11, 27, tzinfo=UTC)
    assert c.order_number is None and c.reason_category == "changed_mind"
    assert a.source_ref.endswith("sheet 'Refunds' row 5")
    assert all(i.source_id.startswith("r.xlsx#Refunds#") for i in items)


def test_header_synonyms_and_native_cell_types(tmp_path: Path) -> None:
    header = ["  ORDER No. ", "Customer Name", "e-mail", "Mobile", "Refund Amount (EUR)",
              "Comment", "Request Date", "Agent"]
    rows = [[100023, "Dee", "dee@example.org", 4930123456, 49.9, "wrong size",
             datetime(2026, 11, 2, 14, 30), "jo"],
            ["", "Eve", "", "+49 170 1234567", 12, "late delivery", "03/04/2026", "jo"]]
    d, e = (request(i) for i in read(xlsx(tmp_path / "s.xlsx", {"S": [header, *rows]})))
    # No "+" and no default region: the number cannot be placed, and the order suffices.
    assert (d.order_number, d.customer_phone) == ("ORD-100023", None)
    assert (d.requested_amount, d.currency) == (D("49.90"), "EUR")  # currency from the header
    assert d.received_at == datetime(2026, 11, 2, 14, 30, tzinfo=UTC)
    assert d.reason_category == "wrong_item"
    assert e.customer_phone == "+491701234567" and e.customer_email is None  # E.164
    assert e.received_at == datetime(2026, 4, 3, tzinfo=UTC)  # day first
    assert e.reason_category == "late"


def test_semicolon_csv_with_bom_and_local_amounts(tmp_path: Path) -> None:
    text = ("Bestellung;Order number;Email;Amount;Reason\n"
            "x;ORD-100001;ada@example.org;1.234,50;beschädigt\n"
            'y;ORD-100002;bob@example.com;"12,50 €";"nie angekommen; bitte erstatten"\n')
    (tmp_path / "r.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    a, b = (request(i) for i in read(tmp_path / "r.csv", default_currency="EUR"))
    assert (a.requested_amount, a.currency) == (D("1234.50"), "EUR")
    assert a.reason_category == "damaged" and a.reason_text == "beschädigt"
    assert (b.requested_amount, b.reason_text) == (D("12.50"), "nie angekommen; bitte erstatten")
    assert a.source_id.startswith("r.csv##")


def test_cp1252_csv(tmp_path: Path) -> None:
    text = "Order,Name,Email,Amount\nORD-100001,Zoë Müller,zoe@example.org,€12\n"
    (tmp_path / "r.csv").write_bytes(text.encode("cp1252"))
    r = request(one(read(tmp_path / "r.csv")))
    assert r.customer_name == "Zoë Müller" and (r.requested_amount, r.currency) == (D("12.00"),
                                                                                    "EUR")


def test_csv_control_characters_ragged_rows_and_multiline_cells(tmp_path: Path) -> None:
    text = ("Refund log\n"  # a title line with fewer fields than the header
            "Order,Name,Email,Reason\n"
            "ORD-100001,Ada\x07\x1b,ada@example.org,\"broken\r\n\r\n\r\nzip\",extra,cells\n"
            "ORD-100002\n")
    (tmp_path / "r.csv").write_text(text, newline="")
    a, b = (request(i) for i in read(tmp_path / "r.csv"))
    assert (a.customer_name, a.reason_text, a.reason_category) == ("Ada", "broken\n\nzip",
                                                                   "damaged")
    assert (b.order_number, b.customer_email) == ("ORD-100002", None)


@pytest.mark.parametrize(("name", "data"), [
    ("r.tsv", b"Order\tEmail\nORD-100001\tada@example.org\n"),
    ("r.txt", b"Order|Email\nORD-100001|ada@example.org\n"),
    ("r.txt", "Order\tEmail\r\nORD-100001\tada@example.org\r\n".encode("utf-16")),  # Excel
])
def test_other_delimiters_and_encodings(tmp_path: Path, name: str, data: bytes) -> None:
    (tmp_path / name).write_bytes(data)
    r = request(one(read(tmp_path / name)))
    assert (r.order_number, r.customer_email) == ("ORD-100001", "ada@example.org")


def test_two_sheets_blank_rows_and_repeated_headers(tmp_path: Path) -> None:
    path = xlsx(tmp_path / "r.xlsx", {
        "Refunds": [HEADER, ROWS[0], [], ["", "   ", None], HEADER, ROWS[1]],
        "Empty": [],
        "More": titled([ROWS[2]]),
    })
    items = [request(i) for i in read(path)]
    assert [i.customer_name for i in items] == ["Ada", "Bob", "Carol"]
    assert [i.source_id.split("#")[1] for i in items] == ["Refunds", "Refunds", "More"]
    assert items[1].source_ref.endswith("row 6")


def test_reread_gives_same_ids_and_append_gives_one_new(tmp_path: Path) -> None:
    path = xlsx(tmp_path / "r.xlsx", {"Refunds": titled(ROWS)})
    first = [i.source_id for i in read(path)]
    assert first == [i.source_id for i in read(path)] and len(set(first)) == 3
    extra = ["ORD-100009", "Fay", "fay@example.org", "5", "broken", "01/11/2026"]
    xlsx(path, {"Refunds": titled([*ROWS, extra])})
    second = [i.source_id for i in read(path)]
    assert second[:3] == first and len(set(second) - set(first)) == 1


def test_formula_like_text_is_kept_as_text(tmp_path: Path) -> None:
    formula = '=HYPERLINK("http://evil.example","click")'
    path = xlsx(tmp_path / "r.xlsx", {"R": [HEADER, ["ORD-100001", formula, "", "", formula,
                                                     "@SUM(1)"]]})
    r = request(one(read(path)))
    assert r.customer_name == formula and r.reason_text == formula
    (tmp_path / "r.csv").write_text(f"Order,Name,Reason\nORD-1000010,x,y\n"
                                    f'ORD-100001,"{formula.replace(chr(34), chr(34) * 2)}",+1\n')
    items = read(tmp_path / "r.csv")
    assert "not in a recognised format" in quarantined(items[0]).reason
    assert request(items[1]).customer_name == formula


def test_pandas_written_workbook_like_the_demo(tmp_path: Path) -> None:
    path = tmp_path / "demo.xlsx"
    with pd.ExcelWriter(path, engine="openpyxl") as xl:
        pd.DataFrame([["Refund requests logged by the phone team"]]).to_excel(
            xl, sheet_name="Refunds", header=False, index=False)
        pd.DataFrame([dict(zip(HEADER, r, strict=True)) for r in ROWS]).to_excel(
            xl, sheet_name="Refunds", startrow=2, index=False)
    assert [request(i).customer_name for i in read(path)] == ["Ada", "Bob", "Carol"]


def test_card_number_masked_in_every_field_and_excerpt(tmp_path: Path) -> None:
    rows = [["ORD-100001", f"Ada {VISA}", "ada@example.org", "", f"card {VISA} pwd=x1", ""],
            ["", f"{VISA}", "", "", f"card {VISA}", ""]]
    ok, bad = read(xlsx(tmp_path / "r.xlsx", {"R": [HEADER, *rows]}))
    for item in (ok, bad):
        assert VISA not in all_text(item) and "x1" not in all_text(item)
    assert request(ok).reason_text == "card **** **** **** 1111 pwd=[redacted]"
    assert "**** **** **** 1111" in quarantined(bad).excerpt


def row_of(order: Any = "ORD-100001", name: Any = "Ada", email: Any = "ada@example.org",
           amount: Any = "", reason: Any = "broken", date: Any = "") -> list[Any]:
    return [order, name, email, amount, reason, date]


# (id, row cells, expected: checks or a fragment of the quarantine reason)
ROW_CASES: list[tuple[str, list[Any], str | Callable[[RefundRequest], bool]]] = [
    ("no order, email or phone", row_of(order="", email=""),
     "row 2 of sheet 'R': no order number, email or phone"),
    ("invalid email and no order", row_of(order="", email="ada(at)example"),
     "the email 'ada(at)example' is not a valid address"),
    ("invalid email with an order", row_of(email="not-an-email"),
     lambda r: r.customer_email is None and r.order_number == "ORD-100001"),
    ("order number in the wrong format", row_of(order="ORD-12"),
     "order number 'ORD-12' is not in a recognised format"),
    ("order number only in the reason", row_of(order="", reason="see ORD-100077"),
     lambda r: r.order_number == "ORD-100077"),
    ("two orders in one cell", row_of(order="ORD-100001 / ORD-100002"),
     "the order cell names 2 orders (ORD-100001, ORD-100002)"),
    ("bare digits in the order column", row_of(order="100042"),
     lambda r: r.order_number == "ORD-100042"),
    ("negative amount", row_of(amount="-12.50"), "amount '-12.50' is not a valid refund amount"),
    ("negative number cell", row_of(amount=-5), "amount '-5' is not a valid"),
    ("text amount", row_of(amount="the whole thing"), "amount 'the whole thing' is not a valid"),
    ("absurd amount", row_of(amount=5_000_000), "is not a valid refund amount"),
    ("zero amount", row_of(amount=0), "is not a valid refund amount"),
    ("amount with currency", row_of(amount="£9.99"),
     lambda r: (r.requested_amount, r.currency) == (D("9.99"), "GBP")),
    ("float amount", row_of(amount=12.345),
     lambda r: r.requested_amount == D("12.35")),  # rounded half up, not read as 12345
    ("unparseable date falls back to file time", row_of(date="sometime"),
     lambda r: r.received_at.tzinfo is UTC and r.received_at.year >= 2026),
    ("ISO date with time and zone", row_of(date="2026-11-02T10:00:00+01:00"),
     lambda r: r.received_at == datetime(2026, 11, 2, 9, tzinfo=UTC)),
    ("month-first only when day-first is impossible", row_of(date="11/28/2026"),
     lambda r: r.received_at == datetime(2026, 11, 28, tzinfo=UTC)),
    ("invisible characters in text", row_of(reason="bro\u200bken item\u202e\ufeff"),
     lambda r: r.reason_text == "broken item" and r.reason_category == "damaged"),
    ("formula in the order cell", row_of(order="=1+1", email=""),
     "order number '=1+1' is not in a recognised format"),
]


@pytest.mark.parametrize(("row", "expected"), [c[1:] for c in ROW_CASES],
                         ids=[c[0] for c in ROW_CASES])
def test_hostile_rows(tmp_path: Path, row: list[Any],
                      expected: str | Callable[[RefundRequest], bool]) -> None:
    item = one(read(xlsx(tmp_path / "r.xlsx", {"R": [HEADER, row]})))
    if isinstance(expected, str):
        q = quarantined(item)
        assert expected in q.reason and q.source_id.startswith("r.xlsx#R#")
    else:
        assert expected(request(item)), item


def test_currency_column_and_conflicts(tmp_path: Path) -> None:
    header = ["Order", "Email", "Amount", "Currency"]
    rows = [["ORD-100001", "a@example.org", "10", "usd"],
            ["ORD-100002", "a@example.org", "10 €", "GBP"],
            ["ORD-100003", "a@example.org", "10", "XYZ"],
            ["ORD-100004", "a@example.org", "10", ""]]
    a, b, c, d = read(xlsx(tmp_path / "r.xlsx", {"R": [header, *rows]}), default_currency="SEK")
    assert request(a).currency == "USD"
    assert "in EUR but the currency column says GBP" in quarantined(b).reason
    assert "currency 'XYZ' is not known" in quarantined(c).reason
    assert request(d).currency == "SEK"


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("corrupt.xlsx", b"PK\x03\x04 this is not really a zip", "not a readable Excel workbook"),
    ("text.xlsx", b"Order,Email\nORD-100001,a@example.org\n", "not a readable Excel workbook"),
    ("junk.csv", bytes(range(256)) * 50, "binary file"),
    ("empty.csv", b"", "the file is empty"),
    ("old.xls", b"\xd0\xcf\x11\xe0", "unsupported file type '.xls'"),
])
def test_unreadable_files_are_one_quarantined_item(tmp_path: Path, name: str, data: bytes,
                                                    reason: str) -> None:
    (tmp_path / name).write_bytes(data)
    q = quarantined(one(read(tmp_path / name)))
    assert reason in q.reason and q.source_id.startswith(f"{name}#file#")


def test_sheet_without_header_is_quarantined_once(tmp_path: Path) -> None:
    path = xlsx(tmp_path / "r.xlsx", {"Notes": [["just some notes"], ["ORD-100001 called"]],
                                      "R": [HEADER, ROWS[0]]})
    q, r = read(path)
    assert "no header row found" in quarantined(q).reason and "sheet 'Notes'" in q.reason
    assert request(r).order_number == "ORD-100001"


def test_custom_columns(tmp_path: Path) -> None:
    path = xlsx(tmp_path / "r.xlsx", {"R": [["Auftrag", "Kunde E-Mail", "Grund"],
                                            ["ORD-100001", "a@example.org", "kaputt"]]})
    assert "no header row" in quarantined(one(read(path))).reason
    r = request(one(read(path, columns={"order_number": ["auftrag"],
                                        "customer_email": ["kunde e-mail"],
                                        "reason_text": ["grund"]})))
    assert (r.order_number, r.customer_email, r.reason_category) == ("ORD-100001",
                                                                     "a@example.org", "damaged")
    with pytest.raises(ValueError, match="unknown spreadsheet fields"):
        read(path, columns={"shoe_size": ["size"]})


def test_many_rows_stay_fast(tmp_path: Path) -> None:
    n = 20_000
    lines = ["Order,Name,Email,Amount,Reason,Date"] + [
        f"ORD-{100000 + i},Name {i % 50},u{i % 300}@example.org,{i % 90 + 1}.50,"
        f"{'broken' if i % 2 else 'never arrived'},{i % 28 + 1:02d}/11/2026" for i in range(n)]
    (tmp_path / "big.csv").write_text("\n".join(lines))
    start = datetime.now()
    items = read(tmp_path / "big.csv")
    assert len({i.source_id for i in items}) == n and all(isinstance(i, RefundRequest)
                                                          for i in items)
    assert (datetime.now() - start).total_seconds() < 5


# =========================================================================== sources


def test_source_missing_path_is_quarantined(tmp_path: Path) -> None:
    for kind in ("eml_folder", "spreadsheet"):
        q = quarantined(one(read_source(SourceConfig(kind=kind, path=tmp_path / "nope",
                                                     name="shared inbox"))))
        assert "source 'shared inbox' is missing" in q.reason
        assert q.channel == ("email" if kind == "eml_folder" else "spreadsheet")


def test_source_eml_folder(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES, tmp_path / "in")
    items = list(read_source(SourceConfig(kind="eml_folder", path=tmp_path / "in")))
    assert len(items) == 5 and all(isinstance(i, RefundRequest) for i in items)
    q = quarantined(one(read_source(SourceConfig(kind="eml_folder",
                                                 path=tmp_path / "in" / "plain.eml"))))
    assert "is not a folder" in q.reason


def test_source_spreadsheet_folder_and_overrides(tmp_path: Path) -> None:
    xlsx(tmp_path / "b.xlsx", {"R": [HEADER, ROWS[0]]})
    (tmp_path / "a.csv").write_text("Auftrag,Email\nORD-100002,b@example.org\n")
    (tmp_path / "~$b.xlsx").write_bytes(b"lock")
    (tmp_path / "notes.md").write_text("ignore me")
    cfg = SourceConfig.model_validate({"kind": "spreadsheet", "path": str(tmp_path),
                                       "columns": {"order_number": ["auftrag"]},
                                       "default_currency": "eur"})
    items = [request(i) for i in read_source(cfg)]
    assert [i.order_number for i in items] == ["ORD-100002", None]  # "Order #" was replaced
    cfg = SourceConfig(kind="spreadsheet", path=tmp_path, default_currency="EUR",
                       columns={"order_number": ["auftrag", "order #"]})
    items = [request(i) for i in read_source(cfg)]
    assert [(i.order_number, i.currency) for i in items] == [("ORD-100002", None),
                                                             ("ORD-100001", "EUR")]


def test_source_custom_order_patterns(tmp_path: Path) -> None:
    (tmp_path / "m.eml").write_bytes(eml("refund for INV-4242 please"))
    cfg = SourceConfig(kind="eml_folder", path=tmp_path, order_patterns=[r"\bINV-\d{4}\b"])
    assert request(one(read_source(cfg))).order_number == "INV-4242"


@pytest.mark.parametrize("bad", [
    {"kind": "imap", "path": "x"},
    {"kind": "spreadsheet", "path": "x", "columns": {"shoe_size": ["size"]}},
    {"kind": "spreadsheet", "path": "x", "order_patterns": ["(unclosed"]},
    {"kind": "spreadsheet", "path": "x", "default_currency": "XXX"},
    {"kind": "spreadsheet", "path": "x", "colour": "red"},
])
def test_source_config_rejects_mistakes(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SourceConfig.model_validate(bad)
