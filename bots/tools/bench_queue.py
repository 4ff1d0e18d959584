"""`refund-bots bench queue`: intake *into the queue*, and reading it back, at volume.

Generates N mixed contacts across every channel (the same corpus as `bench intake`),
reads them (parse + extract, timed apart), stores them in a fresh queue in intake's
batches, then stores them again (a repeat intake with nothing new, which must not cost a
read of every stored case), then times a page of `cases list` on the full queue. SQLite by
default; `--queue-url` points it at a PostgreSQL database to time that backend.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bots.models import RefundRequest
from bots.queue import CaseFilter, Queue, safe_url
from bots.tools.bench import generate, time_intake


@dataclass(frozen=True)
class QueueBench:
    backend: str
    contacts: int
    requests: int
    parse_seconds: float
    store_seconds: float
    repeat_seconds: float
    page_seconds: list[float]
    cases: int

    @property
    def into_queue_seconds(self) -> float:
        """Parse + store: what intake of N contacts into the queue costs."""
        return self.parse_seconds + self.store_seconds


def bench_queue(n: int, seed: int = 1, queue_url: str | None = None,
                say: Callable[[str], None] = print) -> QueueBench:
    with tempfile.TemporaryDirectory(prefix="refund-bots-bench-queue-") as tmp:
        folder = Path(tmp)
        corpus = generate(folder, n, seed)
        start = time.perf_counter()
        parsed = time_intake(corpus)
        parse = time.perf_counter() - start
        reqs = [i for i in parsed.items if isinstance(i, RefundRequest)]
        url = queue_url or f"sqlite:///{folder / 'bench-queue.sqlite'}"
        queue = Queue(url)
        say(f"{len(reqs):,} requests from {corpus.asks:,} contacts parsed in {parse:.2f} s; "
            f"storing into {safe_url(url)}")
        start = time.perf_counter()
        queue.add_requests(reqs, "bench-1")
        store = time.perf_counter() - start
        start = time.perf_counter()
        queue.add_requests(reqs, "bench-2")
        repeat = time.perf_counter() - start
        pages = []
        for _ in range(5):
            start = time.perf_counter()
            _, total = queue.cases_page(CaseFilter(states=["queued"]), limit=50)
            pages.append(time.perf_counter() - start)
        queue.engine.dispose()
        return QueueBench(queue.dialect, corpus.asks, len(reqs), parse, store, repeat, pages,
                          total)


def describe(r: QueueBench) -> list[str]:
    return [
        f"{r.backend}: {r.requests:,} requests stored in {r.store_seconds:.2f} s "
        f"({r.requests / r.store_seconds:,.0f}/s); parse + store of {r.contacts:,} contacts "
        f"{r.into_queue_seconds:.2f} s",
        f"repeat intake (nothing new): {r.repeat_seconds:.2f} s",
        f"cases list, one page of 50 of {r.cases:,} queued cases: median "
        f"{statistics.median(r.page_seconds) * 1000:.0f} ms",
    ]
