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


def test_bench_queue_stores_repeats_and_pages() -> None:
    from bots.tools.bench_queue import bench_queue, describe

    result = bench_queue(300, say=lambda line: None)
    assert result.backend == "sqlite" and result.requests >= 250
    assert result.cases > 0 and len(result.page_seconds) == 5
    lines = describe(result)
    assert "requests stored" in lines[0] and "repeat intake" in lines[1]
