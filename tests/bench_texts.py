"""Messages worded like the intake benchmark's, for tests that compare two ways of reading."""

from __future__ import annotations

import random

from bots.tools.bench import _asks


def bench_texts(n: int, seed: int = 5) -> list[str]:
    return [a.text for a in _asks(random.Random(seed), n)]
