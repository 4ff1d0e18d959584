"""`bench process`: the bot's seconds per case, side by side with raw HTTP.

Both sides load the very same pages: the bot runs the demo cases in dry-run mode
(so every repeat does the same work and nothing is paid), recording every page
it loads; then an httpx client, logged in to both apps, fetches that recorded
list. The ratio says what the browser costs over the server's own time, on the
same machine in the same minute, which is what survives a noisy shared machine.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bots.config import Settings, load_settings, secret
from bots.decide.policy import load_policy
from bots.decide.signals import load_signals
from bots.legacy.session import BotSession
from bots.queue import Queue
from bots.runs import RunFolder
from bots.tools.demo import DEMO_SEED, demo_overrides, prepare_inputs, use_sandbox_credentials
from bots.work.pipeline import run_intake
from bots.work.processing import Processor

CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')


@dataclass
class ProcessBench:
    cases: int
    pages_per_case: float
    bot_seconds_per_case: list[float]  # the current page objects
    http_seconds_per_case: list[float]
    before_seconds_per_case: list[float] = field(default_factory=list)  # fast switched off
    before_pages_per_case: float = 0.0

    @property
    def ratio(self) -> float:
        return (statistics.median(self.bot_seconds_per_case)
                / statistics.median(self.http_seconds_per_case))

    @property
    def before_ratio(self) -> float:
        return (statistics.median(self.before_seconds_per_case)
                / statistics.median(self.http_seconds_per_case))


@dataclass
class SubmitBench:
    """Real runs (refund form, confirmation, order note): seconds per paying case."""

    cases: int
    paid: int
    after: list[float]  # median seconds per paying case, one per pass
    before: list[float]
    after_all: list[float]  # seconds per case over every case of the pass
    before_all: list[float]


def bench_process(repeat: int = 3, workers: int = 1) -> ProcessBench:
    """Dry runs: the page objects as they are ("after") and with `fast` off ("before"),
    alternately in one sandbox, and raw HTTP fetching the pages the bot loaded."""
    from bots.sandbox.data import build_dataset
    from bots.sandbox.server import SandboxProcess

    use_sandbox_credentials()
    today = date.today()
    with tempfile.TemporaryDirectory() as tmp, \
            SandboxProcess(data_dir=Path(tmp) / "sandbox", seed=DEMO_SEED, today=today) as sb:
        folder = Path(tmp)
        prepare_inputs(folder, build_dataset(seed=DEMO_SEED, today=today), today)
        settings = _settings(folder, sb.orders_url, sb.payments_url, workers)
        queue = Queue(settings.queue_url)
        run_intake(settings.intake, queue, RunFolder.create(settings.runs_dir))
        bot: list[float] = []
        before: list[float] = []
        http: list[float] = []
        pages: list[str] = []
        old_pages: list[str] = []
        cases = 0
        for _ in range(repeat):
            old_pages, seconds, cases = asyncio.run(_bot_pass(settings, queue, today, fast=False))
            before.append(seconds / cases)
            pages, seconds, cases = asyncio.run(_bot_pass(settings, queue, today, fast=True))
            bot.append(seconds / cases)
            http.append(_http_pass(settings, pages) / cases)
    return ProcessBench(cases, len(pages) / max(cases, 1), bot, http, before,
                        len(old_pages) / max(cases, 1))


def bench_submit(repeat: int = 3, workers: int = 1) -> SubmitBench:
    """Real runs against a fresh sandbox each pass, `fast` off and on alternately."""
    from bots.sandbox.data import build_dataset
    from bots.sandbox.server import SandboxProcess

    use_sandbox_credentials()
    today = date.today()
    result = SubmitBench(0, 0, [], [], [], [])
    for _ in range(repeat):
        for fast in (False, True):
            with tempfile.TemporaryDirectory() as tmp, \
                    SandboxProcess(data_dir=Path(tmp) / "sandbox", seed=DEMO_SEED,
                                   today=today) as sb:
                folder = Path(tmp)
                prepare_inputs(folder, build_dataset(seed=DEMO_SEED, today=today), today)
                settings = _settings(folder, sb.orders_url, sb.payments_url, workers)
                queue = Queue(settings.queue_url)
                run_intake(settings.intake, queue, RunFolder.create(settings.runs_dir))
                paid, every = asyncio.run(_submit_pass(settings, queue, today, fast))
            (result.after if fast else result.before).append(statistics.median(paid))
            (result.after_all if fast else result.before_all).append(statistics.mean(every))
            result.cases, result.paid = len(every), len(paid)
    return result


def _settings(folder: Path, orders_url: str, payments_url: str, workers: int) -> Settings:
    return load_settings(None, runs_dir=str(folder / "runs"), processing__workers=workers,
                         browser__trace_failures=False,
                         **demo_overrides(folder, orders_url, payments_url))


async def _submit_pass(settings: Settings, queue: Queue, today: date, fast: bool
                       ) -> tuple[list[float], list[float]]:
    """Seconds of each case (from the previous case's end), the paying ones apart."""
    run = RunFolder.create(settings.runs_dir)
    ends: list[tuple[float, str]] = []
    loop = asyncio.get_running_loop()
    processor = Processor(settings, queue, load_policy(settings.policy), run,
                          signals=load_signals(settings.signals) if settings.signals else None,
                          today=today, on_case=lambda c, o: ends.append((loop.time(), o)))
    async with BotSession(settings) as session:
        session.fast = fast
        started = loop.time()
        await processor.process(session)
    run.close()
    times: list[float] = []
    paid: list[float] = []
    last = started
    for at, outcome in ends:
        times.append(at - last)
        if outcome in ("refunded", "partial"):
            paid.append(at - last)
        last = at
    return paid, times


async def _bot_pass(settings: Settings, queue: Queue, today: date, fast: bool = True
                    ) -> tuple[list[str], float, int]:
    run = RunFolder.create(settings.runs_dir)
    processor = Processor(settings, queue, load_policy(settings.policy), run,
                          signals=load_signals(settings.signals) if settings.signals else None,
                          today=today, dry_run=True)
    async with BotSession(settings) as session:
        session.fast = fast
        session.page_log = []
        stats = await processor.process(session)
    run.close()
    login_pages = {urlsplit(u).path for u in session.page_log} & {"/login"}
    pages = [u for u in session.page_log if urlsplit(u).path not in login_pages]
    return pages, stats.seconds, stats.processed


def _http_pass(settings: Settings, pages: list[str]) -> float:
    """Fetch the same pages with plain HTTP, each app with its own logged-in client."""
    clients = {
        _origin(settings.orders.url): _login(settings.orders.url, settings.orders.username,
                                             secret(settings.orders.password_secret)),
        _origin(settings.payments.url): _login(settings.payments.url, settings.payments.username,
                                               secret(settings.payments.password_secret)),
    }
    started = time.perf_counter()
    for url in pages:
        response = clients[_origin(url)].get(url)
        if response.status_code >= 500 or urlsplit(str(response.url)).path == "/login":
            raise RuntimeError(f"replay of {url} failed: {response.status_code}")
    elapsed = time.perf_counter() - started
    for client in clients.values():
        client.close()
    return elapsed


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _login(base: str, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=base, follow_redirects=True, timeout=30)
    page = client.get("/login").text
    match = CSRF.search(page)
    token = (match.group(1) or match.group(2)) if match else ""
    client.post("/login", data={"username": username, "password": password,
                                "csrf_token": token}).raise_for_status()
    return client
