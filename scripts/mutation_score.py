"""Summarise mutmut's results for mutant-name globs: the score, and every survivor.

Used by scripts/mutation.sh. A mutant counts as killed when a test failed, timed out or
crashed with it; survivors and mutants no test reached count against the score.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from collections import Counter
from pathlib import Path

KILLED = {1, 3, 24, -24, 36, 37, 152, 255, -9, -11}
GOAL = 0.90


def _chosen(globs: list[str]) -> dict[str, int | None]:
    status: dict[str, int | None] = {}
    for meta in Path("mutants").rglob("*.py.meta"):
        status.update(json.loads(meta.read_text())["exit_code_by_key"])
    return {k: v for k, v in status.items() if any(fnmatch.fnmatch(k, g) for g in globs)}


def names(which: str, globs: list[str]) -> int:
    """Print the mutants to run again: `alive` (not killed last time) or `rest` (never run)."""
    for key, code in sorted(_chosen(globs).items()):
        if (code is None) if which == "rest" else (code is not None and code not in KILLED):
            print(key)
    return 0


def main(globs: list[str]) -> int:
    chosen = _chosen(globs)
    run = {k: v for k, v in chosen.items() if v is not None}
    if not run:
        print("no mutant results yet: run bash scripts/mutation.sh first")
        return 1
    by_module: Counter[str] = Counter()
    killed_by_module: Counter[str] = Counter()
    for key, code in run.items():
        module = key.split(".x")[0]
        by_module[module] += 1
        killed_by_module[module] += code in KILLED
    for module in sorted(by_module):
        k, n = killed_by_module[module], by_module[module]
        print(f"{module:32} {k:5}/{n:<5} killed  {k / n:6.1%}")
    killed, total = sum(killed_by_module.values()), len(run)
    print(f"{'all':32} {killed:5}/{total:<5} killed  {killed / total:6.1%}"
          + (f"  ({len(chosen) - total} not run)" if len(chosen) > total else ""))
    survivors = sorted(k for k, v in run.items() if v not in KILLED)
    if survivors:
        print("\nnot killed (`.venv/bin/mutmut show NAME` for the diff):")
        for name in survivors:
            print(f"  {name}")
    return 0 if killed / total >= GOAL else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("--alive", "--rest"):
        sys.exit(names(sys.argv[1][2:], sys.argv[2:] or ["*"]))
    sys.exit(main(sys.argv[1:] or ["*"]))
