"""`refund-bots bench scale`: its parts, and one short pass end to end (timings not asserted)."""

from __future__ import annotations

import subprocess
import sys
from datetime import date

import pytest
from paths import ROOT
from typer.testing import CliRunner

from bots.cli import app
from bots.sandbox.data import build_dataset
from bots.tools.bench_scale import (
    CpuMeter,
    Sample,
    ScaleConfig,
    ScaleResult,
    every_order,
    table_rows,
)
from bots.tools.demo import DEMO_SEED

BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"


def test_cpu_meter_counts_the_children_of_a_runner_too() -> None:
    # A parent that does nothing itself but start a busy child: the child's CPU counts.
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess, sys; subprocess.run([sys.executable, "
                               f"'-c', {BUSY!r}]); sys.stdin.read()"],
                              stdin=subprocess.PIPE)
    with CpuMeter([parent.pid], server_pid=None) as meter:
        deadline_cpu = 0.0
        for _ in range(300):  # until the child's 0.3 s of CPU show (bounded)
            deadline_cpu, _server = meter.read()
            if deadline_cpu >= 0.3:
                break
            subprocess.run([sys.executable, "-c", "pass"], check=True)  # let time pass
        assert parent.stdin is not None
        parent.stdin.close()
        parent.wait(timeout=20)
    assert deadline_cpu >= 0.3


def test_every_order_of_the_sandbox_gets_one_small_request() -> None:
    ds = build_dataset(seed=DEMO_SEED, today=date.today())
    reqs = every_order(ds)
    assert len(reqs) == len(ds.orders) == len({r.order_number for r in reqs})
    totals = {o.order_number: o.total for o in ds.orders}
    assert all(0 < float(r.amount or 0) <= float(totals[r.order_number]) for r in reqs)


def test_the_table_shows_medians_and_the_speed_up_over_one_runner() -> None:
    one = ScaleResult(ScaleConfig(1), [Sample(10, 60, 10, 1, 5), Sample(20, 60, 20, 2, 5),
                                       Sample(12, 60, 12, 1, 5)])
    two = ScaleResult(ScaleConfig(2), [Sample(24, 60, 24, 2, 5)])
    rows = table_rows([one, two])
    assert rows[0][:5] == ("1", "1", "12.0", "1.00x", "1.00")
    assert rows[1][:4] == ("2", "1", "24.0", "2.00x")


def test_bad_runner_counts_are_refused_without_a_traceback() -> None:
    result = CliRunner().invoke(app, ["bench", "scale", "--runners", "1,x"])
    assert result.exit_code == 1 and "numbers like 1,2,4" in result.output
    result = CliRunner().invoke(app, ["bench", "scale", "--runners", "0"])
    assert result.exit_code == 1 and "between 1 and 16" in result.output


@pytest.mark.e2e
def test_bench_scale_prints_its_table(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, ["bench", "scale", "--runners", "1", "--seconds", "5",
                                      "--warmup", "3", "--repeat", "1", "--folder",
                                      str(tmp_path / "scale")])
    assert result.exit_code == 0, result.output
    for fragment in ("pass 1/1, 1 runner(s) x 1 worker(s)", "CPU s per",
                     "Runners on one SQLite queue", "load average"):
        assert fragment in result.output, fragment
