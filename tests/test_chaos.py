"""Exactly-once under crashes, stalls and hung submits: the chaos harness at a small size.

Two runner processes share one PostgreSQL queue. The first launches are a runner that
freezes itself right before its first submit (past its lease) and one that SIGKILLs
itself right after its first submit, before recording the refund number; a third of the
refund POSTs hang past the page timeout. The requests ask for small amounts, so the
portal would accept a duplicate. The long proof
(`refund-bots chaos --runners 3 --kills 100 --postgres`) is run by hand; see the README.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from paths import ROOT

from bots.tools.chaos import ChaosPlan, run_chaos
from bots.tools.demo import use_sandbox_credentials

pytestmark = pytest.mark.e2e

QUICK = ChaosPlan(runners=2, events_per_round=2, small_refunds=6, with_demo=False,
                  hang_rate=0.3, timeout_ms=2500, hang_seconds=6.0, grace_seconds=14.0,
                  lease_seconds=16, step_retries=0, opening=("stall point", "crash point"),
                  crash_plan="after_submit:1", stall_plan="before_submit:1")


def test_killed_and_stalled_runners_never_pay_twice_and_lose_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres) -> None:  # noqa: ANN001
    monkeypatch.chdir(ROOT)
    use_sandbox_credentials()
    result = run_chaos(tmp_path, kills=2, seed=3, plan=QUICK, new_queue_url=postgres.url,
                       say=lambda _: None)
    assert result.events >= 2 and result.stalls >= 1 and result.kills >= 1, result.summary()
    assert result.refunds > 0
    assert result.ok, result.problems
