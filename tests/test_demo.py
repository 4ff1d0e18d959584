"""The README's demo command, end to end (what a newcomer sees first)."""

from __future__ import annotations

from pathlib import Path

import pytest
from paths import ROOT
from typer.testing import CliRunner

from bots.cli import app

pytestmark = pytest.mark.e2e


def test_demo_runs_every_outcome_and_the_human_round_trip(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("REFUND_BOTS_RUNS_DIR", str(tmp_path / "runs"))
    result = CliRunner().invoke(app, ["demo", "--folder", str(tmp_path / "demo")])
    out = " ".join(result.output.split())
    assert result.exit_code == 0, out
    for outcome in ("escalated", "partial", "refunded", "rejected"):
        assert outcome in out.split("Processed 12 case(s):")[1].split(".")[0]
    assert "Reconciliation: OK." in out and "Customer notifications: 13 sent." in out
    assert "approved 1 escalated case(s)" in out and "Processed 1 case(s): 1 refunded." in out
    assert "Report: " in out
    assert len(list((tmp_path / "runs").glob("*/reconciliation.xlsx"))) == 2
