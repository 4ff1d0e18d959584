"""Named places where the chaos harness may kill the bot on purpose.

A random SIGKILL from outside rarely lands in the few milliseconds between the
portal confirming a refund and the bot recording it, yet that is the moment that
decides whether a bot pays twice. These points make such moments reachable:
`REFUND_BOTS_CRASH_POINTS="after_submit:0.3,before_submit:0.1"` kills the process
with SIGKILL at each named point with that probability. Unset (always, outside
the chaos harness), `crash_point()` does nothing.
"""

from __future__ import annotations

import os
import random
import signal

ENV = "REFUND_BOTS_CRASH_POINTS"
POINTS = ("before_submit", "after_submit", "after_record", "after_note")
_rng = random.Random(os.environ.get("REFUND_BOTS_CRASH_SEED"))


def _plan() -> dict[str, float]:
    plan: dict[str, float] = {}
    for part in filter(None, os.environ.get(ENV, "").split(",")):
        name, _, prob = part.partition(":")
        plan[name.strip()] = float(prob or 1)
    return plan


def crash_point(name: str) -> None:
    """Die here, like a power cut would, if the chaos plan says so."""
    probability = _plan().get(name)
    if probability and _rng.random() < probability:
        os.kill(os.getpid(), signal.SIGKILL)
