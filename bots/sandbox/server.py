"""Run both sandbox apps: in this process (`serve`) or as a child process (`SandboxProcess`).

The child process is what the tests and the demo use: the apps get free ports, their own
interpreter (a hung request cannot freeze the test) and are killed on exit, whatever
happened.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO

import httpx
from werkzeug.serving import BaseWSGIServer, make_server

from bots.sandbox.data import build_dataset, write_databases
from bots.sandbox.faults import FaultConfig
from bots.sandbox.orders_app import DEFAULT_ORDERS_USERS, create_orders_app
from bots.sandbox.payments_app import DEFAULT_PAYMENTS_USERS, create_payments_app

__all__ = ["DEFAULT_ORDERS_USERS", "DEFAULT_PAYMENTS_USERS", "SKINS", "SandboxError",
           "SandboxProcess",
           "prepare_data", "serve", "users_from_env"]

ORDERS_DB = "orders.sqlite"
PAYMENTS_DB = "payments.sqlite"
READY_PREFIX = "SANDBOX READY "
STARTUP_TIMEOUT_S = 30.0
SKINS = ("default", "oldschool")  # same data and rules, other UI (see bots/sandbox/oldschool.py)


class SandboxError(RuntimeError):
    """The sandbox process could not start (the message carries its stderr)."""


def prepare_data(data_dir: Path, seed: int, today: date | None, reset: bool) -> tuple[Path, Path]:
    """The two database files, (re)generated from the seed when asked or when missing."""
    data_dir = Path(data_dir)
    orders_db, payments_db = data_dir / ORDERS_DB, data_dir / PAYMENTS_DB
    if reset or not orders_db.exists() or not payments_db.exists():
        write_databases(build_dataset(seed=seed, today=today), orders_db, payments_db)
    return orders_db, payments_db


def users_from_env(defaults: dict[str, str], user_var: str, password_var: str) -> dict[str, str]:
    """The sandbox's published account unless the environment names another one."""
    (user, password), = defaults.items()
    return {os.environ.get(user_var) or user: os.environ.get(password_var) or password}


def _url(server: BaseWSGIServer, host: str) -> str:
    return f"http://{host}:{server.server_port}"


def serve(data_dir: Path, orders_port: int = 8101, payments_port: int = 8102,
          host: str = "127.0.0.1", seed: int = 7, reset: bool = False,
          faults: FaultConfig | None = None,
          ready: Callable[[str, str], None] | None = None, today: date | None = None,
          skin: str = "default") -> None:
    """Serve both apps until SIGTERM/SIGINT. Port 0 picks a free port (see the READY line)."""
    orders_db, payments_db = prepare_data(data_dir, seed, today, reset)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    base = faults or FaultConfig()  # each app gets its own copy: a test can break just one
    make_orders, make_payments = create_orders_app, create_payments_app
    if skin == "oldschool":
        from bots.sandbox import oldschool

        make_orders, make_payments = oldschool.create_orders_app, oldschool.create_payments_app
    elif skin != "default":
        raise SandboxError(f"unknown skin {skin!r} (one of {', '.join(SKINS)})")
    orders = make_orders(orders_db, replace(base), users_from_env(
        DEFAULT_ORDERS_USERS, "SANDBOX_ORDERS_USER", "SANDBOX_ORDERS_PASSWORD"))
    payments = make_payments(payments_db, replace(base), users_from_env(
        DEFAULT_PAYMENTS_USERS, "SANDBOX_PAYMENTS_USER", "SANDBOX_PAYMENTS_PASSWORD"))
    servers = [make_server(host, orders_port, orders, threaded=True),
               make_server(host, payments_port, payments, threaded=True)]
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.1},
                                name=f"sandbox-{i}", daemon=True)
               for i, s in enumerate(servers)]
    for t in threads:
        t.start()
    stop = threading.Event()
    _on_signals(stop)
    orders_url, payments_url = (_url(s, host) for s in servers)
    print(f"{READY_PREFIX}orders={orders_url} payments={payments_url}", flush=True)
    if ready:
        ready(orders_url, payments_url)
    try:
        while not stop.wait(0.2):
            pass
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


def _on_signals(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # signals can only be handled in the main thread; the caller stops us

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# -- child process --------------------------------------------------------------------------

class SandboxProcess:
    """Both apps in a child process on free ports, for tests and the demo.

    `with SandboxProcess(data_dir=d) as sb:` starts with freshly generated data and waits
    for the READY line; on exit the process is terminated (then killed if it lingers).
    """

    def __init__(self, data_dir: Path, seed: int = 7, today: date | None = None,
                 faults: FaultConfig | None = None, reset: bool = True,
                 startup_timeout: float = STARTUP_TIMEOUT_S, skin: str = "default") -> None:
        self.data_dir = Path(data_dir)
        self.skin = skin
        self.seed, self.today, self.faults, self.reset = seed, today, faults, reset
        self.startup_timeout = startup_timeout
        self.orders_url = self.payments_url = ""
        self.process: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None

    @property
    def orders_db(self) -> Path:
        return self.data_dir / ORDERS_DB

    @property
    def payments_db(self) -> Path:
        return self.data_dir / PAYMENTS_DB

    @property
    def stderr_path(self) -> Path:
        return self.data_dir / "sandbox-stderr.log"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "bots.sandbox", "--orders-port", "0", "--payments-port",
               "0", "--data-dir", str(self.data_dir), "--seed", str(self.seed)]
        if self.reset:
            cmd.append("--reset")
        if self.today:
            cmd += ["--today", self.today.isoformat()]
        if self.skin != "default":
            cmd += ["--skin", self.skin]
        return cmd + _fault_args(self.faults)

    def start(self) -> SandboxProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # stderr goes to a file: a pipe nobody reads would block the child once full.
        self._stderr = self.stderr_path.open("w", encoding="utf-8")
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=self._stderr, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump, args=(self.process.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxError(f"sandbox not ready after {self.startup_timeout:.0f} s\n"
                                   f"{self._stderr_text()}")
            try:
                line = lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if line is None:
                self.process.wait(timeout=5)
                raise SandboxError(f"sandbox exited with status {self.process.returncode}\n"
                                   f"{self._stderr_text()}")
            if line.startswith(READY_PREFIX):
                parts = dict(p.split("=", 1) for p in line[len(READY_PREFIX):].split())
                self.orders_url, self.payments_url = parts["orders"], parts["payments"]
                return

    def _stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")[-8000:]
        except OSError:
            return ""

    def set_faults(self, **changes: object) -> None:
        """Change the faults of both apps now (e.g. `set_faults(error_rate=1.0)`)."""
        with httpx.Client(timeout=10) as client:
            for url in (self.orders_url, self.payments_url):
                client.post(f"{url}/_sandbox/faults", json=changes).raise_for_status()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    """Read the child's stdout to the end (so it never blocks on a full pipe)."""
    for line in stream:
        lines.put(line.strip())
    lines.put(None)


def _fault_args(faults: FaultConfig | None) -> list[str]:
    """CLI flags for the non-default fields of a FaultConfig."""
    if faults is None:
        return []
    default, args = FaultConfig(), []
    flags = {"latency_ms": "--latency-ms", "error_rate": "--error-rate",
             "error_paths": "--error-paths", "hang_rate": "--hang-rate",
             "hang_seconds": "--hang-seconds", "hang_paths": "--hang-paths",
             "hang_methods": "--hang-methods", "session_max_age_s": "--session-max-age",
             "session_max_requests": "--session-max-requests", "seed": "--fault-seed"}
    for name, flag in flags.items():
        value = getattr(faults, name)
        if value != getattr(default, name):
            args += [flag, str(value)]
    if faults.maintenance:
        args.append("--maintenance")
    return args
