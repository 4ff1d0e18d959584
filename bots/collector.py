"""Python's cycle collector around bulk work: when to pause it, and what to collect.

Intake and reconciliation make hundreds of thousands of small objects that live a
while (a batch of parsed requests, a million reconciliation rows). Each automatic
full collection walks the whole heap, these objects included, so it runs more often
the more there are: several seconds of a 100,000-contact intake, minutes of a
million-row reconciliation. The work itself makes almost no cycles; what it makes (a
batch's database session and its ORM objects) is collected at the caller's own
checkpoints, young generations only.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    """No automatic collection inside; it resumes as it was after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def collect_young() -> None:
    """Collect the cycles made since the last checkpoint (generations 0 and 1) without
    walking the objects that outlived earlier ones, as a full collection would."""
    gc.collect(1)


__all__ = ["collect_young", "paused"]
