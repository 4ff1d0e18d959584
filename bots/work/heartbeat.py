"""Renewing the leases of the cases a runner holds, from a thread of its own.

The event loop that drives the browser can block (a slow database call, a long page,
a paused VM); the heartbeat must not depend on it. A renewal that fails (the case was
taken over, or the database did not answer) marks that lease lost at once: the runner
checks `lease.lost` before every write to a legacy app, and every queue write it makes is
fenced by the lease token anyway.
"""

from __future__ import annotations

import threading

from loguru import logger

from bots.queue import Lease, Queue


class Heartbeat:
    def __init__(self, queue: Queue, lease_seconds: float, interval: float | None = None) -> None:
        self.queue = queue
        self.lease_seconds = lease_seconds
        self.interval = interval if interval is not None else max(0.5, lease_seconds / 3)
        self._leases: dict[int, Lease] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def hold(self, lease: Lease) -> None:
        with self._lock:
            self._leases[id(lease)] = lease

    def drop(self, lease: Lease) -> None:
        with self._lock:
            self._leases.pop(id(lease), None)

    def beat(self) -> None:
        """Renew every held lease once (the thread calls this every `interval` seconds)."""
        with self._lock:
            leases = list(self._leases.values())
        for lease in leases:
            if lease.lost.is_set():
                continue
            try:
                ok = self.queue.renew(lease, self.lease_seconds)
            except Exception as exc:  # noqa: BLE001 - the database did not answer
                logger.warning("lease renewal of case {} failed: {}", lease.case_id, exc)
                lease.lost.set()
                continue
            if not ok:
                logger.warning("case {}: lease taken over by another runner", lease.case_id)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()
