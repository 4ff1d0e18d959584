"""Reading the files of folder sources in worker processes, items kept in order.

Parsing a file (a CSV sheet, a chat or portal export) is pure CPU work in Python, and
intake's storing is too: in one process they take turns on one core. Here the files go
to reader processes while the calling process stores what they have read. The items
come back exactly as `read_part` yields them, part after part in the order given, so
what is stored (which contact opens a case, which is "already seen") does not depend
on how many readers there were.

Files, mail folders and Maildirs go to readers. A voice folder and a part refused
before reading are read in the calling process, in their turn (readers go on with the
files after them meanwhile); mailboxes never come here (they are stored one message at
a time, see `bots.work.pipeline`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import shutil
import signal
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Connection
from pathlib import Path

from bots import collector
from bots.intake.sources import SourceConfig, SourcePart, read_part
from bots.models import IntakeItem

# Below this many bytes of files in all, starting the readers (about half a second of
# CPU each, mostly imports) costs more than reading the files here would.
PARALLEL_FROM_BYTES = 2 * 1024 * 1024
# Readers yield the CPU to the storing process, the one whose work cannot be shared
# out: with as many readers as CPUs it would otherwise get about two thirds of one.
READER_NICENESS = 5
# Files handed to each reader ahead of the one being stored: enough that a reader never
# waits, few enough that read items do not pile up in memory when storing is slower.
AHEAD_PER_READER = 2
# The largest file the storing process reads itself while it waits for a reader: one it
# reads in about a tenth of a second. A larger one would hold up storing longer than the
# wait it fills (measured: a 5 MB chat export read here stopped storing for 3 s, while
# the reader it waited for had been done after 0.5 s).
HELP_MAX_BYTES = 256 * 1024


class ReaderDied(RuntimeError):
    """A reader process ended without an answer (killed, out of memory).

    Nothing of that file or the ones after it is stored in this run; what was stored
    before stays, and the next run reads the rest again.
    """


def default_readers() -> int:
    """One reader per CPU this process may run on; none on a single CPU, where readers
    could only take turns with the storing process."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return cpus if cpus > 1 else 0


def read_parts(parts: Sequence[SourcePart], readers: int | None = None, *,
               from_bytes: int | None = None) -> Generator[IntakeItem, None, None]:
    """Every item of these parts, in their order; files read by up to `readers`
    processes (None: `default_readers()`; 0: all in this process), if there are two
    files or more and `from_bytes` in all (None: `PARALLEL_FROM_BYTES`)."""
    readers = default_readers() if readers is None else readers
    from_bytes = PARALLEL_FROM_BYTES if from_bytes is None else from_bytes
    files = [part for part in parts if _for_reader(part)]
    if readers < 1 or len(files) < 2 or _size(files) < from_bytes:
        for part in parts:
            yield from read_part(part)
        return
    yield from _read_with_readers(parts, files, min(readers, len(files)))


def _read_with_readers(parts: Sequence[SourcePart], files: list[SourcePart],
                       readers: int) -> Iterator[IntakeItem]:
    context = _context()
    # Only this process holds `alive`'s sending end: when it ends, however it ends
    # (SIGKILL, a crash), every reader sees the pipe close and ends too.
    alive, alive_here = context.Pipe(duplex=False)
    pool = ProcessPoolExecutor(readers, mp_context=context, initializer=_start_reader,
                               initargs=(alive, READER_NICENESS))  # started as needed
    spool = Path(tempfile.mkdtemp(prefix="refund-bots-intake-"))  # 0700: ours alone
    # Where each file's items come from, by its place in `files`: a reader's answer, or
    # the items read here. File 0 is read here (see below); the others wait their turn.
    got: dict[int, Future[str] | list[IntakeItem]] = {}
    waiting = deque(range(1, len(files)))
    sizes = [_size([part]) for part in files]

    def hand_out() -> None:
        while waiting and sum(isinstance(g, Future) for g in got.values()) < (
                readers * AHEAD_PER_READER):
            index = waiting.popleft()
            try:
                got[index] = pool.submit(read_file, files[index], str(spool))
            except BrokenProcessPool as exc:  # a reader died since the last file
                raise _died(files[index], exc) from None

    # The first files are handed out from a thread: the first hand-out waits until the
    # fork server has imported the readers (a second or more), and meanwhile the first
    # file is read and stored here instead of waiting too.
    starting = _Starting(hand_out)
    try:
        index = -1
        for part in parts:
            if not _for_reader(part):
                yield from read_part(part)
                continue
            index += 1
            if index == 0:
                yield from read_part(part)
                continue
            starting.join()
            items = got.pop(index)
            if isinstance(items, Future):
                _help_while_waiting(items, files, sizes, waiting, got)
                items = _items(items, part)
            hand_out()
            yield from items
    finally:  # a failed store, or a reader that died: no file is started after this
        starting.join(check=False)
        pool.shutdown(wait=True, cancel_futures=True)
        alive.close()
        alive_here.close()
        shutil.rmtree(spool, ignore_errors=True)


def _help_while_waiting(future: Future[str], files: list[SourcePart], sizes: list[int],
                        waiting: deque[int], got: dict[int, Future[str] | list[IntakeItem]]
                        ) -> None:
    """While the file needed next is still being read, read here the first small file
    not handed out yet (at most HELP_MAX_BYTES): storing is often quicker than reading
    (on PostgreSQL the server does half of it), and this process would only wait. Its
    items wait for their turn in `got`."""
    while not future.done():
        index = next((i for i in waiting if 0 < sizes[i] <= HELP_MAX_BYTES), None)
        if index is None:
            return
        waiting.remove(index)
        got[index] = list(read_part(files[index]))


class _Starting(threading.Thread):
    """`start` run in a thread; `join` raises what it raised (a reader that died)."""

    def __init__(self, start: Callable[[], None]) -> None:
        super().__init__(name="intake-readers-start", daemon=True)
        self._run_first = start
        self._failed: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._run_first()
        except BaseException as exc:  # raised again in the reading thread by `join`
            self._failed = exc

    def join(self, timeout: float | None = None, *, check: bool = True) -> None:
        super().join(timeout)
        if check and self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed


def _start_reader(alive: Connection, niceness: int) -> None:
    """A reader's start: a lower priority, and an end when the intake process ends.

    Without the watch, a killed intake would leave its readers and their fork server
    behind for good: a pool's worker holds both ends of its own task pipe, so it waits
    for a next task forever.
    """
    os.nice(niceness)
    # Ctrl-C reaches the whole process group: the intake process stops its readers
    # itself (closing the pool), and a reader would only print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_end_with, args=(alive,), name="intake-alive", daemon=True
                     ).start()


def _end_with(alive: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        alive.recv()  # nothing is ever sent: this returns when the pipe closes
    os._exit(1)


def read_file(part: SourcePart, spool: str) -> str:
    """A reader's work: one file's items, whole, pickled into a file of `spool`.

    Not sent back through the pool's pipe: a pipe carries 64 KiB at a time, and each
    piece waits for the storing process's main thread to let go of the GIL (up to
    5 ms), so a reader would spend much of its time blocked on sending.
    """
    with collector.paused():  # the file's items pile up: see bots.collector
        items = list(read_part(part))
    with tempfile.NamedTemporaryFile(dir=spool, suffix=".pickle", delete=False) as out:
        pickle.dump(items, out, protocol=pickle.HIGHEST_PROTOCOL)
    collector.collect_young()
    return out.name


def _items(future: Future[str], part: SourcePart) -> list[IntakeItem]:
    try:
        path = Path(future.result())
    except BrokenProcessPool as exc:
        raise _died(part, exc) from None
    items: list[IntakeItem] = pickle.loads(path.read_bytes())
    path.unlink()
    return items


def _died(part: SourcePart, exc: BrokenProcessPool) -> ReaderDied:
    where = part.file or getattr(part.cfg, "path", None) or "a source"
    return ReaderDied(f"a reader process ended without an answer (killed, or out of "
                      f"memory?) while {where} was being read: {exc}")


def _for_reader(part: SourcePart) -> bool:
    """A file, or a mail folder (only read: the queue knows each message by its
    Message-ID). Never a mailbox or a voice folder, nor a part refused before reading."""
    if part.problem is not None:
        return False
    cfg = part.cfg
    return part.file is not None or (
        isinstance(cfg, SourceConfig) and cfg.kind in ("eml_folder", "maildir"))


def _size(files: list[SourcePart]) -> int:
    total = 0
    for part in files:
        # gone, or unreadable: its reader quarantines it with the reason
        with contextlib.suppress(OSError):
            total += os.stat(part.file).st_size if part.file is not None else 0
    return total


def _context() -> multiprocessing.context.BaseContext:
    """Readers start from a fork server that has imported the readers once, not from a
    fork of this process: that one may hold database connections and threads."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["bots.intake.sources"])
    return context


__all__ = ["AHEAD_PER_READER", "PARALLEL_FROM_BYTES", "ReaderDied", "default_readers",
           "read_file", "read_parts"]
