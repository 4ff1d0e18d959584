"""`refund-bots bench intake` runs and prints its figures (timings are not asserted)."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from bots.tools.bench import bench_app


def test_bench_intake_prints_its_figures() -> None:
    app = typer.Typer()
    app.add_typer(bench_app, name="bench")  # as the CLI registers it
    result = CliRunner().invoke(app, ["bench", "intake", "--n", "500", "--db", "50"])
    assert result.exit_code == 0, result.output
    out = result.output
    for fragment in ("run 3:", "median of 3", "items/s", "requests/s", "distinct cases",
                     "chat", "social", "phone", "portal", "spreadsheet", "email",
                     "SQLite queue: 50 requests"):
        assert fragment in out, fragment


def test_bench_reconcile_and_report_run_small() -> None:
    """The benches themselves work (their speed is measured by running them, not here)."""
    from bots.tools.bench_reconcile import bench_reconcile, bench_report, generate

    ledger, portal = generate(3000)
    r = bench_reconcile(3000, repeat=1)
    assert r.problems > 0 and len(ledger) == len(portal) == 3000 and r.cpu
    w = bench_report(50, repeat=1)
    assert w.size_mb > 0 and w.peak_mb > 0 and len(w.seconds) == 1
