"""`bench process`: the bot's seconds per case, side by side with raw HTTP and older code.

Dry run: the bot runs the demo cases in dry-run mode (so every pass does the same work
and nothing is paid), recording every page it loads; then an httpx client, logged in to
both apps, fetches that recorded list. The ratio says what the browser costs over the
server's own time, on the same machine in the same minute, which is what survives a
noisy shared machine. `--submit`: real runs (refund form, confirmation, order note) on a
fresh sandbox per pass, timed per paid case.

Each pass runs in a fresh process. With `against`, a git revision's own code (its `bots`,
`config` and `selectors`, extracted with `git archive`) runs the same passes alternately
with this code: "before" is that revision as it was, browser choice included.

Seconds per case are counted from the end of the first login to the end of the last case
(each case from the end of the one before): starting the browser and logging in happen
once per run, and are reported apart.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bots.config import Settings, load_settings, secret
from bots.queue import Queue
from bots.runs import RunFolder
from bots.tools.demo import DEMO_SEED, demo_overrides, prepare_inputs, use_sandbox_credentials
from bots.work.pipeline import run_intake

CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')
PAID = ("refunded", "partial")
ROOT = Path(__file__).resolve().parents[2]

# One pass in a fresh process, on whichever code PYTHONPATH names (this code or an older
# revision's): only APIs both have. Prints one JSON line: times (event loop clock) and
# the pages loaded.
_CHILD = """
import asyncio, json, sys
from datetime import date
from pathlib import Path
from bots.decide.policy import load_policy
from bots.decide.signals import load_signals
from bots.legacy.session import BotSession
from bots.queue import Queue
from bots.runs import RunFolder
from bots.tools.bench_process import _settings
from bots.work.processing import Processor

folder, orders_url, payments_url, today, workers, dry, trace = sys.argv[1:]

async def main():
    settings = _settings(Path(folder), orders_url, payments_url, int(workers))
    settings.browser.trace_failures = trace == "1"
    queue, run = Queue(settings.queue_url), RunFolder.create(settings.runs_dir)
    loop = asyncio.get_running_loop()
    ends, logged = [], []
    processor = Processor(settings, queue, load_policy(settings.policy), run,
                          signals=load_signals(settings.signals) if settings.signals else None,
                          today=date.fromisoformat(today), dry_run=dry == "1",
                          on_case=lambda case, outcome: ends.append((loop.time(), outcome)))
    async with BotSession(settings) as session:
        session.page_log = []
        login = session.login
        async def timed_login(worker):
            await login(worker)
            logged.append(loop.time())
        session.login = timed_login
        started = loop.time()
        await processor.process(session)
    run.close()
    print(json.dumps({"started": started, "logged_in": min(logged), "ends": ends,
                      "pages": session.page_log}))

asyncio.run(main())
"""


@dataclass
class Side:
    """One code's passes: seconds per case (dry) or per paid case (submit), one per pass."""

    label: str
    per_case: list[float] = field(default_factory=list)
    every_case: list[float] = field(default_factory=list)  # submit: over all cases
    start: list[float] = field(default_factory=list)  # browser start and logins, per pass
    pages: list[str] = field(default_factory=list)  # the last pass's page loads
    http_per_case: list[float] = field(default_factory=list)  # raw HTTP fetching them (dry)
    cases: int = 0
    paid: int = 0

    @property
    def pages_per_case(self) -> float:
        return len(self.pages) / max(self.cases, 1)


@dataclass
class ProcessBench:
    submit: bool
    sides: list[Side]  # [before, after] with `against`, else [after]
    load: list[str] = field(default_factory=list)  # load average before and after

    def ratio(self, side: Side) -> float:
        return statistics.median(side.per_case) / statistics.median(side.http_per_case)


def bench_process(repeat: int = 3, workers: int = 1, *, submit: bool = False,
                  against: str | None = None, trace: bool = False) -> ProcessBench:
    """Passes of the demo cases, alternately for each side, each in a fresh process."""
    use_sandbox_credentials()
    result = ProcessBench(submit, [], load=[_load()])
    with _sides(against) as sides:
        result.sides = [Side(label) for label, _ in sides]
        paths = [path for _, path in sides]
        if submit:
            for _ in range(repeat):
                for side, path in zip(result.sides, paths, strict=True):
                    with _pass_sandbox() as fresh:
                        _submit_pass(side, path, fresh, workers, trace)
        else:
            with _pass_sandbox() as shared:
                for _ in range(repeat):
                    for side, path in zip(result.sides, paths, strict=True):
                        _dry_pass(side, path, shared, workers, trace)
                        side.http_per_case.append(_http_pass(shared.settings, side.pages)
                                                  / side.cases)
    result.load.append(_load())
    return result


def describe(r: ProcessBench, repeat: int, workers: int) -> list[str]:
    """The figures of `bench process`, one line per side."""
    med = statistics.median
    first = r.sides[-1]
    what = (f"{first.cases} cases ({first.paid} paid: refund form + confirmation + note)"
            if r.submit else f"{first.cases} cases, dry run")
    lines = [f"{what}, {repeat} pass(es) per side, alternately, {workers} worker(s); "
             f"load average {r.load[0]} before, {r.load[-1]} after"]
    for side in r.sides:
        start = f"start (browser + logins) {med(side.start):.2f} s"
        if r.submit:
            lines.append(f"{side.label}: median {med(side.per_case):.3f} s per paid case "
                         f"{[round(x, 3) for x in side.per_case]}; every case "
                         f"{med(side.every_case):.3f} s; {start}")
        else:
            lines.append(f"{side.label}: median {med(side.per_case):.3f} s per case "
                         f"{[round(x, 3) for x in side.per_case]}, {side.pages_per_case:.1f} "
                         f"pages per case; raw HTTP fetching them "
                         f"{med(side.http_per_case) * 1000:.1f} ms per case "
                         f"{[round(x * 1000, 1) for x in side.http_per_case]}; "
                         f"ratio bot / raw HTTP {r.ratio(side):.1f}x; {start}")
    return lines


@dataclass
class _Sandbox:
    settings: Settings
    folder: Path
    today: date


@contextmanager
def _pass_sandbox() -> Iterator[_Sandbox]:
    """A demo sandbox with the demo's requests taken in, and settings pointing at it."""
    from bots.sandbox.data import build_dataset
    from bots.sandbox.server import SandboxProcess

    today = date.today()
    with tempfile.TemporaryDirectory() as tmp, \
            SandboxProcess(data_dir=Path(tmp) / "sandbox", seed=DEMO_SEED, today=today) as sb:
        folder = Path(tmp)
        prepare_inputs(folder, build_dataset(seed=DEMO_SEED, today=today), today)
        settings = _settings(folder, sb.orders_url, sb.payments_url, 1)
        run_intake(settings.intake, Queue(settings.queue_url), RunFolder.create(settings.runs_dir))
        yield _Sandbox(settings, folder, today)


@contextmanager
def _sides(against: str | None) -> Iterator[list[tuple[str, Path]]]:
    """(label, folder to run from) for each side; an older revision extracted to a temp dir."""
    if against is None:
        yield [("this code", ROOT)]
        return
    with tempfile.TemporaryDirectory(prefix="bench-before-") as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", against, "bots", "config",
                                  "selectors"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield [(f"before ({against})", Path(tmp)), ("after (this code)", ROOT)]


def _settings(folder: Path, orders_url: str, payments_url: str, workers: int) -> Settings:
    return load_settings(None, runs_dir=str(folder / "runs"), processing__workers=workers,
                         browser__trace_failures=False,
                         **demo_overrides(folder, orders_url, payments_url))


def _child(path: Path, sb: _Sandbox, workers: int, dry: bool, trace: bool) -> dict[str, object]:
    """One pass of `path`'s code in a fresh process (run from `path`: its config, selectors)."""
    s = sb.settings
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(sb.folder), s.orders.url, s.payments.url,
         sb.today.isoformat(), str(workers), "1" if dry else "0", "1" if trace else "0"],
        capture_output=True, text=True, cwd=path, env={**os.environ, "PYTHONPATH": str(path)})
    if out.returncode != 0:
        raise RuntimeError(f"bench pass failed ({path}):\n{out.stderr[-3000:]}")
    got: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return got


def _case_seconds(got: dict[str, object]) -> list[tuple[float, str]]:
    """Each case's seconds from the end of the one before (the first: from the login)."""
    last = float(got["logged_in"])  # type: ignore[arg-type]
    out: list[tuple[float, str]] = []
    for at, outcome in got["ends"]:  # type: ignore[attr-defined]
        out.append((at - last, outcome))
        last = at
    return out


def _dry_pass(side: Side, path: Path, sb: _Sandbox, workers: int, trace: bool) -> None:
    got = _child(path, sb, workers, True, trace)
    cases = _case_seconds(got)
    side.cases = len(cases)
    side.per_case.append(sum(s for s, _ in cases) / len(cases))
    side.start.append(float(got["logged_in"]) - float(got["started"]))  # type: ignore[arg-type]
    side.pages = [u for u in got["pages"] if urlsplit(u).path != "/login"]  # type: ignore[attr-defined]


def _submit_pass(side: Side, path: Path, sb: _Sandbox, workers: int, trace: bool) -> None:
    got = _child(path, sb, workers, False, trace)
    cases = _case_seconds(got)
    paid = [s for s, outcome in cases if outcome in PAID]
    side.cases, side.paid = len(cases), len(paid)
    side.per_case.append(statistics.median(paid))
    side.every_case.append(statistics.mean(s for s, _ in cases))
    side.start.append(float(got["logged_in"]) - float(got["started"]))  # type: ignore[arg-type]


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


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
