"""Reading big file sources in several processes, while the queue stores what is read.

Intake is CPU work in Python (parsing, extraction, language and priority), which one
process does on one core. A backfill of tens of thousands of contacts spread over
several files is read faster by a pool of worker processes, one file at a time each,
while the main process stores the requests read so far: reading and storing overlap, and
every core works. Each worker returns a file's items in full (requests triaged, bad input
quarantined), in the order the files are listed, so the queue sees exactly what a
sequential read would have given it, in the same order.

Workers are started with `spawn` (a fresh interpreter: nothing of the parent's open
database connections, browser or threads is inherited) and only when the files to read
are big enough to repay their start (`AUTO_MIN_BYTES`): each loads the language models
once (seconds, and about 220 MB), which a daily intake of a few files does not need.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor

from sqlalchemy import Engine

from bots.intake.sources import SourcePart, read_part
from bots.intake.triage import triage_new
from bots.models import IntakeItem, RefundRequest
from bots.queue.engine import make_engine
from bots.queue.intake import known_sources

AUTO_MIN_BYTES = 16_000_000  # below this, starting workers costs more than it saves
AHEAD = 2  # files read ahead per worker: bounds what waits in memory to be stored


def auto_workers(parts: Sequence[SourcePart], configured: int | None) -> int:
    """How many worker processes to read `parts` with (0: read them in this process).

    `configured` is the `intake.workers` setting: a number, or None for automatic (as
    many as there are CPUs, up to 4, when the files add up to AUTO_MIN_BYTES or more).
    """
    files = [p for p in parts if p.splittable]
    if configured is not None:
        return min(configured, len(files)) if len(files) > 1 else 0
    if len(files) < 2 or sum(p.size for p in files) < AUTO_MIN_BYTES:
        return 0
    return min(os.cpu_count() or 1, 4, len(files))


_engines: dict[str, Engine] = {}  # a worker's own connection to the queue, for reading


def read_triaged(part: SourcePart, queue_url: str | None = None) -> list[IntakeItem]:
    """One part's items, its new requests triaged: what a worker sends back.

    With `queue_url`, requests the queue already holds are not triaged (they will not be
    stored again): re-reading a file that grows costs its parsing only.
    """
    items = list(read_part(part))
    reqs = [i for i in items if isinstance(i, RefundRequest)]
    known: set[tuple[str, str]] = set()
    if queue_url is not None and reqs:
        if queue_url not in _engines:
            _engines[queue_url] = make_engine(queue_url)
        known = known_sources(_engines[queue_url], reqs)
    triaged = iter(triage_new(reqs, known))
    return [next(triaged) if isinstance(i, RefundRequest) else i for i in items]


def read_in_parallel(parts: Sequence[SourcePart], workers: int, queue_url: str | None = None
                     ) -> Generator[list[IntakeItem], None, None]:
    """Each part's items (new requests triaged), in the order of `parts`, read by `workers`
    processes.

    Parts that cannot be split off (a mailbox, a refused file) are read here, in turn.
    At most AHEAD x workers files are read ahead of the one being stored.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: list[tuple[SourcePart, Future[list[IntakeItem]] | None]] = []
        queue = iter(parts)

        def top_up() -> None:
            while sum(f is not None for _, f in pending) < workers * AHEAD:
                part = next(queue, None)
                if part is None:
                    return
                pending.append((part, pool.submit(read_triaged, part, queue_url)
                                if part.splittable else None))

        top_up()
        while pending:
            part, future = pending.pop(0)
            items = future.result() if future is not None else read_triaged(part, queue_url)
            top_up()
            yield items
