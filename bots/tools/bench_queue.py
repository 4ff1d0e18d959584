"""`refund-bots bench queue`: intake *into the queue*, and reading it back, at volume.

Generates N mixed contacts across every channel (the same corpus as `bench intake`), then:

1. reads them (parse + extract) and stores them in one process, timed apart (the floor
   set by the queue: the issue's "into the queue" figure, without triage);
2. runs the intake command's own path (`run_intake`: parse, extract, language and
   priority, store) into a fresh queue, `repeat` times: medians of wall and CPU seconds;
3. runs intake again with nothing new (which must not read every stored case back) and
   times a page of `cases list` on the full queue.

SQLite by default; `new_queue_url` gives a fresh PostgreSQL database per pass.
"""

from __future__ import annotations

import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bots.config import IntakeSettings
from bots.models import RefundRequest
from bots.queue import CaseFilter, Queue, safe_url
from bots.runs import RunFolder
from bots.tools.bench import generate, time_intake
from bots.work.pipeline import run_intake


@dataclass
class QueueBench:
    backend: str
    contacts: int
    requests: int
    parse_seconds: float
    store_seconds: float
    parse_cpu: float  # this process's CPU seconds: steadier than wall time on a busy machine
    store_cpu: float  # (a PostgreSQL server's own work is not in it)
    intake: list[tuple[float, float]] = field(default_factory=list)  # (wall, cpu) per pass
    repeat_seconds: float = 0.0
    page_seconds: list[float] = field(default_factory=list)
    cases: int = 0

    @property
    def into_queue_seconds(self) -> float:
        """Parse + store in one process: what the queue costs on top of reading."""
        return self.parse_seconds + self.store_seconds

    def median(self, which: int = 0) -> float:
        """Median wall (0) or CPU (1) seconds of the intake command's passes."""
        return statistics.median(p[which] for p in self.intake)


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def bench_queue(n: int, seed: int = 1, *, repeat: int = 2,
                new_queue_url: Callable[[], str] | None = None,
                say: Callable[[str], None] = print) -> QueueBench:
    with tempfile.TemporaryDirectory(prefix="refund-bots-bench-queue-") as tmp:
        folder = Path(tmp)
        corpus = generate(folder / "corpus", n, seed)
        sources = [cfg for group in corpus.sources.values() for cfg in group]
        serial = 0

        def fresh() -> Queue:
            nonlocal serial
            serial += 1
            url = new_queue_url() if new_queue_url else \
                f"sqlite:///{folder / f'bench-queue-{serial}.sqlite'}"
            return Queue(url)

        cpu, start = _cpu(), time.perf_counter()
        parsed = time_intake(corpus)
        parse, parse_cpu = time.perf_counter() - start, _cpu() - cpu
        reqs = [i for i in parsed.items if isinstance(i, RefundRequest)]
        queue = fresh()
        say(f"{len(reqs):,} requests from {corpus.asks:,} contacts parsed in {parse:.2f} s; "
            f"storing into {safe_url(queue.url)}")
        cpu, start = _cpu(), time.perf_counter()
        queue.add_requests(reqs, "bench-1")
        store, store_cpu = time.perf_counter() - start, _cpu() - cpu
        queue.engine.dispose()
        result = QueueBench(queue.dialect, corpus.asks, len(reqs), parse, store, parse_cpu,
                            store_cpu)

        last: Queue | None = None
        for round_ in range(1, repeat + 1):
            queue = fresh()
            run = RunFolder.create(folder / "runs")
            cpu, start = _cpu(), time.perf_counter()
            try:
                stats = run_intake(IntakeSettings(sources=sources), queue, run)
            finally:
                run.close()
            wall, cpu = time.perf_counter() - start, _cpu() - cpu
            result.intake.append((wall, cpu))
            say(f"pass {round_}: {stats.new_requests:,} requests in {wall:.2f} s "
                f"({cpu:.2f} s CPU)")
            if last is not None:
                last.engine.dispose()
            last = queue

        assert last is not None
        run = RunFolder.create(folder / "runs")
        start = time.perf_counter()
        try:
            run_intake(IntakeSettings(sources=sources), last, run)
        finally:
            run.close()
        result.repeat_seconds = time.perf_counter() - start
        for _ in range(5):
            start = time.perf_counter()
            _, result.cases = last.cases_page(CaseFilter(states=["queued"]), limit=50)
            result.page_seconds.append(time.perf_counter() - start)
        last.engine.dispose()
        return result


def describe(r: QueueBench) -> list[str]:
    return [
        f"{r.backend}: {r.requests:,} requests of {r.contacts:,} contacts: parse "
        f"{r.parse_seconds:.2f} s ({r.parse_cpu:.2f} s CPU) + store {r.store_seconds:.2f} s "
        f"({r.store_cpu:.2f} s CPU; {r.requests / r.store_seconds:,.0f}/s) = "
        f"{r.into_queue_seconds:.2f} s in one process",
        f"intake command (parse, language and priority, store), median of "
        f"{len(r.intake)}: {r.median():.2f} s ({r.median(1):.2f} s CPU)",
        f"repeat intake (nothing new): {r.repeat_seconds:.2f} s",
        f"cases list, one page of 50 of {r.cases:,} queued cases: median "
        f"{statistics.median(r.page_seconds) * 1000:.0f} ms",
    ]
