"""`refund-bots bench`: how fast intake is, on generated data shaped like real exports.

Intake must keep up with every channel at once on a small machine: a busy day
after a sale is tens of thousands of contacts, and the queue is only useful if
it is filled in seconds. The benchmark writes a realistic mix of exports into a
temporary folder (not timed), then times what a run does with them: parse,
extract, and group into cases (in memory, as the queue would), and separately
what storing them in the SQLite queue costs.
"""

from __future__ import annotations

import csv
import json
import random
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from bots.models import IntakeItem, RefundRequest

bench_app = typer.Typer(help="Measure the bots' throughput on generated data (nothing is "
                             "sent anywhere).", no_args_is_help=True)

# Share of the contacts per input kind. Email is kept small (250 in 100,000): Python's
# email parser costs ~2 ms a message, 20x a chat or CSV record, and a shared mailbox is
# read a few hundred messages at a time. .xlsx (openpyxl) is the other slow reader.
MIX: dict[str, float] = {
    "spreadsheet": 0.24, "xlsx": 0.005, "phone": 0.20, "chat": 0.22, "social": 0.10,
    "portal": 0.2325, "email": 0.0025,
}
DUPLICATE_SHARE = 0.10  # contacts about an order already asked for on another channel
REEXPORT_SHARE = 0.01  # records exported twice (overlapping exports): same source id
JUNK_SHARE = 0.01
ROWS_PER_FILE = 10_000
FORMS_PER_FILE = 500
SINGLE_FORMS = 100  # portal forms dropped one per file, as the app posts them

PROBLEMS = {
    "damaged": ["the {item} arrived damaged", "my {item} is broken", "the {item} stopped "
                "working after two days", "the screen of the {item} is cracked",
                "das Gerät ist kaputt", "le colis est arrivé endommagé"],
    "not_received": ["the parcel never arrived", "I have not received my order",
                     "tracking says delivered but nothing came", "Paket nie angekommen",
                     "je n'ai jamais reçu ma commande"],
    "wrong_item": ["you sent the wrong size", "I got the wrong item, a {item} I did not order",
                   "wrong colour delivered", "falscher Artikel geliefert"],
    "changed_mind": ["I changed my mind about the {item}", "I don't need it anymore",
                     "returned unused, no longer needed"],
    "late": ["the delivery was late, too late for the birthday", "it arrived two weeks late"],
    "duplicate_charge": ["I was charged twice for one order", "double charged on my card"],
    "other": ["please call me back about a refund", "can I get my money back?"],
}
ITEMS = ("jacket", "kettle", "headphones", "lamp", "phone case", "sneakers", "blender", "watch")
FIRST = ("Ana", "Ben", "Chloé", "Dev", "Eva", "Finn", "Gita", "Hugo", "Ines", "Jon", "Kira",
         "Lars", "Mia", "Noor", "Omar", "Pia", "Quinn", "Rosa", "Sven", "Tara", "Ugo", "Vera")
LAST = ("Brennan", "Costa", "Dubois", "Fischer", "García", "Horvat", "Lindqvist", "Mensah",
        "Novak", "Öztürk", "Rossi", "Taylor", "van Dijk", "Weber", "Nielsen", "Laurent")


@dataclass(frozen=True)
class Customer:
    name: str
    email: str
    phone: str
    handle: str


@dataclass(frozen=True)
class Ask:
    """One generated contact: what the customer wants and on which input kind."""

    kind: str
    order: str
    customer: Customer
    text: str
    amount: str | None
    at: datetime
    ref: int  # a number unique to the contact (ids are made from it)


@dataclass
class Corpus:
    folder: Path
    sources: dict[str, list[Any]]  # channel -> source configs
    asks: int = 0
    junk: int = 0
    counts: Counter[str] = field(default_factory=Counter)


# --------------------------------------------------------------------------- generation


def _customers(rng: random.Random, n: int) -> list[Customer]:
    out = []
    for i in range(n):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        local = f"{first}.{last}{i}".lower().replace(" ", "").replace("é", "e").replace(
            "í", "i").replace("ö", "o")
        out.append(Customer(f"{first} {last}", f"{local}@example.org", _phone(rng, i),
                            f"@{local.replace('.', '_')}"))
    return out


def _phone(rng: random.Random, i: int) -> str:
    """Caller ids as telephony exports them: E.164-ish, or national (GB) for local calls."""
    d = f"{i:07d}"
    return rng.choice((f"+49 30 {d}", f"+33 6 {d[:2]} {d[2:4]} {d[4:6]} {d[6]}0",
                       f"020 7{d[:3]} {d[3:]}", f"+44 20 7{d[:3]} {d[3:]}", f"+1 415 555 {d[3:]}"))


def _say(rng: random.Random, ask_order: str, amount: str | None, formal: bool) -> str:
    category = rng.choice(list(PROBLEMS))
    problem = rng.choice(PROBLEMS[category]).format(item=rng.choice(ITEMS))
    parts = [rng.choice(("Hi,", "Hello,", "Good morning,", "Hey", ""))] if formal else []
    parts.append(f"{problem[0].upper()}{problem[1:]}.")
    parts.append(rng.choice((f"Order {ask_order}.", f"My order number is {ask_order}.",
                             f"({ask_order})", f"order no. {ask_order[4:]}")))
    if amount:
        parts.append(rng.choice((f"Please refund {amount} EUR.", f"I want €{amount} back.",
                                 f"Refund of {amount} please.")))
    else:
        parts.append(rng.choice(("Please refund me.", "I want my money back.",
                                 "Refund please!", "What can you do?")))
    if formal:
        parts.append(rng.choice(("Thanks", "Kind regards", "Cheers", "")))
    return " ".join(p for p in parts if p)


def _asks(rng: random.Random, n: int) -> list[Ask]:
    customers = _customers(rng, max(10, n // 3))
    kinds = list(MIX)
    weights = [MIX[k] for k in kinds]
    start = datetime(2026, 11, 1, tzinfo=UTC)
    asks: list[Ask] = []
    originals: list[Ask] = []
    for i in range(n):
        kind = rng.choices(kinds, weights)[0]
        repeat = bool(originals) and rng.random() < DUPLICATE_SHARE
        if repeat:
            first = rng.choice(originals)  # the same customer, same order, another channel
            others = [k for k in kinds if k != first.kind]
            kind = rng.choices(others, [MIX[k] for k in others])[0]
            order, customer = first.order, first.customer
        else:
            order, customer = f"ORD-{100000 + i % 900_000:06d}", rng.choice(customers)
        amount = f"{rng.randint(5, 400)}.{rng.choice(('00', '50', '90', '99'))}" \
            if rng.random() < 0.4 else None
        text = _say(rng, order, amount, kind in ("email", "chat", "portal"))
        ask = Ask(kind, order, customer, text, amount, start + timedelta(seconds=i * 7), i)
        asks.append(ask)
        if not repeat:
            originals.append(ask)
    return asks


def generate(folder: Path, n: int, seed: int) -> Corpus:
    """Write N contacts across every input kind under `folder`; returns the sources to read."""
    from bots.intake.sources import ExportSourceConfig, SourceConfig

    rng = random.Random(seed)
    asks = _asks(rng, n)
    by_kind: dict[str, list[Ask]] = {k: [] for k in MIX}
    for ask in asks:
        by_kind[ask.kind].append(ask)
    corpus = Corpus(folder, {}, asks=len(asks))
    writers: dict[str, Callable[[Path, list[Ask], random.Random], int]] = {
        "spreadsheet": _write_sheets, "xlsx": _write_xlsx, "phone": _write_calls,
        "chat": _write_chats, "social": _write_social, "portal": _write_portal,
        "email": _write_emails,
    }
    for kind, writer in writers.items():
        target = folder / kind
        target.mkdir(parents=True, exist_ok=True)
        corpus.junk += writer(target, by_kind[kind], rng)
        corpus.counts[kind] = len(by_kind[kind])
    corpus.sources = {
        "spreadsheet": [SourceConfig(kind="spreadsheet", path=folder / "spreadsheet"),
                        SourceConfig(kind="spreadsheet", path=folder / "xlsx")],
        "phone": [ExportSourceConfig(kind="phone", path=folder / "phone",
                                     default_region="GB")],
        "chat": [ExportSourceConfig(kind="chat", path=folder / "chat")],
        "social": [ExportSourceConfig(kind="social", path=folder / "social")],
        "portal": [ExportSourceConfig(kind="portal", path=folder / "portal")],
        "email": [SourceConfig(kind="eml_folder", path=folder / "email")],
    }
    return corpus


def _chunks(items: list[Ask], size: int) -> Iterator[tuple[int, list[Ask]]]:
    for i in range(0, max(len(items), 1), size):
        yield i // size, items[i:i + size]


def _reexports(rng: random.Random, rows: list[Any]) -> list[Any]:
    """Overlapping exports: a few records appear again, same id, further down."""
    again = [r for r in rows if rng.random() < REEXPORT_SHARE]
    return rows + again


def _write_sheets(folder: Path, asks: list[Ask], rng: random.Random) -> int:
    junk = 0
    for part, chunk in _chunks(asks, ROWS_PER_FILE):
        rows = [[a.order, a.customer.name, a.customer.email, a.amount or "",
                 a.text[:80], a.at.strftime("%d/%m/%Y")] for a in chunk]
        bad = [["", "=HYPERLINK(\"http://x\",\"y\")", "", "", "no order", ""],
               ["ORD-12", "Bo", "", "-12.50", "refund", ""]]
        junk += _sprinkle(rng, rows, bad, len(chunk))
        with (folder / f"sheet-{part:03d}.csv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["Order #", "Customer", "E-mail", "Amount", "Reason", "Date"])
            w.writerows(rows)
    return junk


def _write_xlsx(folder: Path, asks: list[Ask], rng: random.Random) -> int:
    rows = [{"Order number": a.order, "Name": a.customer.name, "Email": a.customer.email,
             "Amount": float(a.amount) if a.amount else None, "Reason": a.text[:80],
             "Date": a.at.replace(tzinfo=None)} for a in asks]
    pd.DataFrame(rows or [{"Order number": None, "Email": None}]).to_excel(
        folder / "ops.xlsx", index=False)
    return 0


def _write_calls(folder: Path, asks: list[Ask], rng: random.Random) -> int:
    junk = 0
    for part, chunk in _chunks(asks, ROWS_PER_FILE):
        rows = [[f"CALL-{a.ref:07d}", a.customer.phone, a.at.strftime("%Y-%m-%d %H:%M:%S"),
                 f"{rng.randint(1, 20)}:{rng.randint(10, 59)}", rng.choice(("jo", "sam", "al")),
                 "Caller says: " + a.text, a.order if rng.random() < 0.5 else ""]
                for a in chunk]
        rows = _reexports(rng, rows)
        bad = [[f"CALL-J{rng.randint(0, 10**6)}", "anonymous", "", "0:10", "jo",
                "hung up", ""]]
        junk += _sprinkle(rng, rows, bad, len(chunk))
        with (folder / f"calls-{part:03d}.csv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["Call ID", "Caller", "Start Time", "Duration", "Agent", "Agent Notes",
                        "Order Number"])
            w.writerows(rows)
    return junk


def _write_chats(folder: Path, asks: list[Ask], rng: random.Random) -> int:
    junk = 0
    for part, chunk in _chunks(asks, ROWS_PER_FILE):
        lines = []
        for a in chunk:
            t = a.at
            messages = [{"role": "agent", "text": "Hi! How can I help you today?",
                         "timestamp": t.isoformat()},
                        {"role": "customer", "text": a.text,
                         "timestamp": (t + timedelta(seconds=40)).isoformat()}]
            if rng.random() < 0.5:
                messages += [{"role": "agent", "text": "Sorry to hear that, let me check.",
                              "timestamp": (t + timedelta(seconds=90)).isoformat()},
                             {"role": "customer", "text": "Thanks, I'll wait.",
                              "timestamp": (t + timedelta(seconds=95)).isoformat()}]
            lines.append(json.dumps({"id": f"conv-{a.ref}", "created_at": t.isoformat(),
                                     "customer": {"email": a.customer.email,
                                                  "name": a.customer.name},
                                     "messages": messages}, ensure_ascii=False))
        lines = _reexports(rng, lines)
        junk += _sprinkle(rng, lines, ['{"id": "conv-broken", "messages": [{"role": "cus',
                                       '{"id": "conv-empty", "messages": []}'], len(chunk))
        (folder / f"chats-{part:03d}.jsonl").write_text("\n".join(lines) + "\n",
                                                        encoding="utf-8")
    return junk


def _write_social(folder: Path, asks: list[Ask], rng: random.Random) -> int:
    junk = 0
    for part, chunk in _chunks(asks, ROWS_PER_FILE):
        lines = [json.dumps({"id": str(9_000_000 + a.ref),
                             "platform": rng.choice(("twitter", "instagram", "facebook")),
                             "handle": a.customer.handle, "display_name": a.customer.name,
                             "text": "@shop " + a.text, "created_at": a.at.isoformat()},
                            ensure_ascii=False) for a in chunk]
        lines = _reexports(rng, lines)
        junk += _sprinkle(rng, lines, ['{"id": "x1", "handle": "=cmd|\' /C calc\'!A0", '
                                       '"text": "refund!!"}', "not json at all"], len(chunk))
        (folder / f"social-{part:03d}.jsonl").write_text("\n".join(lines) + "\n",
                                                         encoding="utf-8")
    return junk


def _form(a: Ask) -> dict[str, Any]:
    form: dict[str, Any] = {"submission_id": f"web-{a.ref}", "submitted_at": a.at.isoformat(),
                            "customer": {"name": a.customer.name, "email": a.customer.email},
                            "order": {"number": a.order}, "message": a.text}
    if a.amount:
        form["refund"] = {"amount": float(a.amount), "currency": "EUR"}
    return form


def _write_portal(folder: Path, asks: list[Ask], rng: random.Random) -> int:
    singles, batched = asks[:SINGLE_FORMS], asks[SINGLE_FORMS:]
    for a in singles:
        (folder / f"web-{a.ref}.json").write_text(json.dumps(_form(a), ensure_ascii=False),
                                                  encoding="utf-8")
    junk = 0
    for part, chunk in _chunks(batched, FORMS_PER_FILE):
        forms: list[Any] = [_form(a) for a in chunk]
        junk += _sprinkle(rng, forms, [{"submission_id": "bad", "order": {"number": "=1+1"},
                                        "refund": {"amount": -5}}, "a string"], len(chunk))
        (folder / f"forms-{part:04d}.json").write_text(
            json.dumps({"submissions": forms}, ensure_ascii=False), encoding="utf-8")
    (folder / "web-truncated.json").write_text('{"submission_id": "web-x", "order": {"num')
    return junk + 1


def _write_emails(folder: Path, asks: list[Ask], rng: random.Random) -> int:
    for a in asks:
        msg = EmailMessage()
        msg["From"] = f"{a.customer.name} <{a.customer.email}>"
        msg["To"] = "refunds@shop.example"
        msg["Subject"] = f"Refund {a.order}"
        msg["Date"] = format_datetime(a.at)
        msg["Message-ID"] = f"<bench-{a.ref}@mail.example>"
        msg.set_content(a.text + "\n")
        (folder / f"{a.ref:07d}.eml").write_bytes(bytes(msg))
    (folder / "zz-empty.eml").write_bytes(b"")
    return 1


def _sprinkle(rng: random.Random, rows: list[Any], bad: list[Any], n: int) -> int:
    """About JUNK_SHARE of `n` junk records, inserted at random places."""
    count = sum(rng.random() < JUNK_SHARE for _ in range(n))
    for _ in range(count):
        rows.insert(rng.randrange(len(rows) + 1), rng.choice(bad))
    return count


# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    seconds: float  # wall clock
    cpu_seconds: float  # this process's CPU time: what other load on the machine cannot inflate
    per_channel: dict[str, tuple[int, float]]  # channel -> (items, seconds)
    requests: int
    quarantined: int
    distinct_requests: int
    cases: int
    dedupe_seconds: float
    items: list[IntakeItem]


def clear_caches() -> None:
    """Forget what an earlier run learnt (phone numbers, order numbers): each run starts cold."""
    from bots.intake import exports, extract

    extract._normalise_phone.cache_clear()
    extract._order_spans_of.cache_clear()
    exports._steps.cache_clear()


def time_intake(corpus: Corpus) -> Timing:
    """Parse + extract every source, then group into cases the way the queue does."""
    from bots.intake.sources import read_source

    clear_caches()
    items: list[IntakeItem] = []
    per_channel: dict[str, tuple[int, float]] = {}
    start, cpu = time.perf_counter(), time.process_time()
    for channel, sources in corpus.sources.items():
        t = time.perf_counter()
        got = [item for cfg in sources for item in read_source(cfg)]
        per_channel[channel] = (len(got), time.perf_counter() - t)
        items += got
    t = time.perf_counter()
    requests, cases = dedupe(items)
    dedupe_seconds = time.perf_counter() - t
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    n_req = sum(isinstance(i, RefundRequest) for i in items)
    return Timing(total, cpu, per_channel, n_req, len(items) - n_req, requests, cases,
                  dedupe_seconds, items)


def dedupe(items: list[IntakeItem]) -> tuple[int, int]:
    """(distinct requests, cases): unique (channel, source id), one case per order number.

    The same keys as `Queue.add_request` / `case_key_for`, computed with pandas.
    """
    reqs = [i for i in items if isinstance(i, RefundRequest)]
    if not reqs:
        return 0, 0
    frame = pd.DataFrame({
        "channel": [r.channel for r in reqs], "source_id": [r.source_id for r in reqs],
        "order": [r.order_number for r in reqs], "email": [r.customer_email for r in reqs]})
    frame = frame.drop_duplicates(["channel", "source_id"])
    key = ("order:" + frame["order"].str.upper()).fillna("customer:" + frame["email"].str.lower())
    key = key.fillna("contact:" + frame["channel"] + ":" + frame["source_id"])
    return len(frame), int(key.nunique())


@dataclass(frozen=True)
class QueueTiming:
    requests: int
    one_by_one: float  # seconds, one transaction per request (Queue.add_request)
    batched: float  # seconds, INSERT_BATCH requests per transaction (Queue.add_requests)

    def rate(self, seconds: float) -> str:
        return f"{self.requests / seconds:,.0f}" if seconds else "-"


def time_queue(items: list[IntakeItem], n: int, folder: Path) -> QueueTiming:
    """Store the first `n` requests twice, each time in a fresh SQLite queue: one by one,
    then batched as intake does. Same requests, same disk, one after the other.
    """
    from bots.queue import Queue

    reqs = [i for i in items if isinstance(i, RefundRequest)][:n]

    def timed(name: str, store: Callable[[Queue], object]) -> float:
        queue = Queue(f"sqlite:///{folder / name}")
        start = time.perf_counter()
        store(queue)
        seconds = time.perf_counter() - start
        queue.engine.dispose()
        return seconds

    one = timed("bench-queue-one.sqlite", lambda q: [q.add_request(r, "bench") for r in reqs])
    batched = timed("bench-queue-batched.sqlite",
                    lambda q: q.add_requests(reqs, "bench"))
    return QueueTiming(len(reqs), one, batched)


# --------------------------------------------------------------------------- command


@bench_app.command("intake")
def intake(
    n: Annotated[int, typer.Option("--n", min=10, help="Contacts to generate.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed of the generated data.")] = 1,
    repeat: Annotated[int, typer.Option(min=1, help="Timed runs; the median is shown.")] = 3,
    db: Annotated[int, typer.Option("--db", min=0, help="Requests stored in a SQLite queue "
                                    "to time the database (0: skip).")] = 5_000,
) -> None:
    """Time parse + extract + dedupe of N contacts across every channel (one process)."""
    console = Console()
    with tempfile.TemporaryDirectory(prefix="refund-bots-bench-") as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        corpus = generate(folder, n, seed)
        console.print(f"Generated {corpus.asks:,} contacts (+{corpus.junk:,} junk) in "
                      f"{time.perf_counter() - t:.1f} s (not timed): "
                      + ", ".join(f"{k} {v:,}" for k, v in corpus.counts.items()))
        runs = [time_intake(corpus) for _ in range(repeat)]
        for i, run in enumerate(runs, start=1):
            console.print(f"  run {i}: {run.seconds:.2f} s ({run.cpu_seconds:.2f} s CPU), "
                          f"{(run.requests + run.quarantined) / run.seconds:,.0f} items/s")
        median = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
        _report(console, median, runs)
        if db:
            from bots.queue import INSERT_BATCH

            q = time_queue(median.items, db, folder)
            console.print(f"SQLite queue: {q.requests:,} requests stored (not part of the "
                          f"figures above), each time into a fresh file: one transaction each "
                          f"{q.one_by_one:.2f} s ({q.rate(q.one_by_one)} requests/s); "
                          f"{INSERT_BATCH} a transaction {q.batched:.2f} s "
                          f"({q.rate(q.batched)} requests/s), as intake stores them.")


def _report(console: Console, run: Timing, runs: list[Timing]) -> None:
    seconds = statistics.median(r.seconds for r in runs)
    items = run.requests + run.quarantined
    table = Table(title="Intake throughput (median run)")
    for col in ("channel", "items", "seconds", "items/s"):
        table.add_column(col, justify="left" if col == "channel" else "right")
    for channel, (count, secs) in run.per_channel.items():
        table.add_row(channel, f"{count:,}", f"{secs:.2f}", f"{count / secs:,.0f}" if secs
                      else "-")
    table.add_row("dedupe", f"{run.requests:,}", f"{run.dedupe_seconds:.2f}", "")
    console.print(table)
    console.print(f"Total: {items:,} items ({run.requests:,} requests, {run.quarantined:,} "
                  f"quarantined) in {seconds:.2f} s (median of {len(runs)}): "
                  f"{items / seconds:,.0f} items/s, {run.requests / seconds:,.0f} requests/s.")
    console.print(f"Distinct requests {run.distinct_requests:,}; distinct cases {run.cases:,}.")
    load = _load_average()
    console.print(f"One process (one core); load average when done: {load}.")


def _load_average() -> str:
    """Other work on the machine slows every figure above: say how busy it was."""
    try:
        return ", ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"
