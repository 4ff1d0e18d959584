"""Files read by reader processes: the same items, in the same order, or a failed run."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing import forkserver
from pathlib import Path

import pytest
from sqlalchemy import select

from bots.config import IntakeSettings
from bots.intake import parallel
from bots.intake.parallel import ReaderDied, read_parts
from bots.intake.sources import (
    ExportSourceConfig,
    SourceConfig,
    SourcePart,
    read_part,
    source_parts,
)
from bots.queue import Queue
from bots.queue.schema import Case, RequestRow
from bots.runs import RunFolder
from bots.tools.bench import generate
from bots.work import pipeline


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return generate(tmp_path_factory.mktemp("corpus"), 3000, 7)


def _sources(corpus, tmp: Path) -> list:  # noqa: ANN001
    """Every channel's sources, with a missing one and a mail folder in between."""
    sources = [cfg for group in corpus.sources.values() for cfg in group]
    sources.insert(2, ExportSourceConfig(kind="chat", path=tmp / "nowhere"))
    return sources


def test_readers_yield_exactly_what_one_process_reads(corpus, tmp_path: Path) -> None:  # noqa: ANN001
    parts = [part for cfg in _sources(corpus, tmp_path) for part in source_parts(cfg)]
    assert sum(part.file is not None for part in parts) >= 6  # work for every reader
    assert any(part.problem is not None for part in parts)
    assert any(part.file is None and part.problem is None for part in parts)  # the mail
    here = [item for part in parts for item in read_part(part)]
    assert len(here) > 3000
    for readers in (1, 2, 3):
        assert list(read_parts(parts, readers, from_bytes=0)) == here


class _SlowReaders:
    """Readers that never finish before they are asked for their answer (a reader
    working on a huge file): the intake process reads every file not handed out."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.handed: list[SourcePart] = []
        _SlowReaders.last = self

    def submit(self, fn: Callable[..., str], part: SourcePart, spool: str) -> Future[str]:
        self.handed.append(part)
        return _Unfinished(lambda: fn(part, spool))

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


class _Unfinished(Future):  # type: ignore[type-arg]
    def __init__(self, work: Callable[[], str]) -> None:
        super().__init__()
        self._work = work

    def done(self) -> bool:
        return False

    def result(self, timeout: float | None = None) -> str:
        return self._work()


def test_files_read_here_while_the_readers_are_busy_keep_their_place(
        corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(parallel, "ProcessPoolExecutor", _SlowReaders)
    parts = [part for cfg in _sources(corpus, tmp_path) for part in source_parts(cfg)]
    here = [item for part in parts for item in read_part(part)]
    assert list(read_parts(parts, 2, from_bytes=0)) == here
    files = [part for part in parts if parallel._for_reader(part)]
    handed = _SlowReaders.last.handed
    assert handed[:2 * parallel.AHEAD_PER_READER] == files[1:1 + 2 * parallel.AHEAD_PER_READER]
    read_here = [part for part in files[1:] if part not in handed]
    assert len(read_here) > len(files) // 2  # the rest were read here, but a mail folder
    assert all(part.file is not None for part in read_here)  # (whose size is not known)


def test_only_small_files_are_read_here_while_a_reader_is_waited_for(
        corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """A large file read by the intake process would hold up storing: it waits for its
    reader instead, and the large files go to readers in their turn."""
    monkeypatch.setattr(parallel, "ProcessPoolExecutor", _SlowReaders)
    parts = [part for cfg in _sources(corpus, tmp_path) for part in source_parts(cfg)]
    files = [part for part in parts if parallel._for_reader(part)]
    sizes = [parallel._size([part]) for part in files]
    limit = sorted(sizes)[len(sizes) // 2]
    monkeypatch.setattr(parallel, "HELP_MAX_BYTES", limit)
    here = [item for part in parts for item in read_part(part)]
    assert list(read_parts(parts, 2, from_bytes=0)) == here
    handed = _SlowReaders.last.handed
    read_here = [i for i in range(1, len(files)) if files[i] not in handed]
    assert read_here and all(0 < sizes[i] <= limit for i in read_here)
    assert any(sizes[i] > limit for i in range(1, len(files)))
    assert all(files[i] in handed for i in range(1, len(files)) if not 0 < sizes[i] <= limit)


def _children_of(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.append(int(entry.name))
    return found


def _readers() -> list[int]:
    """The reader processes (children of the fork server), once they have started."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        server = forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
        if server and (found := _children_of(server)):
            return found
        time.sleep(0.05)
    raise AssertionError("no reader process started in 60 s")


def test_a_failed_start_is_raised_where_the_items_are_read() -> None:
    def broken() -> None:
        raise BrokenPipeError("the fork server is gone")

    starting = parallel._Starting(broken)
    with pytest.raises(BrokenPipeError, match="fork server"):
        starting.join()
    starting.join()  # raised once
    parallel._Starting(broken).join(check=False)  # while stopping: not raised again


def _sheets(tmp_path: Path, files: int, rows: int) -> list:
    folder = tmp_path / "sheets"
    folder.mkdir()
    for f in range(files):
        lines = ["Order #,E-mail,Amount,Reason"] + [
            f"ORD-{f}{r:05d},c{r}@example.org,12.50 EUR,broken mug {r}"
            for r in range(rows)]
        (folder / f"sheet-{f}.csv").write_text("\n".join(lines) + "\n")
    return source_parts(SourceConfig(kind="spreadsheet", path=folder))


def test_a_reader_that_dies_fails_the_read_and_is_never_a_short_file(tmp_path: Path) -> None:
    """A reader killed mid-file (out of memory, a kill by hand): the rows it was reading
    are not 'no rows'. The read fails naming a file, and nothing after it is yielded."""
    parts = _sheets(tmp_path, 6, 6000)
    items = read_parts(parts, 2, from_bytes=0)
    first = next(items)  # the first file is read here: the readers are on the next ones
    assert first.order_number == "ORD-000000"
    readers = _readers()
    for pid in readers:
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(ReaderDied, match=r"reader process ended without an answer .*sheet-"):
        for item in items:
            assert item.source_id  # the first file's rows may still come, then it fails


def test_stopping_early_stops_the_readers(tmp_path: Path) -> None:
    """Storing failed (the generator is closed): no reader goes on reading."""
    parts = _sheets(tmp_path, 6, 3000)
    items = read_parts(parts, 2, from_bytes=0)
    next(items)
    assert _readers()
    items.close()
    server = forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while _children_of(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _children_of(server) == []


def test_small_or_single_reads_start_no_reader(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting readers costs about half a second of CPU each: a small intake (most
    scheduled runs) reads in its own process, as does `readers: 0`."""
    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("a reader process was started")

    monkeypatch.setattr(parallel, "ProcessPoolExecutor", no_pool)
    parts = _sheets(tmp_path, 3, 20)
    here = [item for part in parts for item in read_part(part)]
    assert list(read_parts(parts, 4)) == here  # 3 small files: under PARALLEL_FROM_BYTES
    assert list(read_parts(parts, 0, from_bytes=0)) == here
    assert list(read_parts(parts[:1], 4, from_bytes=0)) == here[:20]  # one file
    with pytest.raises(AssertionError, match="started"):
        list(read_parts(parts, 1, from_bytes=0))


def _stored(queue: Queue) -> tuple[list[tuple], list[tuple]]:
    with queue.session() as s:
        requests = [(r.channel, r.source_id, r.case_id, r.order_number, r.language)
                    for r in s.scalars(select(RequestRow).order_by(RequestRow.id))]
        cases = [(c.id, c.case_key, c.state, c.customer_email)
                 for c in s.scalars(select(Case).order_by(Case.id))]
    return requests, cases


@pytest.mark.timeout(300)  # intake triages: the language models load once
def test_intake_with_readers_stores_what_one_process_stores(
        corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """Which contact opens a case and which is linked or already seen depends on the
    order they are stored in: readers must not change it."""
    monkeypatch.setattr(parallel, "PARALLEL_FROM_BYTES", 0)
    sources = _sources(corpus, tmp_path)
    results = []
    for readers in (0, 2):
        queue = Queue(f"sqlite:///{tmp_path / f'q{readers}.sqlite'}")
        run = RunFolder.create(tmp_path / f"runs{readers}")
        try:
            stats = pipeline.run_intake(IntakeSettings(sources=sources, readers=readers),
                                        queue, run)
        finally:
            run.close()
        results.append((stats, _stored(queue)))
        queue.engine.dispose()
    (one, stored_one), (two, stored_two) = results
    assert one == two and one.new_requests >= 3000 and one.quarantined > 0
    assert stored_one == stored_two


_READ_AND_HANG = """
import sys, time
from multiprocessing import forkserver
from pathlib import Path
from bots.intake.parallel import read_parts
from bots.intake.sources import SourceConfig, source_parts

parts = source_parts(SourceConfig(kind="spreadsheet", path=Path(sys.argv[1])))
items = read_parts(parts, 2, from_bytes=0)
next(items)
while not forkserver._forkserver._forkserver_pid:
    time.sleep(0.05)
print(forkserver._forkserver._forkserver_pid, flush=True)
time.sleep(600)  # killed here, in the middle of its intake
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_intake_leaves_no_reader_behind(tmp_path: Path, sig: int) -> None:
    """A scheduled intake killed by a timeout or by hand: its readers and their fork
    server end with it (a pool's workers alone would wait for a next task forever)."""
    import subprocess
    import sys

    _sheets(tmp_path, 6, 3000)
    child = subprocess.Popen([sys.executable, "-c", _READ_AND_HANG, str(tmp_path / "sheets")],
                             stdout=subprocess.PIPE, text=True)
    try:
        server = int(child.stdout.readline())  # type: ignore[union-attr]
        deadline = time.monotonic() + 60
        while not (readers := _children_of(server)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert readers
    finally:
        child.send_signal(sig)
        child.wait(30)
    deadline = time.monotonic() + 30
    left = [server, *readers]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [pid for pid in left if Path(f"/proc/{pid}").exists()
                and (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z")]
    assert left == []
