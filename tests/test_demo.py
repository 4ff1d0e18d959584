"""The README's demo command, end to end (what a newcomer sees first)."""

from __future__ import annotations

import json
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
    assert ("Intake: 16 new request(s) in 15 new case(s), 1 linked to an existing case, "
            "0 already seen, 8 quarantined.") in out
    assert "Processed 15 case(s): 2 escalated, 4 partial, 5 refunded, 4 rejected." in out
    assert "Reconciliation: OK." in out and "Customer notifications: 16 sent." in out
    assert "approved 1 escalated case(s)" in out and "Processed 1 case(s): 1 refunded." in out
    assert "Report: " in out
    assert len(list((tmp_path / "runs").glob("*/reconciliation.xlsx"))) == 2
    # Issue 17: the German email and the French chat are answered in their language (the
    # chat in the short form); the voicemail the machine was not sure of waits for a human.
    sent = {ch: [json.loads(x) for x in (tmp_path / "demo" / "outbox" / f"{ch}.jsonl")
                 .read_text(encoding="utf-8").splitlines()] for ch in ("email", "chat", "voice")}
    german = [m for m in sent["email"] if m.get("language") == "de"]
    french = [m for m in sent["chat"] if m.get("language") == "fr"]
    assert len(german) == 1 and german[0]["body"].startswith("Guten Tag ")
    assert "€ für die Bestellung" in german[0]["body"]
    assert len(french) == 1 and french[0]["body"].startswith("Bonjour ")
    assert len(french[0]["body"].strip().splitlines()) == 1
    voice, = sent["voice"]
    assert voice["kind"] == "escalated" and voice["to"].startswith("+")
    assert "Escalated, waiting for a human: 1" in out.split("approved 1 escalated")[1]
