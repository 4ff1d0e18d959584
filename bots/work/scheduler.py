"""The unattended loop: jobs and times from `schedule:` in the settings.

Built on the `schedule` package. Jobs that read the sources or write the report
(`run`, `intake`, `report`) are single on a queue: each holds the queue's "run" lock
(shared by every scheduler on the queue), and a job that finds it taken is skipped, not
queued up behind it. `process` jobs take no lock: cases are leased one by one, so the
schedulers of several runner machines process one queue together.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import schedule as sched
from rich.console import Console

from bots.config import Settings, load_settings
from bots.queue import Queue, QueueError, runner_id
from bots.work.exit_codes import EXIT_ERROR, EXIT_LOCKED
from bots.work.pipeline import execute, send_notifications
from bots.work.stopping import STOP, request_stop

RUN_LOCK = "run"
LOCKED_JOBS = ("run", "intake", "report")  # single on a queue; `process`, `notify` scale
class Scheduler:
    def __init__(self, settings: Settings, config: Path | None, console: Console) -> None:
        self.settings, self.config, self.console = settings, config, console
        self.owner = runner_id("scheduler")
        self.runner = sched.Scheduler()
        self.last_codes: list[int] = []

    def plan(self) -> list[sched.Job]:
        for job in self.settings.schedule.jobs:
            if job.every_minutes:
                self.runner.every(job.every_minutes).minutes.do(self.run_job, job.command)
            if job.at:
                self.runner.every().day.at(job.at).do(self.run_job, job.command)
        return list(self.runner.jobs)

    def run_job(self, command: str) -> int:
        try:
            queue = Queue(self.settings.queue_url)
        except QueueError as exc:  # the database is down: say so, try again next time
            self.console.print(f"[red]{command}: queue: {exc}[/]")
            self.last_codes.append(EXIT_ERROR)
            return EXIT_ERROR
        ttl = self.settings.processing.lease_seconds * 4
        single = command in LOCKED_JOBS
        if single and not queue.acquire_lock(RUN_LOCK, self.owner, ttl):
            self.console.print(f"skipped {command}: a run is in progress "
                               f"({queue.lock_owner(RUN_LOCK)})")
            self.last_codes.append(EXIT_LOCKED)
            return EXIT_LOCKED
        renewing = _Renewal(queue, self.owner, ttl) if single else None
        try:
            settings = load_settings(self.config)  # pick up edited settings between runs
            if command == "notify":
                code = send_notifications(settings, self.console)
            else:
                code = execute(settings, command, intake=command in ("run", "intake"),
                               process=command in ("run", "process"), console=self.console)
        finally:
            if renewing is not None:
                renewing.stop()
                queue.release_lock(RUN_LOCK, self.owner)
            self._install_signals()  # a run's own handlers replace ours while it runs
        self.last_codes.append(code)
        return code

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    def run_forever(self, once: bool = False) -> int:
        jobs = self.plan()
        if not jobs:
            self.console.print("[red]no jobs in the `schedule:` settings[/]")
            return 1
        self._install_signals()
        STOP.clear()
        if once:
            self.runner.run_all()
            return max(self.last_codes, default=0)
        for job in jobs:
            self.console.print(f"scheduled: {job}")
        while not STOP.is_set():
            self.runner.run_pending()
            STOP.wait(timeout=min(max(self.runner.idle_seconds or 1.0, 0.2), 5.0))
        self.console.print("scheduler stopped")
        return 0


class _Renewal:
    """Keeps the run lock while a long job runs (a thread: the job blocks this one)."""

    def __init__(self, queue: Queue, owner: str, ttl: float) -> None:
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(queue, owner, ttl), daemon=True)
        self._thread.start()

    def _run(self, queue: Queue, owner: str, ttl: float) -> None:
        while not self._done.wait(ttl / 3):
            queue.acquire_lock(RUN_LOCK, owner, ttl)

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
