"""Several `refund-bots process` at once on one PostgreSQL queue share the work, paying once."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from paths import CONFIG, ROOT
from postgres import Postgres

from bots.decide.policy import load_policy
from bots.queue import Queue
from bots.sandbox.data import build_dataset
from bots.tools.chaos import expected_refunds
from bots.tools.demo import DEMO_SEED, prepare_inputs
from bots.work.exit_codes import EXIT_OK
from bots.work.pipeline import execute

pytestmark = pytest.mark.e2e


def test_two_runners_on_one_postgresql_queue_share_the_work(
        sandbox, settings_for, postgres: Postgres, tmp_path: Path) -> None:  # noqa: ANN001
    today = date.today()
    ds = build_dataset(seed=DEMO_SEED, today=today)
    reqs = prepare_inputs(tmp_path, ds, today)
    settings = settings_for(sandbox, queue_url=postgres.url())
    assert execute(settings, "intake", intake=True, process=False) == EXIT_OK
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")), encoding="utf-8")
    before = {r["refund_id"] for r in sandbox.refunds()}

    runners = [subprocess.Popen(
        [sys.executable, "-m", "bots", "process", "--config", str(config), "--today",
         today.isoformat()], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True) for _ in range(2)]
    outputs = [r.communicate(timeout=400)[0] for r in runners]
    assert [r.returncode for r in runners] == [EXIT_OK, EXIT_OK], outputs

    new = [r for r in sandbox.refunds() if r["refund_id"] not in before]
    got = Counter(r["order_number"] for r in new)
    assert all(n == 1 for n in got.values()), f"refunded twice: {got}"
    assert {r["order_number"]: Decimal(r["amount"]) for r in new} == expected_refunds(
        ds, reqs, load_policy(CONFIG / "policy.yaml"))

    queue = Queue(settings.queue_url)
    assert queue.pending_count() == 0
    claimers = {a.actor.split("|")[3] for c in queue.cases() for a in queue.audit_trail(c.id)
                if a.event == "claimed"}
    assert len(claimers) == 2, "both runners should have worked cases"
