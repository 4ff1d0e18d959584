"""Exactly-once under crashes: the chaos harness at a small size (N = 100 is run by hand)."""

from __future__ import annotations

from pathlib import Path

import pytest
from paths import ROOT

from bots.tools.chaos import run_chaos
from bots.tools.demo import use_sandbox_credentials

pytestmark = pytest.mark.e2e


def test_killed_runs_never_pay_twice_and_lose_nothing(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    use_sandbox_credentials()
    result = run_chaos(tmp_path, kills=4, seed=3, say=lambda _: None)
    assert result.kills == 4
    assert result.refunds > 0
    assert result.ok, result.problems
