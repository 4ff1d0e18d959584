"""`bench scale`: throughput of 1, 2, 4... runner processes on one queue, and CPU per case.

A BPO adds runners when one is not enough; this says what a second and a fourth buy on
this machine. Each measurement starts a fresh sandbox whose pages answer after a realistic
latency (default 150 ms, a legacy back-office over a WAN), fills a fresh queue with a
request for every order of the sandbox (a few hundred cases, each asking a small amount:
refunds, partial refunds, rejections and escalations, as a day's mix), then starts N
`refund-bots process --workers W` at once. After a warm-up (browsers started, logged in)
it counts the cases finished in a fixed window and the CPU time spent meanwhile by the
runner processes and everything they started (Playwright's driver, Chromium), read from
/proc. The configurations are measured in turns, `--repeat` times, so a busy neighbour
slows them all alike; the table shows medians.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from random import Random
from typing import TYPE_CHECKING

import yaml

from bots.config import load_settings
from bots.queue import Queue
from bots.runs import RunFolder
from bots.tools.chaos_data import SmallRefund, write_portal_forms
from bots.tools.demo import DEMO_SEED
from bots.work.pipeline import run_intake

if TYPE_CHECKING:  # imported where used: the sandbox is only needed to measure
    from bots.sandbox.data import Dataset

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ScaleConfig:
    runners: int
    workers: int = 1


@dataclass
class Sample:
    cases: int  # finished in the window
    seconds: float  # the window
    cpu_seconds: float  # runners and their browsers, in the window
    server_cpu_seconds: float  # the sandbox apps, in the window
    left: int = 0  # cases still open at the end (0: the queue ran dry, the figure is low)

    @property
    def per_minute(self) -> float:
        return 60 * self.cases / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_case(self) -> float:
        return self.cpu_seconds / self.cases if self.cases else float("nan")


@dataclass
class ScaleResult:
    config: ScaleConfig
    samples: list[Sample] = field(default_factory=list)

    @property
    def per_minute(self) -> float:
        return statistics.median(s.per_minute for s in self.samples)

    @property
    def cpu_per_case(self) -> float:
        return statistics.median(s.cpu_per_case for s in self.samples)

    @property
    def server_cpu_per_case(self) -> float:
        return statistics.median(s.server_cpu_seconds / s.cases if s.cases else float("nan")
                                 for s in self.samples)


def bench_scale(folder: Path, configs: Sequence[ScaleConfig], *, latency_ms: int = 150,
                warmup: float = 20.0, seconds: float = 60.0, repeat: int = 3,
                new_queue_url: Callable[[], str] | None = None,
                say: Callable[[str], None] = print) -> list[ScaleResult]:
    results = [ScaleResult(c) for c in configs]
    for rep in range(repeat):
        for result in results:
            where = folder / f"r{rep + 1}-{result.config.runners}x{result.config.workers}"
            sample = measure(where, result.config, latency_ms=latency_ms, warmup=warmup,
                             seconds=seconds,
                             queue_url=new_queue_url() if new_queue_url else None)
            result.samples.append(sample)
            say(f"pass {rep + 1}/{repeat}, {result.config.runners} runner(s) x "
                f"{result.config.workers} worker(s): {sample.cases} cases in "
                f"{sample.seconds:.0f} s = {sample.per_minute:.1f}/min, "
                f"{sample.cpu_per_case:.2f} CPU s per case"
                + ("" if sample.left else " (the queue ran dry: shorten --seconds)"))
    return results


def measure(folder: Path, config: ScaleConfig, *, latency_ms: int, warmup: float,
            seconds: float, queue_url: str | None) -> Sample:
    """One window: fresh sandbox and queue, N runners started at once, cases counted."""
    from bots.sandbox.data import build_dataset
    from bots.sandbox.faults import FaultConfig
    from bots.sandbox.server import SandboxProcess

    folder.mkdir(parents=True, exist_ok=True)
    today = date.today()
    with SandboxProcess(data_dir=folder / "sandbox", seed=DEMO_SEED, today=today,
                        faults=FaultConfig(latency_ms=latency_ms)) as sb:
        ds = build_dataset(seed=DEMO_SEED, today=today)
        write_portal_forms(folder / "forms", every_order(ds), datetime.now(UTC), prefix="scale")
        settings = load_settings(
            None, queue_url=queue_url or f"sqlite:///{folder / 'queue.sqlite'}",
            runs_dir=str(folder / "runs"), signals=None, orders__url=sb.orders_url,
            payments__url=sb.payments_url, notify__outbox_dir=str(folder / "outbox"),
            browser__trace_failures=False, processing__workers=config.workers,
            intake__sources=[{"kind": "portal", "path": str(folder / "forms")}])
        queue = Queue(settings.queue_url)
        run_intake(settings.intake, queue, RunFolder.create(settings.runs_dir))
        total = len(queue.cases())
        path = folder / "settings.yaml"
        path.write_text(yaml.safe_dump(settings.model_dump(mode="json")), encoding="utf-8")
        with _runners(path, config, folder / "logs") as procs, \
                CpuMeter([p.pid for p in procs], sb.process.pid if sb.process else None) as cpu:
            time.sleep(warmup)  # a benchmark window, not a test waiting for a process
            done0, cpu0, server0, t0 = total - queue.pending_count(), *cpu.read(), \
                time.monotonic()
            time.sleep(seconds)
            left = queue.pending_count()
            done1, cpu1, server1, t1 = total - left, *cpu.read(), time.monotonic()
    return Sample(done1 - done0, t1 - t0, cpu1 - cpu0, server1 - server0, left)


def every_order(ds: Dataset) -> list[SmallRefund]:
    """A request for every order of the sandbox, each asking a fifth of it (a day's mix)."""
    rng = Random(DEMO_SEED)
    out = []
    for o in ds.orders:
        c = ds.customer(o.customer_id)
        amount = max(Decimal("1.00"), (o.total / 5).quantize(Decimal("0.01")))
        out.append(SmallRefund("portal", o.order_number, c.email, c.name,
                               rng.choice(("Please refund part of my order.",
                                           "The item arrived damaged, please refund.")),
                               amount=f"{amount:.2f}", currency=o.currency))
    return out


@contextmanager
def _runners(config_path: Path, config: ScaleConfig, logs: Path
             ) -> Iterator[list[subprocess.Popen[bytes]]]:
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REFUND_BOTS_CRASH_", "REFUND_BOTS_STALL_"))}
    try:
        for i in range(config.runners):
            with (logs / f"runner-{i + 1}.log").open("wb") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "bots", "process", "--config", str(config_path),
                     "--workers", str(config.workers)],
                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        yield procs
    finally:
        for p in procs:  # finish the case in hand, claim no more; then make sure
            with suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            with suppress(subprocess.TimeoutExpired):
                p.wait(timeout=120)
            with suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)


class CpuMeter:
    """CPU seconds of processes and all their descendants, from /proc.

    Descendants by parent links, not by session: Playwright starts Chromium in a session
    of its own. Sampled every 0.2 s per process, so a process that ends loses at most its
    last 0.2 s; `read()` returns (runner trees, server process) totals so far.
    """

    def __init__(self, roots: list[int], server_pid: int | None) -> None:
        self.roots, self.server_pid = set(roots), server_pid
        self._seen: dict[tuple[int, str], float] = {}
        self._server = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)

    def __enter__(self) -> CpuMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def read(self) -> tuple[float, float]:
        self._sample()
        with self._lock:
            return sum(self._seen.values()), self._server

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def _sample(self) -> None:
        procs: dict[int, tuple[int, str, float]] = {}  # pid -> (parent, start, cpu seconds)
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with suppress(OSError, IndexError, ValueError):
                    f = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
                    procs[int(entry.name)] = (int(f[1]), f[19],
                                              (int(f[11]) + int(f[12])) / CLOCK_TICKS)
        with self._lock:
            for pid, (_, start, cpu) in procs.items():
                if pid == self.server_pid:
                    self._server = cpu
                elif self._descends(pid, procs):
                    self._seen[(pid, start)] = cpu

    def _descends(self, pid: int, procs: dict[int, tuple[int, str, float]]) -> bool:
        for _ in range(64):  # a process tree is never this deep; a cycle cannot hang us
            if pid in self.roots:
                return True
            if pid not in procs or pid <= 1:
                return False
            pid = procs[pid][0]
        return False


def table_rows(results: list[ScaleResult]) -> list[tuple[str, ...]]:
    """runners, workers, cases/min (median), speed-up, CPU s/case, sandbox CPU s/case, passes."""
    base = next((r.per_minute for r in results if r.config.runners == 1
                 and r.config.workers == 1), results[0].per_minute if results else 0.0)
    return [(str(r.config.runners), str(r.config.workers), f"{r.per_minute:.1f}",
             f"{r.per_minute / base:.2f}x" if base else "-", f"{r.cpu_per_case:.2f}",
             f"{r.server_cpu_per_case:.3f}",
             ", ".join(f"{s.per_minute:.1f}" for s in r.samples)) for r in results]
