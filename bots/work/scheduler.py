"""The unattended loop: jobs and times from `schedule:` in the settings.

Built on the `schedule` package. Jobs that read the sources or write the report
(`run`, `intake`, `report`) are single on a queue: each holds the queue's "run" lock
(shared by every scheduler on the queue), and a job that finds it taken is skipped, not
queued up behind it. `process` jobs take no lock: cases are leased one by one, so the
schedulers of several runner machines process one queue together.

The scheduler says when each job runs next, runs the first job at once when it starts
(`schedule.run_at_start`), keeps its own log (`schedule.log`, default
`<runs_dir>/scheduler.log`), deletes old run folders after each job
(`schedule.retention`), and once a day checks the alert conditions that need the
forecast (`alerts:`).
"""

from __future__ import annotations

import signal
import threading
from datetime import datetime
from pathlib import Path

import schedule as sched
from loguru import logger
from rich.console import Console

from bots.config import Settings, load_settings
from bots.queue import Queue, QueueError, runner_id
from bots.runs import prune_runs
from bots.work.exit_codes import EXIT_ERROR, EXIT_LOCKED
from bots.work.pipeline import execute, send_notifications
from bots.work.stopping import STOP, request_stop

RUN_LOCK = "run"
LOCKED_JOBS = ("run", "intake", "report")  # single on a queue; `process`, `notify` scale
ALERTS_AT = "06:00"  # the daily check of the forecast-based alert conditions
class Scheduler:
    def __init__(self, settings: Settings, config: Path | None, console: Console) -> None:
        self.settings, self.config, self.console = settings, config, console
        self.owner = runner_id("scheduler")
        self.runner = sched.Scheduler()
        self.last_codes: list[int] = []
        self.log = logger.bind(run="scheduler")
        self._sink: int | None = None

    def plan(self) -> list[sched.Job]:
        for job in self.settings.schedule.jobs:
            if job.every_minutes:
                self.runner.every(job.every_minutes).minutes.do(self.run_job, job.command)
            if job.at:
                self.runner.every().day.at(job.at).do(self.run_job, job.command)
        jobs = list(self.runner.jobs)
        if jobs and self.settings.alerts is not None:
            self.runner.every().day.at(ALERTS_AT).do(self.check_alerts)
        return jobs

    def check_alerts(self) -> None:
        from bots.work.alerts import check

        for sent in check(self.settings):
            self.say(f"alert sent: {sent.alert.subject}")

    def say(self, line: str) -> None:
        """A line for the terminal (or journald) and the scheduler's own log."""
        self.console.print(line)
        self.log.info(line)

    def next_runs(self) -> list[str]:
        return [f"{_describe(job)}: next at {job.next_run:%Y-%m-%d %H:%M}"
                for job in self.runner.jobs if isinstance(job.next_run, datetime)]

    def _open_log(self) -> None:
        path = self.settings.schedule.log or self.settings.runs_dir / "scheduler.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._sink = logger.add(path, level="INFO", rotation="10 MB", retention=5,
                                format="{time:YYYY-MM-DD HH:mm:ss} | {level: <7} | {message}",
                                filter=lambda r: r["extra"].get("run") == "scheduler")

    def _retention(self) -> None:
        keep = self.settings.schedule.retention
        if keep.keep_days is None and keep.keep_runs is None:
            return
        queue = Queue(self.settings.queue_url)
        running = {r.run_id for r in queue.runs(200) if r.status == "running"}
        gone = prune_runs(self.settings.runs_dir, keep_days=keep.keep_days,
                          keep_runs=keep.keep_runs, protect=running)
        if gone:
            self.say(f"retention: deleted {len(gone)} old run folder(s)")

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
            self.log.info("{} started", command)
            if command == "notify":
                code = send_notifications(settings, self.console)
            else:
                code = execute(settings, command, intake=command in ("run", "intake"),
                               process=command in ("run", "process"),
                               report=command == "report", console=self.console)
        finally:
            if renewing is not None:
                renewing.stop()
                queue.release_lock(RUN_LOCK, self.owner)
            self._install_signals()  # a run's own handlers replace ours while it runs
        self.last_codes.append(code)
        self.log.info("{} finished with exit status {}", command, code)
        self._retention()
        for line in self.next_runs():
            self.say(line)
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
        self._open_log()
        try:
            if once:
                for job in jobs:
                    job.run()
                return max(self.last_codes, default=0)
            for job in jobs:
                self.say(f"scheduled: {_describe(job)}, next at {job.next_run:%Y-%m-%d %H:%M}")
            if self.settings.schedule.run_at_start and not STOP.is_set():
                self.say(f"running {_describe(jobs[0])} at start (schedule.run_at_start)")
                jobs[0].run()
            while not STOP.is_set():
                self.runner.run_pending()
                STOP.wait(timeout=min(max(self.runner.idle_seconds or 1.0, 0.2), 5.0))
            self.say("scheduler stopped")
            return 0
        finally:
            if self._sink is not None:
                logger.remove(self._sink)
                self._sink = None


def _describe(job: sched.Job) -> str:
    """'run every 15 minutes', 'report every day at 06:00'."""
    what = job.job_func.args[0] if job.job_func and job.job_func.args else "alerts check"
    unit = job.unit or ""
    every = f"every {job.interval} {unit}" if job.interval != 1 else f"every {unit[:-1]}"
    return f"{what} {every}" + (f" at {job.at_time:%H:%M}" if job.at_time else "")


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
