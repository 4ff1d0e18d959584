"""The demo: sandbox apps, generated inputs on every channel, one full run.

The inputs are generated from the same seeded dataset the sandbox serves, so
every outcome the bots know is shown: refunds, partials, rejections for each
policy rule, escalations, one refund asked for on two channels, and
quarantined junk. Each channel's input is written the way its tool exports it:
an inbox of .eml files, an ops spreadsheet, a helpdesk chat export, a social
inbox export, a telephony call log, a folder of self-service portal forms and a
voicemail box (a recording spoken by espeak-ng, with the telephony system's sidecar).
A German email and a French chat are answered in German and French.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import unicodedata
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from rich.console import Console

from bots.work.pipeline import execute

if TYPE_CHECKING:  # imported where used: the sandbox is only needed to build the demo
    from bots.config import Settings
    from bots.queue import Queue
    from bots.queue.staff import Staff
    from bots.sandbox.data import Customer, Dataset, Order

DEMO_SEED = 7
# Where prepare_inputs writes each channel's input, under the demo folder.
INPUTS = {"email": "inbox", "spreadsheet": "requests.xlsx", "chat": "chat",
          "social": "social", "phone": "calls", "portal": "portal", "voice": "voicemail"}


@dataclass(frozen=True)
class DemoRequest:
    channel: str  # "email", "spreadsheet", "chat", "social", "phone" or "portal"
    order_number: str | None
    email: str
    name: str
    reason: str
    amount: str | None = None  # as the customer wrote it
    expect: str = ""  # the outcome the demo expects, for the tests
    returns: dict[str, int] | None = None  # SKU -> count the words ask back; None: all
    language: str = "en"  # the language the customer writes in (the answer's language)


def demo_requests(ds: Dataset, today: date) -> list[DemoRequest]:
    """One request per scenario of the sandbox data, worded like real customers write."""
    from bots.sandbox.data import pick_scenarios

    s = pick_scenarios(ds)

    def who(key: str) -> tuple[str, str]:
        c = customer_of(ds, s[key])
        return c.email, c.name

    # A social inbox export has a handle, not an email: that request carries none, and
    # the bot identifies the customer by the order number alone.
    _, outside_name = who("outside_window")
    reqs = [
        DemoRequest("email", s["eligible"].order_number, *who("eligible"),
                    "The jacket arrived damaged, the zip is broken. Please refund me.",
                    expect="partial", returns={"AP-1001": 1}),
        DemoRequest("spreadsheet", s["eligible2"].order_number, *who("eligible2"),
                    "Customer changed her mind, returned unused",
                    f"{s['eligible2'].total + 100:.2f}",
                    expect="refunded"),
        DemoRequest("social", s["outside_window"].order_number, "", outside_name,
                    "I would like to return my order, I don't need it anymore.",
                    expect="rejected"),
        DemoRequest("portal", s["final_sale"].order_number, *who("final_sale"),
                    "Wrong size, please refund the whole order.", expect="partial"),
        DemoRequest("spreadsheet", s["all_final_sale"].order_number, *who("all_final_sale"),
                    "Customer wants money back (clearance items)", expect="rejected"),
        DemoRequest("phone", s["partly_refunded"].order_number, *who("partly_refunded"),
                    "Item broken on arrival", expect="partial"),
        DemoRequest("chat", s["fully_refunded"].order_number, *who("fully_refunded"),
                    "Where is my refund??", expect="rejected"),
        DemoRequest("portal", s["not_delivered"].order_number, *who("not_delivered"),
                    "Parcel never arrived, not received", expect="refunded"),
        DemoRequest("chat", s["duplicate"].order_number, *who("duplicate"),
                    "Hello, the item was the wrong item. Refund please.", expect="refunded"),
        DemoRequest("phone", s["duplicate"].order_number, *who("duplicate"),
                    "Called in: wrong item sent, wants refund (also asked on chat)",
                    expect="refunded"),
        DemoRequest("email", s["high_value"].order_number, *who("high_value"),
                    "The TV stopped working after two days. I want a full refund.",
                    expect="escalated"),
        DemoRequest("chat", s["quantity"].order_number, *who("quantity"),
                    "Hi, two of the three scented candles arrived broken. Can you refund "
                    "those two?", expect="partial", returns={"HO-3004": 2}),
        DemoRequest("email", "ORD-999999", "someone@example.org", "Some One",
                    "Refund for order ORD-999999 please", expect="rejected"),
    ]
    return reqs + _own_language_requests(ds, today)


def _own_language_requests(ds: Dataset, today: date) -> list[DemoRequest]:
    """A German email, a furious French chat and a voicemail (issue 17), on orders that
    no other scenario uses: delivered 3-20 days ago, nothing final sale or electronic,
    no earlier refund."""
    used = set(ds.scenarios.values()) | {r.order_number for r in ds.refunds}
    fresh = [o for o in ds.orders if o.order_number not in used and o.status == "delivered"
             and o.delivery_date is not None and 3 <= (today - o.delivery_date).days <= 20
             and not any(i.final_sale or i.category in ("electronics", "gift-cards")
                         for i in o.items)]
    german, french, caller = fresh[-3:]

    def who(order: Order) -> tuple[str, str]:
        c = customer_of(ds, order)
        return c.email, c.name

    return [
        DemoRequest("email", german.order_number, *who(german),
                    "Guten Tag, das Paket kam beschädigt an und der Inhalt ist kaputt. Ich bin "
                    "sehr enttäuscht. Bitte erstatten Sie mir die Bestellung.",
                    expect="refunded", language="de"),
        DemoRequest("chat", french.order_number, *who(french),
                    "Bonjour, mon colis est arrivé abîmé, c'est inadmissible ! Remboursez-moi "
                    "tout de suite, sinon je fais une contestation bancaire.",
                    expect="refunded", language="fr"),
        # Spoken with its order number; the machine is not sure of it (synthetic speech,
        # an "eight"): the case escalates with the transcript and the recording.
        DemoRequest("voice", caller.order_number, *who(caller),
                    "Hello, this is a message about my order O R D "
                    + " ".join(_DIGIT_WORDS[int(d)] for d in caller.order_number[4:])
                    + ". The parcel arrived damaged, please refund me. Thank you.",
                    expect="escalated"),
    ]


_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def customer_of(ds: Dataset, order: Order) -> Customer:
    return next(c for c in ds.customers if c.customer_id == order.customer_id)


# How a customer writing in their own language frames an email or a chat message.
_WORDS = {
    "en": {"subject": "Refund request", "hi": "Hi", "order": "Order number",
           "thanks": "Thanks", "it_is": "It is"},
    "de": {"subject": "Erstattung", "hi": "Hallo", "order": "Bestellnummer",
           "thanks": "Danke", "it_is": "Es ist die Bestellung"},
    "fr": {"subject": "Remboursement", "hi": "Bonjour", "order": "Numéro de commande",
           "thanks": "Merci", "it_is": "C'est la commande"},
}


def write_inbox(folder: Path, requests: list[DemoRequest], now: datetime) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for i, r in enumerate(x for x in requests if x.channel == "email"):
        msg = EmailMessage()
        msg["From"] = f"{r.name} <{r.email}>"
        msg["To"] = "refunds@shop.example"
        words = _WORDS.get(r.language, _WORDS["en"])
        msg["Subject"] = f"{words['subject']} {r.order_number or ''}".strip()
        msg["Date"] = format_datetime(now - timedelta(hours=i + 1))
        msg["Message-ID"] = make_msgid(idstring=f"demo{i}", domain="mail.example")
        body = f"{words['hi']},\n\n{r.reason}\n"
        if r.order_number:
            body += f"{words['order']}: {r.order_number}\n"
        if r.amount:
            body += f"Amount: {r.amount} EUR\n"
        msg.set_content(body + f"\n{words['thanks']},\n{r.name}\n")
        (folder / f"{i:03d}-{(r.order_number or 'no-order').lower()}.eml").write_bytes(
            bytes(msg))
        n += 1
    # Junk every shared inbox receives: quarantined with a reason, never dropped.
    (folder / "900-empty.eml").write_bytes(b"")
    (folder / "901-no-sender.eml").write_bytes(b"Subject: hello\n\nno sender here\n")
    return n + 2


def write_spreadsheet(path: Path, requests: list[DemoRequest], today: date) -> int:
    """An ops team's sheet: a title row, a blank row, then the header (as people make them)."""
    rows = [{"Order #": r.order_number, "Customer": r.name, "E-mail": r.email,
             "Amount": r.amount or "", "Reason": r.reason,
             "Date": (today - timedelta(days=1)).strftime("%d/%m/%Y")}
            for r in requests if r.channel == "spreadsheet"]
    rows.append({"Order #": "", "Customer": "=HYPERLINK(\"http://evil.example\",\"click\")",
                 "E-mail": "", "Amount": "", "Reason": "no order, no email", "Date": ""})
    path.parent.mkdir(parents=True, exist_ok=True)
    with pd.ExcelWriter(path, engine="openpyxl") as xl:
        pd.DataFrame([["Refund requests logged by the phone team"]]).to_excel(
            xl, sheet_name="Refunds", header=False, index=False)
        pd.DataFrame(rows).to_excel(xl, sheet_name="Refunds", startrow=2, index=False)
    return len(rows)


def _of(requests: list[DemoRequest], channel: str) -> list[DemoRequest]:
    return [r for r in requests if r.channel == channel]


def _customer_id(r: DemoRequest) -> str:
    """A stable per-customer id, as a helpdesk or social tool would give one."""
    folded = unicodedata.normalize("NFKD", r.name).encode("ascii", "ignore").decode()
    return "_".join(folded.lower().split())


def write_chat_export(folder: Path, requests: list[DemoRequest], now: datetime) -> int:
    """A helpdesk's chat transcripts (Zendesk/Intercom style): conversations with messages.

    The agent's side of the conversation is there too, as in a real export; only
    the customer's messages are the request.
    """
    conversations = []
    for i, r in enumerate(_of(requests, "chat")):
        start = now - timedelta(hours=3, minutes=i * 7)
        conversations.append({
            "id": f"chat-{8100 + i}",
            "created_at": start.isoformat(),
            "visitor": {"name": r.name, "email": r.email},
            "messages": [
                {"role": "agent", "author": "Sam (support)", "text": "Hi, how can I help?",
                 "timestamp": start.isoformat()},
                {"role": "customer", "author": r.name, "text": r.reason,
                 "timestamp": (start + timedelta(minutes=1)).isoformat()},
                {"role": "agent", "author": "Sam (support)", "text": "Which order is it?",
                 "timestamp": (start + timedelta(minutes=2)).isoformat()},
                {"role": "customer", "author": r.name,
                 "text": f"{_WORDS.get(r.language, _WORDS['en'])['it_is']} {r.order_number}",
                 "timestamp": (start + timedelta(minutes=3)).isoformat()},
            ],
        })
    # Junk: a visitor who left before saying anything (quarantined, never dropped).
    conversations.append({"id": "chat-8199", "created_at": now.isoformat(),
                          "visitor": {"name": "Visitor 4411"},
                          "messages": [{"role": "agent", "text": "Hi, how can I help?"}]})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "conversations.json").write_text(
        json.dumps({"conversations": conversations}, ensure_ascii=False, indent=1),
        encoding="utf-8")
    return len(conversations)


def write_social_export(folder: Path, requests: list[DemoRequest], now: datetime) -> int:
    """A social inbox export (JSON Lines): one direct message per line, handle, no email."""
    lines = []
    for i, r in enumerate(_of(requests, "social")):
        lines.append({"id": f"17{8400 + i}", "platform": "twitter",
                      "handle": f"@{_customer_id(r)}", "display_name": r.name,
                      "text": f"@shop_help {r.reason} Order {r.order_number}",
                      "created_at": (now - timedelta(hours=2, minutes=i)).isoformat()})
    # Junk: a handle that is a spreadsheet formula, no order, no email.
    lines.append({"id": "178499", "platform": "twitter", "handle": "=HYPERLINK(\"x\")",
                  "text": "refund me!!!", "created_at": now.isoformat()})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "messages.jsonl").write_text(
        "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines),
        encoding="utf-8")
    return len(lines)


def write_call_log(path: Path, requests: list[DemoRequest], phones: dict[str, str],
                   now: datetime) -> int:
    """The telephony system's call log (CSV): caller id, start, agent notes, order number."""
    rows = [{"Call ID": f"CALL-{52000 + i}", "Caller": phones.get(r.email, ""),
             "Start Time": (now - timedelta(hours=1, minutes=i * 9)).strftime("%d/%m/%Y %H:%M"),
             "Duration": f"{3 + i}:1{i}", "Agent": "jo", "Agent Notes": r.reason,
             "Order Number": r.order_number or ""}
            for i, r in enumerate(_of(requests, "phone"))]
    # Junk: a withheld number and no order: nobody to call back, nothing to look up.
    rows.append({"Call ID": "CALL-52099", "Caller": "anonymous",
                 "Start Time": now.strftime("%d/%m/%Y %H:%M"), "Duration": "0:40",
                 "Agent": "jo", "Agent Notes": "caller hung up before giving details",
                 "Order Number": ""})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def write_voicemail(folder: Path, requests: list[DemoRequest], phones: dict[str, str],
                    now: datetime) -> int:
    """The voicemail box: each message spoken by espeak-ng into a WAV, with the telephony
    system's sidecar (caller id, time, call id). Without espeak-ng: no voicemail."""
    import shutil as _shutil
    import subprocess

    from bots.intake.extract import normalise_phone

    espeak = _shutil.which("espeak-ng")
    folder.mkdir(parents=True, exist_ok=True)
    if espeak is None:
        return 0
    n = 0
    for i, r in enumerate(_of(requests, "voice")):
        stem = folder / f"vm-{61000 + i}"
        subprocess.run([espeak, "-w", str(stem.with_suffix(".wav")), "-s", "150", r.reason],
                       check=True, capture_output=True, timeout=60)
        caller = normalise_phone(phones.get(r.email, ""), "GB") or ""
        stem.with_suffix(".json").write_text(json.dumps(
            {"call_id": f"VM-{61000 + i}", "caller": caller, "name": r.name,
             "received_at": (now - timedelta(minutes=50 + i)).isoformat()}), encoding="utf-8")
        n += 1
    # Junk: the voicemail system cut a recording off after its header.
    (folder / "vm-61099.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    return n + 1


def write_portal_drops(folder: Path, requests: list[DemoRequest], now: datetime) -> int:
    """The self-service portal's refund forms: one JSON file per submission, as posted."""
    from bots.intake.extract import classify_reason

    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for i, r in enumerate(_of(requests, "portal")):
        form = {"submission_id": f"web-{30500 + i}",
                "submitted_at": (now - timedelta(minutes=30 + i)).isoformat(),
                "customer": {"name": r.name, "email": r.email},
                "order": {"number": r.order_number},
                "reason": classify_reason(r.reason), "message": r.reason}
        if r.amount:
            form["refund"] = {"amount": r.amount, "currency": "EUR"}
        (folder / f"web-{30500 + i}.json").write_text(json.dumps(form, ensure_ascii=False),
                                                      encoding="utf-8")
        n += 1
    # Junk: the app crashed half-way through posting a form.
    (folder / "app-30599.json").write_text('{"submission_id": "app-30599", "order": {"num',
                                           encoding="utf-8")
    return n + 1


def prepare_inputs(folder: Path, ds: Dataset, today: date) -> list[DemoRequest]:
    """(Re)write every channel's demo input under `folder`."""
    for name in (*INPUTS.values(), "outbox", "queue.sqlite", "queue.sqlite-wal",
                 "queue.sqlite-shm"):
        target = folder / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    reqs = demo_requests(ds, today)
    now = datetime.now(UTC)
    write_inbox(folder / INPUTS["email"], reqs, now)
    write_spreadsheet(folder / INPUTS["spreadsheet"], reqs, today)
    write_chat_export(folder / INPUTS["chat"], reqs, now)
    write_social_export(folder / INPUTS["social"], reqs, now)
    write_call_log(folder / INPUTS["phone"] / "calls.csv", reqs,
                   {c.email: c.phone for c in ds.customers}, now)
    write_portal_drops(folder / INPUTS["portal"], reqs, now)
    if not write_voicemail(folder / INPUTS["voice"], reqs,
                           {c.email: c.phone for c in ds.customers}, now):
        reqs = [r for r in reqs if r.channel != "voice"]  # no espeak-ng: no recording
    return reqs


def demo_overrides(folder: Path, orders_url: str, payments_url: str) -> dict[str, object]:
    """Settings that point the bots at the sandbox and the demo inputs."""
    return {
        "orders__url": orders_url,
        "payments__url": payments_url,
        "queue_url": f"sqlite:///{folder / 'queue.sqlite'}",
        "notify__outbox_dir": str(folder / "outbox"),
        "intake__sources": [
            {"kind": "eml_folder", "path": str(folder / INPUTS["email"]), "name": "demo inbox"},
            {"kind": "spreadsheet", "path": str(folder / INPUTS["spreadsheet"]),
             "name": "phone team sheet"},
            {"kind": "chat", "path": str(folder / INPUTS["chat"]), "name": "helpdesk chat"},
            {"kind": "social", "path": str(folder / INPUTS["social"]), "name": "social inbox"},
            {"kind": "phone", "path": str(folder / INPUTS["phone"]), "name": "call log",
             "default_region": "GB"},
            {"kind": "portal", "path": str(folder / INPUTS["portal"]),
             "name": "self-service portal"},
            {"kind": "voice", "path": str(folder / INPUTS["voice"]), "name": "voicemail",
             "default_region": "GB"},
        ],
    }


def use_sandbox_credentials() -> None:
    """The sandbox's published demo passwords, unless the user set their own."""
    from bots.sandbox.server import DEFAULT_ORDERS_USERS, DEFAULT_PAYMENTS_USERS

    os.environ.setdefault("REFUND_BOTS_ORDERS_PASSWORD", next(iter(DEFAULT_ORDERS_USERS.values())))
    os.environ.setdefault("REFUND_BOTS_PAYMENTS_PASSWORD",
                          next(iter(DEFAULT_PAYMENTS_USERS.values())))


def approve_escalations(run_dir: Path, agent: str = "demo.agent") -> Path | None:
    """Fill in the run's escalations.xlsx as an ops agent would: approve every case that
    names an order.

    Only the demo does this, to show the whole human-in-the-loop round trip; in real
    use a person fills in the Decision, Agent and Comment columns.
    """
    import openpyxl

    path = run_dir / "escalations.xlsx"
    if not path.exists():
        return None
    book = openpyxl.load_workbook(path)
    sheet = book.active
    if sheet is None:
        raise ValueError(f"{path}: the workbook has no sheet")
    headers = [c.value for c in sheet[1]]
    for row in sheet.iter_rows(min_row=2):
        # A voicemail the machine was not sure of names no order: a person listens to the
        # recording first, so the demo agent leaves it for them.
        if row[headers.index("Case")].value and row[headers.index("Order")].value:
            row[headers.index("Decision")].value = "approve"
            row[headers.index("Agent")].value = agent
            row[headers.index("Comment")].value = "checked with the customer (demo)"
    filled = run_dir / "escalations-decided.xlsx"
    book.save(filled)
    return filled


DEMO_PASSWORD = "demo-console-password"  # noqa: S105 - the demo's published password
DEMO_USERS = {"demo.agent": "agent", "demo.agent2": "agent", "demo.supervisor": "supervisor",
              "demo.viewer": "viewer"}


def demo_users(queue: Queue) -> Staff:
    """The demo's console users (password DEMO_PASSWORD), created once."""
    from bots.queue.staff import Staff

    staff = Staff.on(queue)
    for name, role in DEMO_USERS.items():
        if staff.user(name) is None:
            staff.add_user(name, role, DEMO_PASSWORD)
    return staff


def run_demo(folder: Path, *, workers: int | None, headed: bool, console: Console,
             history: int = 0) -> int:
    from bots.config import load_settings
    from bots.sandbox.data import build_dataset
    from bots.sandbox.server import SandboxProcess

    today = date.today()
    folder.mkdir(parents=True, exist_ok=True)
    use_sandbox_credentials()
    console.print("Starting the sandbox order system and payment portal...")
    with SandboxProcess(data_dir=folder / "sandbox", seed=DEMO_SEED, today=today) as sb:
        console.print(f"  order system:   {sb.orders_url}  (user ops.bot)")
        console.print(f"  payment portal: {sb.payments_url}  (user refund.bot)")
        reqs = prepare_inputs(folder, build_dataset(seed=DEMO_SEED, today=today), today)
        counts = Counter(r.channel for r in reqs)
        console.print("Demo inputs in " + str(folder) + ": " + ", ".join(
            f"{counts[channel]} {channel} ({path})" for channel, path in INPUTS.items())
            + " (plus junk to quarantine on every channel).")
        settings = load_settings(None, **demo_overrides(folder, sb.orders_url, sb.payments_url),
                                 browser__headless=not headed, processing__workers=workers)
        code = execute(settings, "demo", intake=True, process=True, today=today,
                       console=console)
        if code != 0:
            return code
        code = _human_round_trip(settings, today, console)
    _console_hint(settings, history, console)
    return code


def _console_hint(settings: Settings, history: int, console: Console) -> None:
    """Users for the console, the generated history, and how to look at it all."""
    from bots.queue import Queue
    from bots.tools.history import generate_history

    queue = Queue(settings.queue_url)
    demo_users(queue)
    if history:
        made = generate_history(queue, history)
        console.print(f"History: {made.cases} finished case(s) over {made.days} day(s) added "
                      f"({made.followups} follow-ups), for the dashboard and forecast.")
    console.print(f"Console: REFUND_BOTS_QUEUE_URL={settings.queue_url} refund-bots console "
                  f"(users {', '.join(DEMO_USERS)}; password {DEMO_PASSWORD})")


def _human_round_trip(settings: Settings, today: date, console: Console) -> int:
    """The demo's second act: an agent approves the escalations workbook, the bot pays."""
    from bots.queue import Queue
    from bots.reports.escalations import apply_decisions, read_decisions

    queue = Queue(settings.queue_url)
    run_dir = settings.runs_dir / (queue.last_run_id() or "")
    filled = approve_escalations(run_dir)
    if filled is None:
        return 0
    staff = demo_users(queue)
    decisions, bad = read_decisions(filled)
    result = apply_decisions(queue, decisions, run_id=None,
                             four_eyes_above=settings.console.four_eyes_above)
    for d in result.proposed:  # above the four-eyes amount: the supervisor approves too
        staff.confirm(d.case_id, username="demo.supervisor", approve=True,
                      comment="second approval (demo)")
    console.print(f"\nA (demo) ops agent approved {len(result.applied) + len(result.proposed)} "
                  f"escalated case(s) in {filled}"
                  + (f" ({len(result.proposed)} above the four-eyes amount, approved by a "
                     "supervisor too)" if result.proposed else "")
                  + "; the bot now pays what was approved:")
    return execute(settings, "demo", intake=False, process=True, today=today,
                   console=console)

