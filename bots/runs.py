"""Run folders: `runs/<run-id>/` with the log, the workbook, screenshots and traces.

A run id sorts by time and names the folder, the log and every audit row, so an
ops agent can go from a report line to the screenshot of the failed attempt.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger
from rich.console import Console

if TYPE_CHECKING:  # the stubs' names for loguru's classes; not importable at run time
    from loguru import Logger, Message, Record


def new_run_id(now: datetime | None = None, suffix: str | None = None) -> str:
    """`20261203T061500-a1b2`: sorts by start time, and never reads as a card number.

    The "T" matters: ids written `20261203-061500-1234` (until 2026-12-03; still
    recognised) are 18 digits with hyphens, and one in about seventy passed the Luhn
    check, so card masking blanked the run id out of that run's audit texts.
    `suffix` (four hex digits) replaces the random part, for generated histories.
    """
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}-{suffix or secrets.token_hex(2)}"


@dataclass
class RunFolder:
    run_id: str
    path: Path
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    _sink: int | None = None

    @classmethod
    def create(cls, runs_dir: Path, run_id: str | None = None) -> RunFolder:
        run_id = run_id or new_run_id()
        path = Path(runs_dir) / run_id
        path.mkdir(parents=True, exist_ok=True)
        folder = cls(run_id, path)
        folder._sink = logger.add(path / "run.log", level="DEBUG", enqueue=False,
                                  format="{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | "
                                         "{extra[run]} | {message}",
                                  filter=lambda r: r["extra"].get("run") == run_id)
        return folder

    @property
    def log(self) -> Logger:
        return logger.bind(run=self.run_id)

    @property
    def report_path(self) -> Path:
        return self.path / "reconciliation.xlsx"

    def artifact(self, kind: str, name: str) -> Path:
        """A path under screenshots/ or traces/ with a filesystem-safe name."""
        folder = self.path / kind
        folder.mkdir(exist_ok=True)
        return folder / re.sub(r"[^A-Za-z0-9._-]+", "_", name)

    def close(self) -> None:
        if self._sink is not None:
            logger.remove(self._sink)
            self._sink = None


RUN_ID = re.compile(r"[0-9]{8}[T-][0-9]{6}-[0-9a-f]{4}")  # the "-" form: run ids before "T"


def run_started(run_id: str) -> datetime:
    """When the run named `run_id` (a `RUN_ID`) started, from its id."""
    return datetime.strptime(run_id[:8] + run_id[9:15], "%Y%m%d%H%M%S").replace(tzinfo=UTC)


def prune_runs(runs_dir: Path, *, keep_days: int | None, keep_runs: int | None,
               now: datetime | None = None, protect: set[str] | frozenset[str] = frozenset()
               ) -> list[Path]:
    """Delete run folders older than `keep_days` or beyond the newest `keep_runs`.

    Only folders named like a run id are touched (never the queue, the sandbox, the
    outbox or anything else under runs/), and never the runs in `protect` (still running).
    Returns what was deleted.
    """
    import shutil

    if keep_days is None and keep_runs is None:
        return []
    now = now or datetime.now(UTC)
    runs = sorted((p for p in Path(runs_dir).iterdir() if p.is_dir() and RUN_ID.fullmatch(p.name)),
                  key=lambda p: p.name, reverse=True) if Path(runs_dir).is_dir() else []
    doomed = []
    for i, path in enumerate(runs):
        started = run_started(path.name)
        too_old = keep_days is not None and now - started > timedelta(days=keep_days)
        too_many = keep_runs is not None and i >= keep_runs
        if (too_old or too_many) and path.name not in protect:
            shutil.rmtree(path, ignore_errors=True)
            doomed.append(path)
    return doomed


# The terminal's error stream, shared by log lines and progress bars: rich prints a log line
# above a live progress bar instead of through it.
STDERR = Console(stderr=True)


def configure_console(verbose: bool = False) -> None:
    """Console logging for humans: warnings by default, everything with --verbose.

    Each line names the case it is about (`C-000012: ...`) and goes through STDERR, so a
    progress bar on the same terminal stays whole.
    """
    logger.remove()
    level = "DEBUG" if verbose else os.environ.get("REFUND_BOTS_LOG_LEVEL", "WARNING")
    logger.configure(extra={"run": "-"})
    logger.add(_to_stderr, level=level, format=_console_format, colorize=False)


def _console_format(record: Record) -> str:
    return "{level: <8} " + ("{extra[case]}: " if record["extra"].get("case") else "") + \
        "{message}\n{exception}"


def _to_stderr(message: Message) -> None:
    STDERR.out(str(message).rstrip("\n"), highlight=False)
