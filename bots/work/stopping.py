"""The process-wide "stop when the case in hand is done" flag.

Set by SIGTERM/SIGINT, either in the scheduler's loop or inside a running job's event
loop, so that a scheduler stops after the run it is in, not in the middle of a refund.
"""

from __future__ import annotations

import threading

STOP = threading.Event()


def request_stop(*_: object) -> None:
    STOP.set()
