"""`refund-bots bench queue`: intake *into the queue*, and reading it back, at volume.

Generates N mixed contacts across every channel (the same corpus as `bench intake`), then:

1. reads them (parse + extract) and stores them in one process, timed apart (the floor
   set by the queue, without triage);
2. reads and stores them at once, as intake does, with the files read in this process
   and then by reader processes (`bots.intake.parallel`), in turn, `repeat` times: the
   issue's "into the queue" figure, without triage;
3. runs the intake command's own path (`run_intake`: parse, extract, language and
   priority, store) into a fresh queue, `repeat` times: medians of wall and CPU seconds;
4. runs intake again with nothing new (which must not read every stored case back) and
   times a page of `cases list` on the full queue.

SQLite by default; `new_queue_url` gives a fresh PostgreSQL database per pass.
"""

from __future__ import annotations

import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from bots import collector
from bots.config import IntakeSettings
from bots.intake.parallel import default_readers, read_parts
from bots.intake.sources import SourcePart, source_parts
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
    readers: int = 1
    # read and stored at once, (wall, this process's CPU) per pass: files read here, and
    # by `readers` reader processes (at least one, even on one CPU: to compare)
    streamed_here: list[tuple[float, float]] = field(default_factory=list)
    streamed_readers: list[tuple[float, float]] = field(default_factory=list)

    @property
    def into_queue_seconds(self) -> float:
        """Parse + store in one process: what the queue costs on top of reading."""
        return self.parse_seconds + self.store_seconds

    def median(self, which: int = 0, passes: list[tuple[float, float]] | None = None
               ) -> float:
        """Median wall (0) or CPU (1) seconds of these passes (the intake command's)."""
        return statistics.median(p[which] for p in (self.intake if passes is None else passes))


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def _stream(queue: Queue, parts: list[SourcePart], readers: int) -> tuple[float, float]:
    """Read and store at once, batch by batch as intake does, with the same collector
    checkpoints (no triage): (wall, CPU)."""
    cpu, start = _cpu(), time.perf_counter()
    batch: list[RefundRequest] = []
    with closing(read_parts(parts, readers, from_bytes=0)) as items, collector.paused():
        for item in items:  # even a small corpus goes to the readers (from_bytes=0)
            if isinstance(item, RefundRequest):
                batch.append(item)
            if len(batch) >= queue.insert_batch:
                queue.store_requests(batch, "bench-stream")
                batch = []
                collector.collect_young()
        queue.store_requests(batch, "bench-stream")
    return time.perf_counter() - start, _cpu() - cpu


def bench_queue(n: int, seed: int = 1, *, repeat: int = 2, readers: int | None = None,
                new_queue_url: Callable[[], str] | None = None,
                drop_queue_url: Callable[[str], None] | None = None,
                say: Callable[[str], None] = print) -> QueueBench:
    """Each pass into a fresh queue (`new_queue_url`, else a SQLite file); a queue done
    with is dropped (`drop_queue_url`), so that nothing of one pass (a PostgreSQL
    database that autovacuum then works through) runs while the next is measured."""
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

        def done(queue: Queue) -> None:
            queue.engine.dispose()
            if drop_queue_url is not None:
                drop_queue_url(queue.url)

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
        done(queue)
        result = QueueBench(queue.dialect, corpus.asks, len(reqs), parse, store, parse_cpu,
                            store_cpu, readers=readers or default_readers() or 1)
        parts = [part for cfg in sources for part in source_parts(cfg)]
        for round_ in range(1, repeat + 1):  # in turn: the machine's drift hits both alike
            for count, passes in ((0, result.streamed_here),
                                  (result.readers, result.streamed_readers)):
                queue = fresh()
                passes.append(_stream(queue, parts, count))
                done(queue)
                say(f"read and stored at once, {count or 'no'} reader process(es), pass {round_}: "
                    f"{passes[-1][0]:.2f} s ({passes[-1][1]:.2f} s CPU in this process)")

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
                done(last)
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
        done(last)
        return result


def describe(r: QueueBench) -> list[str]:
    return [
        f"{r.backend}: {r.requests:,} requests of {r.contacts:,} contacts: parse "
        f"{r.parse_seconds:.2f} s ({r.parse_cpu:.2f} s CPU) + store {r.store_seconds:.2f} s "
        f"({r.store_cpu:.2f} s CPU; {r.requests / r.store_seconds:,.0f}/s) = "
        f"{r.into_queue_seconds:.2f} s in one process",
        f"read and stored at once (files read here / by {r.readers} reader process(es)), "
        f"median of {len(r.streamed_here)}: {r.median(0, r.streamed_here):.2f} s / "
        f"{r.median(0, r.streamed_readers):.2f} s (ratio "
        f"{r.median(0, r.streamed_here) / r.median(0, r.streamed_readers):.2f}; CPU in this "
        f"process {r.median(1, r.streamed_here):.2f} s / {r.median(1, r.streamed_readers):.2f} s)",
        f"intake command (parse, language and priority, store), median of "
        f"{len(r.intake)}: {r.median():.2f} s ({r.median(1):.2f} s CPU)",
        f"repeat intake (nothing new): {r.repeat_seconds:.2f} s",
        f"cases list, one page of 50 of {r.cases:,} queued cases: median "
        f"{statistics.median(r.page_seconds) * 1000:.0f} ms",
    ]
