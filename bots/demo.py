"""The demo: sandbox apps, a generated inbox and spreadsheet, one full run.

The inputs are generated from the same seeded dataset the sandbox serves, so
every outcome the bots know is shown: refunds, partials, rejections for each
policy rule, escalations, one refund asked for on two channels, and
quarantined junk.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import pandas as pd
from rich.console import Console

DEMO_SEED = 7


@dataclass(frozen=True)
class DemoRequest:
    channel: str  # "email" or "spreadsheet"
    order_number: str | None
    email: str
    name: str
    reason: str
    amount: str | None = None  # as the customer wrote it
    expect: str = ""  # the outcome the demo expects, for the tests


def demo_requests(ds, today: date) -> list[DemoRequest]:  # noqa: ANN001 - sandbox Dataset
    """One request per scenario of the sandbox data, worded like real customers write."""
    from bots.sandbox.data import pick_scenarios

    s = pick_scenarios(ds)

    def who(key: str) -> tuple[str, str]:
        c = customer_of(ds, s[key])
        return c.email, c.name

    reqs = [
        DemoRequest("email", s["eligible"].order_number, *who("eligible"),
                    "The jacket arrived damaged, the zip is broken. Please refund me.",
                    expect="refunded"),
        DemoRequest("spreadsheet", s["eligible2"].order_number, *who("eligible2"),
                    "Customer changed her mind, returned unused",
                    f"{s['eligible2'].total + 100:.2f}",
                    expect="refunded"),
        DemoRequest("email", s["outside_window"].order_number, *who("outside_window"),
                    "I would like to return my order, I don't need it anymore.",
                    expect="rejected"),
        DemoRequest("email", s["final_sale"].order_number, *who("final_sale"),
                    "Wrong size, please refund the whole order.", expect="partial"),
        DemoRequest("spreadsheet", s["all_final_sale"].order_number, *who("all_final_sale"),
                    "Customer wants money back (clearance items)", expect="rejected"),
        DemoRequest("spreadsheet", s["partly_refunded"].order_number, *who("partly_refunded"),
                    "Item broken on arrival", expect="partial"),
        DemoRequest("email", s["fully_refunded"].order_number, *who("fully_refunded"),
                    "Where is my refund??", expect="rejected"),
        DemoRequest("spreadsheet", s["not_delivered"].order_number, *who("not_delivered"),
                    "Parcel never arrived, not received", expect="refunded"),
        DemoRequest("email", s["duplicate"].order_number, *who("duplicate"),
                    "Hello, the item was the wrong item. Refund please.", expect="refunded"),
        DemoRequest("spreadsheet", s["duplicate"].order_number, *who("duplicate"),
                    "Called in: wrong item sent, wants refund (also emailed)",
                    expect="refunded"),
        DemoRequest("email", s["high_value"].order_number, *who("high_value"),
                    "The TV stopped working after two days. I want a full refund.",
                    expect="escalated"),
        DemoRequest("email", "ORD-999999", "someone@example.org", "Some One",
                    "Refund for order ORD-999999 please", expect="rejected"),
    ]
    return reqs


def customer_of(ds, order):  # noqa: ANN001, ANN201
    return next(c for c in ds.customers if c.customer_id == order.customer_id)


def write_inbox(folder: Path, requests: list[DemoRequest], now: datetime) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for i, r in enumerate(x for x in requests if x.channel == "email"):
        msg = EmailMessage()
        msg["From"] = f"{r.name} <{r.email}>"
        msg["To"] = "refunds@shop.example"
        msg["Subject"] = f"Refund request {r.order_number or ''}".strip()
        msg["Date"] = format_datetime(now - timedelta(hours=i + 1))
        msg["Message-ID"] = make_msgid(idstring=f"demo{i}", domain="mail.example")
        body = f"Hi,\n\n{r.reason}\n"
        if r.order_number:
            body += f"Order number: {r.order_number}\n"
        if r.amount:
            body += f"Amount: {r.amount} EUR\n"
        msg.set_content(body + f"\nThanks,\n{r.name}\n")
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


def prepare_inputs(folder: Path, ds, today: date) -> list[DemoRequest]:  # noqa: ANN001
    """(Re)write the demo inbox and spreadsheet under `folder`."""
    for name in ("inbox", "requests.xlsx", "queue.sqlite", "queue.sqlite-wal",
                 "queue.sqlite-shm"):
        target = folder / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    reqs = demo_requests(ds, today)
    write_inbox(folder / "inbox", reqs, datetime.now(UTC))
    write_spreadsheet(folder / "requests.xlsx", reqs, today)
    return reqs


def demo_overrides(folder: Path, orders_url: str, payments_url: str) -> dict[str, object]:
    """Settings that point the bots at the sandbox and the demo inputs."""
    return {
        "orders__url": orders_url,
        "payments__url": payments_url,
        "queue_url": f"sqlite:///{folder / 'queue.sqlite'}",
        "intake__sources": [
            {"kind": "eml_folder", "path": str(folder / "inbox"), "name": "demo inbox"},
            {"kind": "spreadsheet", "path": str(folder / "requests.xlsx"),
             "name": "phone team sheet"},
        ],
    }


def use_sandbox_credentials() -> None:
    """The sandbox's published demo passwords, unless the user set their own."""
    from bots.sandbox.server import DEFAULT_ORDERS_USERS, DEFAULT_PAYMENTS_USERS

    os.environ.setdefault("REFUND_BOTS_ORDERS_PASSWORD", next(iter(DEFAULT_ORDERS_USERS.values())))
    os.environ.setdefault("REFUND_BOTS_PAYMENTS_PASSWORD",
                          next(iter(DEFAULT_PAYMENTS_USERS.values())))


def run_demo(folder: Path, *, workers: int | None, headed: bool, console: Console) -> int:
    from bots.cli import execute
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
        console.print(f"Demo inputs: {sum(r.channel == 'email' for r in reqs)} emails in "
                      f"{folder / 'inbox'}, {sum(r.channel == 'spreadsheet' for r in reqs)} "
                      f"rows in {folder / 'requests.xlsx'} (plus junk to quarantine).")
        settings = load_settings(None, **demo_overrides(folder, sb.orders_url, sb.payments_url),
                                 browser__headless=not headed, processing__workers=workers)
        return execute(settings, "demo", intake=True, process=True, today=today)

