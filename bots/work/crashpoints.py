"""Named places where the chaos harness may kill or freeze the bot on purpose.

A random SIGKILL from outside rarely lands in the few milliseconds between the
portal confirming a refund and the bot recording it, yet that is the moment that
decides whether a bot pays twice. These points make such moments reachable:
`REFUND_BOTS_CRASH_POINTS="after_submit:0.3,before_submit:0.1"` kills the process
with SIGKILL at each named point with that probability.

`REFUND_BOTS_STALL_POINTS="before_submit:1"` freezes the process instead (SIGSTOP to
itself, every thread with it, the lease heartbeat too), as a VM pause or a long GC
would: it stays stopped until someone sends SIGCONT. That is how a runner that is alive
but stalled past its lease is made on purpose; a process stalls at most once, so the
harness knows each pause is a new one. Unset (always, outside the chaos harness and
its tests), `crash_point()` does nothing.
"""

from __future__ import annotations

import os
import random
import signal

ENV = "REFUND_BOTS_CRASH_POINTS"
STALL_ENV = "REFUND_BOTS_STALL_POINTS"
POINTS = ("before_submit", "after_last_check", "after_submit", "after_record", "after_note")
_rng = random.Random(os.environ.get("REFUND_BOTS_CRASH_SEED"))
_stalled: list[str] = []  # the point this process stalled at, if it did


def _plan(env: str = ENV) -> dict[str, float]:
    plan: dict[str, float] = {}
    for part in filter(None, os.environ.get(env, "").split(",")):
        name, _, prob = part.partition(":")
        plan[name.strip()] = float(prob or 1)
    return plan


def crash_point(name: str) -> None:
    """Die here, like a power cut would, or freeze, like a paused VM, if the plan says so."""
    probability = _plan().get(name)
    if probability and _rng.random() < probability:
        os.kill(os.getpid(), signal.SIGKILL)
    stall = _plan(STALL_ENV).get(name)
    if stall and not _stalled and _rng.random() < stall:
        _stalled.append(name)
        os.kill(os.getpid(), signal.SIGSTOP)  # returns after SIGCONT
