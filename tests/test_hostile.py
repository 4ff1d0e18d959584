"""Hostile input on every intake channel: each case is the bytes a channel could receive
and what must come of them, a request with these field values or quarantined with
this reason. Nothing may raise, nothing may be dropped, no secret may survive.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from fuzz import fuzz_texts

from bots.intake import SourceConfig, extract, parse_eml_bytes, read_source
from bots.intake.sources import ExportSourceConfig
from bots.models import IntakeItem, Quarantined, RefundRequest

D = Decimal
MTIME = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
VISA = "4111 1111 1111 1111"
CHANNELS = {"email": "email", "sheet": "spreadsheet", "xlsx": "spreadsheet", "chat": "chat",
            "social": "social", "phone": "phone", "portal": "portal"}


# --------------------------------------------------------------------------- expectations


@dataclass(frozen=True)
class Ok:
    """A request whose fields equal these values (or satisfy these predicates)."""

    fields: dict[str, Any]


@dataclass(frozen=True)
class Bad:
    """Quarantined, with this fragment in the reason."""

    reason: str


@dataclass(frozen=True)
class Nothing:
    """No item at all (an empty sheet, a header without rows)."""


def ok(**fields: Any) -> Ok:
    return Ok(fields)


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # email, sheet (csv), xlsx, chat, social, phone, portal
    data: bytes
    expect: Ok | Bad | Nothing
    name: str = ""  # file name; its suffix picks the format
    cfg: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- builders


def eml(body: str = "Please refund ORD-100001, it arrived broken.", *, subject: str = "Refund",
        sender: str = "Ada <ada@example.org>", html: str | None = None,
        headers: dict[str, str] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "refunds@shop.example"
    msg["Subject"] = subject
    msg["Date"] = "Sat, 28 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = "<h1@mail.example>"
    for key, value in (headers or {}).items():
        msg[key] = value
    if html is None:
        msg.set_content(body)
    else:
        msg.set_content(html, subtype="html")
    return bytes(msg)


def raw_eml(head: str, body: bytes) -> bytes:
    return head.replace("\n", "\r\n").encode() + b"\r\n" + body


def table(header: list[str], *rows: list[Any], delimiter: str = ",",
          encoding: str = "utf-8") -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode(encoding)


SHEET = ["Order #", "Customer", "E-mail", "Amount", "Reason"]


def sheet(order: Any = "ORD-100001", name: Any = "Ada", email: Any = "ada@example.org",
          amount: Any = "", reason: Any = "arrived broken", **extra: Any) -> bytes:
    header, row = [*SHEET, *extra], [order, name, email, amount, reason, *extra.values()]
    return table(header, row)


def workbook(header: list[str], row: list[Any]) -> bytes:
    book = openpyxl.Workbook()
    ws = book.active
    ws.append(header)
    for col, value in enumerate(row, start=1):
        cell = ws.cell(2, col, value)
        if isinstance(value, str):
            cell.data_type = "s"  # "=..." stays text, as a person typed it
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def js(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def jsonl(*values: Any) -> bytes:
    return "".join(json.dumps(v, ensure_ascii=False) + "\n" for v in values).encode()


def conversation(*messages: Any, **fields: Any) -> dict[str, Any]:
    return {"id": "c-1", "created_at": "2026-11-28T10:00:00Z",
            "customer": {"email": "ana@example.org", "name": "Ana"},
            "messages": list(messages), **fields}


def say(text: Any, role: str = "customer") -> dict[str, Any]:
    return {"role": role, "text": text, "timestamp": "2026-11-28T10:01:00Z"}


def post(**fields: Any) -> dict[str, Any]:
    return {"id": "9001", "platform": "twitter", "handle": "@ana_b", "display_name": "Ana",
            "text": "@shop my order ORD-100001 never arrived, refund please",
            "created_at": "2026-11-28T10:00:00Z", **fields}


CALLS = ["Call ID", "Caller", "Start Time", "Agent Notes", "Order Number"]


def call(caller: Any = "020 7946 0123", notes: Any = "Customer says parcel never arrived",
         order: Any = "ORD-100001", call_id: Any = "CALL-1",
         start: Any = "28/11/2026 10:32") -> bytes:
    return table(CALLS, [call_id, caller, start, notes, order])


def form(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"submission_id": "web-1", "submitted_at": "2026-11-28T09:00:00Z",
                            "customer": {"name": "Zoe", "email": "zoe@example.org"},
                            "order": {"number": "ORD-100001"}, "reason": "damaged",
                            "message": "The lamp arrived cracked."}
    for key, value in fields.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


PORTAL_CSV = ["Submission ID", "Submitted At", "Email", "Name", "Order Number", "Amount",
              "Currency", "Reason", "Message"]


def portal_row(**over: Any) -> bytes:
    row = {"Submission ID": "web-7", "Submitted At": "2026-11-28 09:00", "Email": "zoe@example.org",
           "Name": "Zoe", "Order Number": "ORD-100001", "Amount": "", "Currency": "",
           "Reason": "", "Message": "The lamp arrived cracked."}
    row.update(over)
    return table(PORTAL_CSV, list(row.values()))


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def epoch_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


NOV28 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
HUGE = "refund ORD-100001 please. " + "blah " * 300_000
no_secrets: Callable[[str], bool] = lambda text: VISA not in text and "hunter2" not in text  # noqa: E731
visa_masked: Callable[[str], bool] = lambda text: "**** **** **** 1111" in text and no_secrets(text)  # noqa: E731

# --------------------------------------------------------------------------- the corpus

CASES: list[Case] = [
    # ---------------------------------------------------------------- email (.eml bytes)
    Case("eml html body: scripts and styles dropped", "email",
         eml(html="<style>p{}</style><script>steal(document.cookie)</script>"
                  "<p>Refund <b>ORD-100001</b>: it arrived broken</p>"),
         ok(order_number="ORD-100001", reason_category="damaged",
            reason_text=lambda t: "steal" not in t and "<" not in t)),
    Case("eml attachment larger than the limit", "email",
         eml(headers={"X-Pad": "x"}) + b"A" * 6_000_000, Bad("larger than the 5,000,000-byte")),
    Case("eml broken base64 body", "email",
         raw_eml("From: a@example.org\nSubject: Refund ORD-100001\nContent-Type: text/plain\n"
                 "Content-Transfer-Encoding: base64\n", b"%%%not base64 at all!!!==="),
         ok(order_number="ORD-100001")),
    Case("eml encoded-word name in latin-1, body utf-8", "email",
         raw_eml("From: =?iso-8859-1?q?Zo=EB_M=FCller?= <zoe@example.org>\nSubject: Erstattung\n"
                 "Content-Type: text/plain; charset=utf-8\n",
                 b"Bestellung ORD-100002 ist kaputt angekommen"),
         ok(customer_name="Zoë Müller", reason_category="damaged", order_number="ORD-100002")),
    Case("eml NUL bytes in the body", "email",
         raw_eml("From: a@example.org\nSubject: s\n", b"refund\x00 ORD-100001\x00 please"),
         ok(order_number="ORD-100001", reason_text=lambda t: "\x00" not in t)),
    Case("eml absurd amount", "email", eml("Refund 5,000,000 EUR for ORD-100001"),
         ok(requested_amount=None, order_number="ORD-100001")),
    # A BOM glued to the first header (Notepad) is dropped: the mail is read as without it.
    Case("eml UTF-8 BOM before the headers", "email",
         b"\xef\xbb\xbf" + eml(), ok(order_number="ORD-100001")),
    Case("eml card number in the subject", "email", eml("hi", subject=f"card {VISA} refund"),
         ok(reason_text=visa_masked)),
    Case("eml card number in full-width digits", "email",
         eml("card ４１１１ １１１１ １１１１ １１１１ refund ORD-100001"),
         ok(reason_text=lambda t: "****" in t and "１１１１ １１１１ １１１１" not in t)),
    Case("eml deeply nested multipart", "email",
         raw_eml("From: a@example.org\nSubject: nested\nContent-Type: multipart/mixed; "
                 "boundary=b0\n", b"".join(f"--b{i}\r\nContent-Type: multipart/mixed; "
                                           f"boundary=b{i + 1}\r\n\r\n".encode()
                                           for i in range(60))
                 + b"--b60\r\nContent-Type: text/plain\r\n\r\nrefund ORD-100001\r\n"),
         Bad("nests 61 multipart")),  # issue #12: nesting is bounded before parsing
    Case("eml only a PDF attachment", "email",
         raw_eml("From: a@example.org\nSubject: \nContent-Type: application/pdf\n"
                 "Content-Transfer-Encoding: base64\n", b"JVBERi0xLjQK"),
         Bad("no subject and no text")),
    Case("eml body declared utf-16", "email",
         raw_eml("From: a@example.org\nSubject: s\nContent-Type: text/plain; charset=utf-16\n"
                 "Content-Transfer-Encoding: base64\n",
                 __import__("base64").b64encode("refund ORD-100003".encode("utf-16"))),
         ok(order_number="ORD-100003")),
    # Kept at 70 KB: the stdlib header parser is quadratic (1 MB takes ~10 s).
    Case("eml 70 KB subject line", "email",
         raw_eml("From: a@example.org\nSubject: " + "refund " * 10_000 + "\n", b"ORD-100001"),
         ok(reason_text=lambda t: len(t) == 5000, order_number=None)),  # past the scan limit
    Case("eml bidi override in the display name", "email",
         eml(sender="\u202eAda\u202c <ada@example.org>"), ok(customer_name="Ada")),
    Case("eml password in the body", "email", eml("ORD-100001, my password: hunter2"),
         ok(reason_text=no_secrets)),
    Case("eml From is a formula", "email", eml(sender="=cmd|' /C calc'!A0"), Bad("no sender")),
    Case("eml mailer-daemon bounce", "email",
         eml(sender="MAILER-DAEMON@mx.example.org"), Bad("automatic message")),

    # ---------------------------------------------------------------- spreadsheet (csv, xlsx)
    Case("csv +cmd formula in the reason stays text", "sheet",
         sheet(reason="+cmd|' /C calc'!A0 broken"),
         ok(reason_text="+cmd|' /C calc'!A0 broken", order_number="ORD-100001")),
    Case("csv @SUM in the name stays text", "sheet", sheet(name="@SUM(A1:A9)"),
         ok(customer_name="@SUM(A1:A9)")),
    Case("csv HYPERLINK in the email column", "sheet",
         sheet(email='=HYPERLINK("http://evil","x")'), ok(customer_email=None, reply_to=None)),
    Case("csv amount 1e308", "sheet", sheet(amount="1e308"), Bad("is not a valid refund amount")),
    # A placeholder is no amount, and never silently the whole order: it escalates.
    Case("csv amount NaN", "sheet", sheet(amount="NaN"),
         ok(requested_amount=None, doubts=lambda d: any("'NaN'" in x for x in d))),
    Case("csv amount -0", "sheet", sheet(amount="-0"), Bad("is not a valid refund amount")),
    Case("csv amount over a million", "sheet", sheet(amount="1.000.000,01"),
         Bad("is not a valid refund amount")),
    Case("csv unknown columns are ignored", "sheet", sheet(Agent="jo", Ticket="T-9"),
         ok(order_number="ORD-100001", customer_email="ada@example.org")),
    Case("csv NUL bytes make it binary", "sheet", sheet(reason="bro\x00ken"),
         Bad("a binary file")),
    Case("csv UTF-16 with BOM", "sheet", b"\xff\xfe" + sheet().decode().encode("utf-16-le"),
         ok(order_number="ORD-100001")),
    # The csv module refuses cells over 128 KB: the cell is cut, the file is read.
    Case("csv megabyte reason cell", "sheet", sheet(reason="broken " * 200_000),
         ok(reason_text=lambda t: len(t) == 5000 and t.endswith("…"))),
    Case("csv 100 KB reason cell", "sheet", sheet(reason="broken " * 15_000),
         ok(reason_text=lambda t: len(t) == 5000 and t.endswith("…"))),
    Case("csv national phone with default region", "sheet",
         table(["Order", "Phone"], ["ORD-100001", "020 7946 0123"]),
         ok(customer_phone="+442079460123"), cfg={"default_region": "GB"}),
    Case("csv withheld phone and nothing else", "sheet",
         table(["Order", "Phone", "Reason"], ["", "withheld", "refund"]),
         Bad("the phone 'withheld' is not a valid number")),
    Case("csv control characters in the name", "sheet", sheet(name="A\x1b[31mda\x07"),
         ok(customer_name="A[31mda")),
    Case("csv card number in the name column", "sheet", sheet(name=f"Ada {VISA}"),
         ok(customer_name=visa_masked)),
    Case("csv unterminated quote", "sheet",
         b'Order,Email,Reason\nORD-100001,ada@example.org,"broken and\n',
         ok(order_number="ORD-100001")),
    Case("csv only a header", "sheet", table(SHEET), Nothing()),
    Case("csv empty file", "sheet", b"", Bad("the file is empty")),
    Case("csv order cell is a formula", "sheet", sheet(order="=1+1", email=""),
         Bad("order number '=1+1' is not in a recognised format")),
    Case("xlsx number in the email column", "xlsx",
         workbook(["Order", "Email"], ["ORD-100001", 12345]), ok(customer_email=None)),
    Case("xlsx boolean amount", "xlsx", workbook(["Order", "Amount"], ["ORD-100001", True]),
         Bad("is not a valid refund amount")),
    Case("xlsx date in the amount column", "xlsx",
         workbook(["Order", "Amount"], ["ORD-100001", datetime(2026, 1, 2)]),
         Bad("is not a valid refund amount")),
    Case("xlsx formula text in the reason", "xlsx",
         workbook(["Order", "Reason"], ["ORD-100001", '=HYPERLINK("http://x","y")']),
         ok(reason_text='=HYPERLINK("http://x","y")')),
    Case("xlsx negative amount", "xlsx", workbook(["Order", "Amount"], ["ORD-100001", -20]),
         Bad("amount '-20' is not a valid")),
    Case("xlsx not really a workbook", "xlsx", b"PK\x03\x04garbage",
         Bad("not a readable Excel workbook")),

    # ---------------------------------------------------------------- chat exports
    Case("chat zendesk-style visitor and history", "chat",
         js({"chats": [{"id": "z-1", "visitor": {"name": "Bo", "email": "BO@example.org"},
                        "history": [{"sender": "agent", "msg": "Hi! Order ORD-999999 was "
                                     "refunded 20 EUR"},
                                    {"sender": "visitor", "msg": "ORD-100004 arrived broken"}]}]}),
         ok(source_id="z-1", customer_email="bo@example.org", order_number="ORD-100004",
            requested_amount=None, reason_text="ORD-100004 arrived broken")),
    Case("chat intercom-style parts with html bodies", "chat",
         js({"type": "conversation.list", "conversations": [{
             "id": 77, "created_at": 1795000000, "user": {"email": "cy@example.org"},
             "conversation_parts": {"conversation_parts": [
                 {"author": {"type": "user"}, "body": "<p>Wrong size sent for ORD-100005</p>"},
                 {"author": {"type": "admin"}, "body": "<p>Sorry!</p>"}]}}]}),
         ok(source_id="77", reason_category="wrong_item", reason_text="Wrong size sent for "
            "ORD-100005", received_at=datetime.fromtimestamp(1795000000, UTC))),
    Case("chat flat message lines grouped by conversation", "chat",
         jsonl({"conversation_id": "g-1", "role": "customer", "text": "parcel never arrived",
                "email": "di@example.org"},
               {"conversation_id": "g-1", "role": "agent", "text": "Which order?"},
               {"conversation_id": "g-1", "role": "customer", "text": "ORD-100006"}),
         ok(source_id="g-1", order_number="ORD-100006", reason_category="not_received",
            reason_text="parcel never arrived\nORD-100006"), name="c.jsonl"),
    Case("chat truncated JSON document", "chat", js(conversation(say("hi")))[:-7],
         Bad("not readable JSON")),
    Case("chat truncated last JSON line", "chat", b'{"id": "c-9", "messages": [{"role": "cus',
         Bad("line 1 of chats.jsonl: the line is not readable JSON"), name="chats.jsonl"),
    Case("chat empty file", "chat", b"", Bad("the file is empty")),
    Case("chat whitespace only", "chat", b" \n\r\n\t", Bad("the file is empty")),
    Case("chat nested 100,000 deep", "chat", deep(100_000), Bad("nested too deeply")),
    Case("chat document is a number", "chat", b"42", Bad("holds a number, not a record")),
    Case("chat record is a list", "chat", js([["ORD-100001"]]), Bad("record 1 is a list")),
    Case("chat email is a number", "chat",
         js(conversation(say("ORD-100001 broken"), customer={"email": 12345})),
         ok(customer_email=None, order_number="ORD-100001")),
    Case("chat messages is a string", "chat", js({"id": "c-2", "messages": "refund me"}),
         Bad("no message from the customer")),
    Case("chat only the agent spoke", "chat", js(conversation(say("Hello?", "agent"))),
         Bad("no message from the customer in the conversation")),
    Case("chat no messages at all", "chat", js(conversation()),
         Bad("the conversation has no messages")),
    Case("chat script in a customer message", "chat",
         js(conversation(say("<img src=x onerror=alert(1)><script>x()</script>ORD-100001 "
                             "is broken"))),
         ok(reason_text="ORD-100001 is broken", order_number="ORD-100001")),
    Case("chat card number in a message", "chat",
         js(conversation(say(f"ORD-100001 card {VISA}"))), ok(reason_text=visa_masked)),
    Case("chat NUL and control characters", "chat",
         js(conversation(say("ORD-100001\x00 is \x1b[2Jbroken\x07"))),
         ok(reason_text="ORD-100001 is [2Jbroken")),
    Case("chat roles unknown: every message counts", "chat",
         js({"id": "c-3", "messages": [{"text": "hello"}, {"text": "ORD-100001 broken"}]}),
         ok(reason_text="hello\nORD-100001 broken")),
    Case("chat UTF-8 BOM", "chat", b"\xef\xbb\xbf" + js(conversation(say("ORD-100001 broken"))),
         ok(order_number="ORD-100001")),
    Case("chat megabyte message", "chat", js(conversation(say(HUGE))),
         ok(reason_text=lambda t: len(t) == 5000 and t.endswith("…"),
            order_number="ORD-100001")),
    Case("chat negative amount field", "chat",
         js(conversation(say("ORD-100001 broken"), amount=-5)),
         Bad("amount '-5' is not a valid refund amount")),
    Case("chat amount field with currency", "chat",
         js(conversation(say("ORD-100001 broken"), amount="12,50 €")),
         ok(requested_amount=D("12.50"), currency="EUR")),
    Case("chat epoch milliseconds", "chat",
         js(conversation(say("ORD-100001 broken"), created_at=epoch_ms(NOV28))),
         ok(received_at=NOV28)),
    Case("chat date in the future falls back to the file time", "chat",
         js(conversation(say("ORD-100001 broken"), created_at="2099-01-01T00:00:00Z")),
         ok(received_at=MTIME)),
    Case("chat order field in a wrong format", "chat",
         js(conversation(say("refund"), order_number="12")),
         Bad("order number '12' is not in a recognised format")),
    Case("chat order field is an object", "chat",
         js(conversation(say("refund"), order_number={"id": 1})),
         Bad("the order number is an object, not a value")),
    Case("chat custom fields map", "chat",
         js([{"ticket": {"ref": "T-1"}, "requester": {"mail": "ed@example.org"},
              "log": [{"who": "client", "said": "ORD-100007 broken"}]}]),
         ok(source_id="T-1", customer_email="ed@example.org", order_number="ORD-100007"),
         cfg={"fields": {"source_id": "ticket.ref", "customer_email": "requester.mail",
                         "messages": "log", "message_role": "who", "message_text": "said"},
              "customer_roles": ["client"]}),
    Case("chat records under a configured key", "chat",
         js({"data": {"items": [conversation(say("ORD-100001 broken"))]}}),
         ok(source_id="c-1"), cfg={"records_key": "data.items"}),
    Case("chat configured key is not a list", "chat", js({"data": {"items": 3}}),
         Bad("no list of records under 'data.items'"), cfg={"records_key": "data.items"}),
    Case("chat cp1252 file", "chat",
         json.dumps(conversation(say("ORD-100001 cassé"), customer={"name": "Zoë"}),
                    ensure_ascii=False).encode("cp1252"),
         ok(customer_name="Zoë", reason_category="damaged")),
    Case("chat message text is a list of strings", "chat",
         js(conversation(say(["ORD-100001", "arrived broken"]))),
         ok(reason_text="ORD-100001\narrived broken")),
    Case("chat huge integer in a line", "chat", b'{"id": ' + b"9" * 5000 + b"}\n",
         Bad("not readable JSON"), name="big.jsonl"),

    # ---------------------------------------------------------------- social exports
    Case("social handle and platform become the reply address", "social", js([post()]),
         ok(customer_handle="twitter:@ana_b", reply_to="twitter:@ana_b", customer_email=None,
            source_id="twitter:9001", order_number="ORD-100001",
            reason_category="not_received")),
    Case("social handle without @, mixed case", "social", js([post(handle="Ana_B")]),
         ok(customer_handle="twitter:@ana_b")),
    Case("social formula handle and no order", "social",
         js([post(handle="=cmd|' /C calc'!A0", text="refund!!")]),
         Bad("no order number, email, phone or handle (the handle")),
    Case("social formula handle but an order", "social", js([post(handle="+cmd|x")]),
         ok(customer_handle=None, reply_to=None, order_number="ORD-100001")),
    Case("social platform from the source settings", "social",
         js([post(platform=None, id="55")]), ok(customer_handle="instagram:@ana_b",
                                                source_id="instagram:55"),
         cfg={"platform": "Instagram"}),
    Case("social nonsense platform is ignored", "social", js([post(platform="Twit ter!")]),
         ok(customer_handle="@ana_b", source_id="9001")),
    Case("social email kept when the export has one", "social",
         js([post(email="Ana@Example.org")]),
         ok(customer_email="ana@example.org", reply_to="twitter:@ana_b")),
    Case("social text is a number", "social", js([post(text=12345)]),
         ok(reason_text="12345", order_number=None)),
    Case("social no text and no order", "social", js([post(text=None)]),
         Bad("nothing to act on")),
    Case("social @SUM text stays text", "social",
         js([post(text="@SUM(1+1)*cmd|' /C calc'!A0 ORD-100001")]),
         ok(reason_text="@SUM(1+1)*cmd|' /C calc'!A0 ORD-100001")),
    Case("social nested author object", "social",
         js([{"id": "7", "author": {"username": "Cy", "name": "Cy D"},
              "text": "ORD-100001 broken"}]),
         ok(customer_handle="@cy", customer_name="Cy D")),
    Case("social huge numeric id", "social", js([post(id=12345678901234567890)]),
         ok(source_id="twitter:12345678901234567890")),
    Case("social no id: a content hash", "social", js([post(id=None)]),
         ok(source_id=lambda s: s.startswith("sha256:"))),
    Case("social id is an object", "social", js([post(id={"$oid": "x"})]),
         ok(source_id=lambda s: s.startswith("sha256:"))),
    Case("social NaN amount", "social", b'[{"id": "1", "handle": "a", "text": "ORD-100001", '
         b'"amount": NaN}]', ok(requested_amount=None)),
    Case("social Infinity amount", "social", b'[{"id": "1", "handle": "a", "text": "x", '
         b'"amount": Infinity}]', Bad("is not a valid refund amount")),
    Case("social boolean amount", "social", js([post(amount=True)]),
         Bad("amount 'true' is not a valid")),
    Case("social deep nesting in an unused field", "social",
         b'[{"id": "1", "handle": "a", "text": "ORD-100001", "meta": '
         + deep(500) + b"}]", ok(order_number="ORD-100001")),
    Case("social JSON lines with BOM and CRLF", "social",
         b"\xef\xbb\xbf" + jsonl(post()).replace(b"\n", b"\r\n"), ok(source_id="twitter:9001"),
         name="dm.jsonl"),
    Case("social line that is not JSON", "social", b"not json at all\n", Bad("line 1"),
         name="dm.jsonl"),
    Case("social duplicate keys: the last wins", "social",
         b'[{"id": "1", "handle": "a", "text": "x", "text": "ORD-100001 broken"}]',
         ok(reason_text="ORD-100001 broken")),
    Case("social handle too long", "social", js([post(handle="a" * 300)]),
         ok(customer_handle=None)),

    # ---------------------------------------------------------------- phone call logs
    Case("phone national number with region", "phone", call(),
         ok(customer_phone="+442079460123", reply_to="+442079460123", source_id="CALL-1",
            order_number="ORD-100001", reason_category="not_received"),
         cfg={"default_region": "GB"}),
    Case("phone international number without region", "phone", call(caller="+49 30 1234567"),
         ok(customer_phone="+49301234567")),
    Case("phone 00 prefix", "phone", call(caller="0049 30 1234567"),
         ok(customer_phone="+49301234567")),
    Case("phone national number without region", "phone", call(caller="020 7946 0123"),
         ok(customer_phone=None, order_number="ORD-100001")),
    Case("phone withheld, no order", "phone", call(caller="anonymous", order=""),
         Bad("the phone 'anonymous' is not valid")),
    Case("phone withheld, with order", "phone", call(caller="anonymous"),
         ok(customer_phone=None, reply_to=None, order_number="ORD-100001")),
    Case("phone vanity letters", "phone", call(caller="1-800-FLOWERS"),
         ok(customer_phone=None), cfg={"default_region": "US"}),
    Case("phone formula as caller", "phone", call(caller="=1+2"), ok(customer_phone=None)),
    Case("phone order only in the notes", "phone",
         call(order="", notes="order no. 100042, says it is broken"),
         ok(order_number="ORD-100042", reason_category="damaged")),
    Case("phone notes and transcript both kept", "phone",
         table(["Call ID", "Caller", "Notes", "Transcript"],
               ["k1", "+442079460123", "wants refund ORD-100001", "it came damaged"]),
         ok(reason_text="wants refund ORD-100001\n\nit came damaged")),
    Case("phone card number and password in the transcript", "phone",
         call(notes=f"my card is {VISA}, password: hunter2"),
         ok(reason_text=lambda t: visa_masked(t) and "[redacted]" in t)),
    Case("phone unknown columns, odd header spelling", "phone",
         table(["Queue", "CALL_ID", "CALLER ID", "Wrap-up Notes", "Agent"],
               ["refunds", "k2", "+33 6 12 34 56 78", "ORD-100001 broken", "jo"]),
         ok(source_id="k2", customer_phone="+33612345678", order_number="ORD-100001")),
    Case("phone no known header", "phone", table(["a", "b"], ["1", "2"]),
         Bad("not a call log")),
    Case("phone ragged row with extra fields", "phone",
         b"Call ID,Caller,Notes\nk3,+442079460123,ORD-100001 broken,extra,more\n",
         ok(source_id="k3", order_number="ORD-100001")),
    Case("phone semicolons and BOM", "phone",
         b"\xef\xbb\xbf" + table(CALLS, ["k4", "+442079460123", "2026-11-28", "ORD-100001 broken",
                                         ""], delimiter=";"),
         ok(source_id="k4", order_number="ORD-100001")),
    Case("phone cp1252 notes", "phone",
         table(CALLS, ["k5", "+442079460123", "", "Colis endommagé ORD-100001", ""],
               encoding="cp1252"),
         ok(reason_category="damaged", reason_text="Colis endommagé ORD-100001")),
    Case("phone HYPERLINK in the notes", "phone", call(notes='=HYPERLINK("http://x","y")'),
         ok(reason_text='=HYPERLINK("http://x","y")')),
    Case("phone negative amount column", "phone",
         table(["Call ID", "Caller", "Order", "Amount"], ["k6", "+442079460123", "ORD-100001",
                                                          "-12"]),
         Bad("amount '-12' is not a valid refund amount")),
    Case("phone custom field map", "phone",
         table(["ANI", "Wrap"], ["+442079460123", "ORD-100001 never arrived"]),
         ok(customer_phone="+442079460123", order_number="ORD-100001"),
         cfg={"fields": {"customer_phone": "ANI", "reason_text": ["Wrap"]}}),
    Case("phone empty file", "phone", b"", Bad("the file is empty")),
    Case("phone only a header", "phone", table(CALLS), Nothing()),
    Case("phone NUL byte in a cell", "phone", call(notes="ORD-100001 bro\x00ken"),
         ok(reason_text="ORD-100001 broken")),
    Case("phone ISO time with offset", "phone", call(start="2026-11-28T10:00:00+01:00"),
         ok(received_at=datetime(2026, 11, 28, 9, 0, tzinfo=UTC))),
    Case("phone multi-line quoted notes", "phone", call(notes="line one\nORD-100001\nbroken"),
         ok(reason_text="line one\nORD-100001\nbroken")),
    # The region's own country code written without "+" is recognised as such.
    Case("phone country code without a plus", "phone", call(caller="442079460123"),
         ok(customer_phone="+442079460123"), cfg={"default_region": "GB"}),
    Case("phone huge notes", "phone", call(notes=HUGE),
         ok(reason_text=lambda t: len(t) == 5000, order_number="ORD-100001")),

    # ---------------------------------------------------------------- portal / app forms
    Case("portal nested JSON form", "portal",
         js(form(refund={"amount": 12.345, "currency": "eur"})),
         ok(source_id="web-1", customer_email="zoe@example.org", order_number="ORD-100001",
            requested_amount=D("12.35"), currency="EUR", reason_category="damaged",
            reply_to="zoe@example.org")),
    Case("portal CSV export", "portal", portal_row(Amount="49.90", Currency="GBP"),
         ok(source_id="web-7", requested_amount=D("49.90"), currency="GBP",
            reason_category="damaged"), name="forms.csv"),
    Case("portal reason picked from a list", "portal",
         js(form(reason="Item not received", message="help")),
         ok(reason_category="not_received")),
    Case("portal unknown reason code: the text decides", "portal",
         js(form(reason="xyz-42", message="It never arrived")),
         ok(reason_category="not_received")),
    Case("portal local amount string", "portal", js(form(amount="1.234,50")),
         ok(requested_amount=D("1234.50"))),
    Case("portal absurd amount", "portal", js(form(amount=1e9)),
         Bad("is not a valid refund amount")),
    Case("portal negative amount", "portal", js(form(refund={"amount": -5})),
         Bad("amount '-5' is not a valid refund amount")),
    Case("portal currency conflict", "portal", js(form(amount="10 €", currency="GBP")),
         Bad("the amount is in EUR but the currency field says GBP")),
    Case("portal unknown currency", "portal", js(form(amount="10", currency="XXX")),
         Bad("currency 'XXX' is not known")),
    Case("portal order is a formula", "portal", js(form(order={"number": "=1+1"})),
         Bad("order number '=1+1' is not in a recognised format")),
    Case("portal invalid email, no order", "portal",
         js(form(order=None, customer={"email": "zoe(at)example"})),
         Bad("no order number, email or phone (the email 'zoe(at)example' is not valid)")),
    Case("portal email is a list", "portal",
         js(form(customer={"email": ["a@example.org"]})), ok(customer_email=None)),
    Case("portal truncated JSON", "portal", b'{"submission_id": "app-9", "order": {"num',
         Bad("not readable JSON")),
    Case("portal list with a number in it", "portal", js([42]), Bad("record 1 is a number")),
    Case("portal empty object", "portal", js({}),
         Bad("no order number, email or phone")),
    Case("portal empty list", "portal", js([]), Nothing()),
    Case("portal day-first date", "portal", js(form(submitted_at="27/11/2026 08:15")),
         ok(received_at=datetime(2026, 11, 27, 8, 15, tzinfo=UTC))),
    Case("portal nonsense date", "portal", js(form(submitted_at="yesterday-ish")),
         ok(received_at=MTIME)),
    Case("portal BOM and CRLF", "portal",
         b"\xef\xbb\xbf" + json.dumps(form(), indent=1).replace("\n", "\r\n").encode(),
         ok(source_id="web-1")),
    Case("portal formula in a CSV message", "portal",
         portal_row(Message="@SUM(1+1)*cmd|' /C calc'!A0"),
         ok(reason_text="@SUM(1+1)*cmd|' /C calc'!A0"), name="forms.csv"),
    Case("portal phone from the app in local format", "portal",
         js(form(customer={"email": "zoe@example.org", "phone": "06 12 34 56 78"})),
         ok(customer_phone="+33612345678"), cfg={"default_region": "FR"}),
    Case("portal unsupported file type", "portal", b"<form/>", Bad("unsupported file type"),
         name="form.xml"),
    Case("portal CSV without known headers", "portal", table(["x", "y"], ["1", "2"]),
         Bad("not a form export"), name="forms.csv"),
    Case("portal wrong types everywhere", "portal",
         js({"submission_id": [1], "email": {"a": 1}, "order_number": 100042, "amount": "ten",
             "message": {"t": "x"}}),
         Bad("amount 'ten' is not a valid refund amount")),
    Case("portal numeric order number", "portal",
         js({"submission_id": "n1", "order_number": 100042, "message": "broken"}),
         ok(order_number="ORD-100042")),
]



def doubt(fragment: str) -> Any:
    """A request whose doubts say `fragment`: the case escalates with those words."""
    return lambda doubts: any(fragment in d for d in doubts)


# Issue #12: when the bot is not sure which money, it says so (a doubt escalates the case);
# it never reads "-5" as 5, "0.004" as nothing, "30 kr" as the order's currency.
CASES += [
    Case("unsure: minus sign in an email", "email", eml("Please refund -5 EUR for ORD-100001."),
         ok(requested_amount=None, doubts=doubt("minus sign"))),
    Case("unsure: minus before the currency", "email", eml("ORD-100001: refund -€20.00 please"),
         ok(requested_amount=None, doubts=doubt("minus sign"))),
    Case("unsure: minus after the dollar sign", "email", eml("ORD-100001 refund $-50"),
         ok(requested_amount=None, doubts=doubt("minus sign"))),
    Case("unsure: below a cent", "email", eml("ORD-100001 please refund 0.004 EUR"),
         ok(requested_amount=None, doubts=doubt("finer than a cent"))),
    Case("unsure: kr is no currency the bot can tell", "email", eml("ORD-100001 refund 30 kr"),
         ok(currency=None, doubts=doubt("cannot tell"))),
    Case("unsure: bucks", "email", eml("ORD-100001 I want 30 bucks back"),
         ok(requested_amount=None, doubts=doubt("30 bucks"))),
    Case("unsure: an ISO code the bot does not handle", "email",
         eml("ORD-100001 refund 300 THB please"), ok(doubts=doubt("THB"))),
    Case("unsure: dollar sign and CAD", "email", eml("ORD-100001 please refund $20 CAD"),
         ok(doubts=doubt("two currencies"))),
    Case("unsure: Canadian dollars written the French way", "email",
         eml("ORD-100001 remboursez 18,50 $ CA svp"),
         ok(requested_amount=Decimal("18.50"), currency="CAD", doubts=())),
    Case("unsure: two orders in one email", "email",
         eml("Please refund ORD-100001 and ORD-100002, both broken."),
         ok(doubts=doubt("names 2 orders"))),
    Case("unsure: full-width order number and amount", "email",
         eml("Refund ＯＲＤ-１０００４２ please, ２０ € back"),
         ok(order_number="ORD-100042", requested_amount=Decimal("20.00"), currency="EUR")),
    Case("unsure: Arabic-Indic digits", "email", eml("ORD-١٠٠٠٤٢ refund ٣٠ EUR"),
         ok(order_number="ORD-100042", requested_amount=Decimal("30.00"))),
    Case("unsure: zero-width and bidi characters in an order number", "email",
         eml("Refund ORD-10\u200b00\u202e42 please"), ok(order_number="ORD-100042")),
    Case("unsure: Cyrillic O in ORD", "email", eml("Refund \u041eRD-100042 please"),
         ok(order_number="ORD-100042")),
    Case("unsure: card with NBSP separators is masked", "email",
         eml(f"ORD-100001 my card {VISA[:4]}\u00a0{VISA[4:8]}\u00a0{VISA[8:12]}\u00a0{VISA[12:]}"),
         ok(reason_text=lambda t: VISA[4:12] not in t.replace(" ", ""))),
    Case("unsure: card with dots and a line break is masked", "email",
         eml(f"ORD-100001 card {VISA[:4]}.{VISA[4:8]}.{VISA[8:12]}\n{VISA[12:]} cvc 123"),
         ok(reason_text=lambda t: VISA[4:12] not in t.replace(" ", "") and "123" not in t)),
    Case("unsure: German CVV word", "email", eml("ORD-100001 Prüfziffer 987 bitte"),
         ok(reason_text=lambda t: "987" not in t)),
    Case("unsure: csv amount N/A", "sheet", sheet(amount="N/A"),
         ok(requested_amount=None, doubts=doubt("'N/A'"))),
    Case("unsure: csv amount dash", "sheet", sheet(amount="-"),
         ok(requested_amount=None, doubts=doubt("'-'"))),
    Case("unsure: xlsx amount null stays text", "xlsx",
         workbook(["Order #", "E-mail", "Amount"], ["ORD-100001", "ada@example.org", "null"]),
         ok(requested_amount=None, doubts=doubt("'null'"))),
    Case("unsure: csv amount in kr", "sheet", sheet(amount="30 kr"),
         Bad("amount '30 kr' is not a valid")),
    Case("unsure: csv refund amount beats amount", "sheet",
         table(["Order #", "E-mail", "Amount", "Refund amount"],
               ["ORD-100001", "ada@example.org", "99.00", "20.00"]),
         ok(requested_amount=Decimal("20.00"))),
    Case("unsure: csv two refund amount columns", "sheet",
         table(["Order #", "E-mail", "Refund amount", "Requested amount"],
               ["ORD-100001", "ada@example.org", "10.00", "20.00"]),
         Bad("could each be the requested amount")),
    Case("unsure: csv two email columns", "sheet",
         table(["Order #", "Email", "E-mail", "Amount"],
               ["ORD-100001", "ada@example.org", "bo@example.org", "10.00"]),
         Bad("could each be the customer email")),
    Case("unsure: csv order cell and a second order in the reason", "sheet",
         sheet(reason="also ORD-100002 is broken"), ok(doubts=doubt("names 2 orders"))),
    Case("unsure: chat minus sign", "chat",
         js(conversation(say("ORD-100001 refund -5 EUR please"))),
         ok(requested_amount=None, doubts=doubt("minus sign"))),
    Case("unsure: chat two orders", "chat",
         js(conversation(say("refund ORD-100001 or ORD-100002?"))),
         ok(doubts=doubt("names 2 orders"))),
    Case("unsure: portal amount N/A", "portal", portal_row(Amount="N/A"),
         ok(requested_amount=None, doubts=doubt("'N/A'")), name="forms.csv"),
    Case("unsure: social bucks", "social", jsonl(post(text="@shop ORD-100001 want 30 bucks back")),
         ok(doubts=doubt("bucks"))),
    Case("unsure: a range of amounts in an email", "email",
         eml("ORD-100001 please refund 10-20 EUR, whatever is fair"),
         ok(doubts=doubt("names two amounts"))),
    Case("unsure: between two amounts in German", "email",
         eml("ORD-100001 bitte zwischen 10 und 20 € erstatten"),
         ok(doubts=doubt("names two amounts"))),
    Case("unsure: chat range with an en dash", "chat",
         js(conversation(say("ORD-100001 refund 10 – 20 € please"))),
         ok(doubts=doubt("names two amounts"))),
    Case("unsure: social one amount or another", "social",
         jsonl(post(text="@shop ORD-100001 refund 10 EUR or 20 EUR?")),
         ok(doubts=doubt("names two amounts"))),
    Case("unsure: portal refund range with no currency", "portal",
         portal_row(Amount="", Message="refund 10-20"),
         ok(doubts=doubt("names two amounts")), name="forms.csv"),
    Case("not a request: our own answer in a social export (direction outbound)", "social",
         jsonl(post(handle="@shop", direction="outbound",
                    text="@ana_b we have refunded 20.00 EUR for ORD-100001. Ref. C-000001")),
         Bad("our own outbound message")),
    Case("not a request: a Messenger echo", "social",
         jsonl(post(is_echo=True, text="Refund of 20.00 EUR for ORD-100001 is on its way")),
         Bad("is_echo true")),
    Case("not a request: written by our own account", "social",
         jsonl(post(handle="@Shop_Support",
                    text="@ana_b sorry to hear that, ORD-100001 is refunded")),
         Bad("our account @Shop_Support"), cfg={"own_handles": ["shop_support"]}),
    Case("a customer's post is still a request next to our own handles", "social",
         jsonl(post()), ok(order_number="ORD-100001"), cfg={"own_handles": ["@shop_support"]}),
    Case("chat: our echoed answer (from_me) is not the customer's words", "chat",
         js(conversation(say("ORD-100001 arrived broken, refund please"),
                         {"role": "customer", "from_me": True,
                          "text": "We refunded 99.00 EUR for ORD-100002"})),
         ok(order_number="ORD-100001", requested_amount=None,
            reason_text=lambda t: "ORD-100002" not in t)),
    Case("chat: a conversation of nothing but our own messages", "chat",
         js(conversation({"direction": "outbound", "text": "Your refund for ORD-100001 is done"})),
         Bad("no message from the customer")),
    Case("not a range: an order line and one amount", "email",
         eml("ORD-100001 items 3-4 arrived broken, refund 20 EUR"),
         ok(requested_amount=Decimal("20.00"), doubts=())),
]

def _read(case: Case, tmp_path: Path) -> list[IntakeItem]:
    if case.kind == "email":
        return [parse_eml_bytes(case.data, source_ref="hostile.eml", fallback_time=MTIME)]
    default = {"sheet": "in.csv", "xlsx": "in.xlsx", "phone": "calls.csv"}.get(case.kind,
                                                                             "in.json")
    path = tmp_path / (case.name or default)
    path.write_bytes(case.data)
    os.utime(path, (MTIME.timestamp(), MTIME.timestamp()))
    if case.kind in ("sheet", "xlsx"):
        return list(read_source(SourceConfig(kind="spreadsheet", path=path, **case.cfg)))
    return list(read_source(ExportSourceConfig(kind=case.kind, path=path, **case.cfg)))


def test_the_corpus_is_large_and_covers_every_channel() -> None:
    assert len(CASES) >= 100
    assert {c.kind for c in CASES} == set(CHANNELS)
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, tmp_path: Path) -> None:
    items = _read(case, tmp_path)
    if isinstance(case.expect, Nothing):
        assert items == []
        return
    assert len(items) == 1, items
    item = items[0]
    assert item.channel == CHANNELS[case.kind]
    assert item.source_id and len(item.source_id) <= 300
    assert VISA not in " ".join(str(v) for v in item.__dict__.values())
    if isinstance(case.expect, Bad):
        assert isinstance(item, Quarantined), item
        assert case.expect.reason in item.reason, item.reason
        assert len(item.excerpt) <= 200
        return
    assert isinstance(item, RefundRequest), item
    assert "\x00" not in item.reason_text and len(item.reason_text) <= 5000
    for name, expected in case.expect.fields.items():
        actual = getattr(item, name)
        if callable(expected) and not isinstance(expected, type):
            assert expected(actual), f"{name}={actual!r}"
        else:
            assert actual == expected, f"{name}={actual!r}, expected {expected!r}"


# --------------------------------------------------------------------------- properties


def test_rereading_any_channel_adds_nothing_new(tmp_path: Path) -> None:
    """Ids come from the export (or the content), never from the position or the run."""
    ids = []
    for _ in range(2):
        items = []
        for case in CASES:
            if case.kind in ("chat", "social", "phone", "portal") and isinstance(case.expect, Ok):
                folder = tmp_path / case.kind / str(abs(hash(case.id)))
                folder.mkdir(parents=True, exist_ok=True)
                items += _read(case, folder)
        ids.append([(i.channel, i.source_id) for i in items])
    assert ids[0] == ids[1] and len(ids[0]) > 50


def test_extraction_shortcuts_change_no_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gates that skip regex passes (extract.GATES) must give exactly the same results."""
    functions = [extract.mask_secrets, extract.find_order_numbers, extract.find_amount,
                 extract.classify_reason, extract.read_amount, extract.amount_doubts]
    for text in fuzz_texts(3000, seed=7):
        monkeypatch.setattr(extract, "GATES", False)
        slow = [f(text) for f in functions]
        monkeypatch.setattr(extract, "GATES", True)
        assert [f(text) for f in functions] == slow, text


@pytest.mark.parametrize(("text", "region", "expected"), [
    ("+44 20 7946 0123", None, "+442079460123"),
    ("020 7946 0123", "GB", "+442079460123"),
    ("020 7946 0123", None, None),
    ("0044 20 7946 0123", None, "+442079460123"),
    ("tel:+442079460123", None, "+442079460123"),
    ("+44 (0)20 7946 0123 ext. 12", None, "+442079460123"),
    ("06 12 34 56 78", "fr", "+33612345678"),
    ("anonymous", "GB", None),
    ("1-800-FLOWERS", "US", None),
    ("=1+1", "GB", None),
    ("ORD-100001", "GB", None),
    ("12345", "GB", None),
    ("+1" + "2" * 60, None, None),
    ("", "GB", None),
    (None, "GB", None),
    ("020 7946 0123", "XX", None),
])
def test_normalise_phone(text: str | None, region: str | None, expected: str | None) -> None:
    assert extract.normalise_phone(text, region) == expected


def test_the_amount_and_its_doubts_read_once_say_what_each_reading_says() -> None:
    """`read_amount` reads the doubts in the text `_candidates` already blanked: the same
    answers as finding the amount and its doubts apart (the way they were read before)."""
    for text in fuzz_texts(3000, seed=8):
        read = extract.read_amount(text)
        apart = dict.fromkeys([*extract.amount_doubts(text), *extract.choice_doubts(text)])
        assert (read.amount, read.currency) == (extract.find_amount(text) or (None, None))
        assert read.doubts == tuple(apart), text
