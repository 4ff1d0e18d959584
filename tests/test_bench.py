"""`refund-bots bench intake` runs and prints its figures (timings are not asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from paths import ROOT
from postgres import Postgres
from sqlalchemy import create_engine, text
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


@pytest.mark.timeout(300)  # the intake command loads the language models
def test_bench_queue_stores_repeats_and_pages(tmp_path: Path) -> None:
    from bots.tools.bench_queue import bench_queue, describe

    said: list[str] = []
    made: list[str] = []
    dropped: list[str] = []

    def new_queue_url() -> str:
        made.append(f"sqlite:///{tmp_path / f'q{len(made)}.sqlite'}")
        return made[-1]

    result = bench_queue(300, repeat=1, say=said.append, new_queue_url=new_queue_url,
                         drop_queue_url=dropped.append)
    assert len(made) == 4 and sorted(dropped) == sorted(made)  # store, 2 streams, intake
    assert result.backend == "sqlite" and result.requests >= 250
    assert result.cases > 0 and len(result.page_seconds) == 5 and len(result.intake) == 1
    assert any(line.startswith("pass 1: ") for line in said)
    assert result.readers >= 1
    assert len(result.streamed_here) == len(result.streamed_readers) == 1
    for count in ("no", result.readers):
        assert any(line.startswith(f"read and stored at once, {count} reader process(es), "
                                   "pass 1") for line in said)
    lines = describe(result)
    assert "store" in lines[0] and "read and stored at once" in lines[1]
    assert "intake command" in lines[2]
    assert "repeat intake" in lines[3] and "cases list" in lines[4]


def test_only_the_tools_own_databases_are_dropped(postgres: Postgres) -> None:
    """A pass's database is gone after `drop_database`; one it did not make is refused."""
    from bots.tools.pgcluster import drop_database

    def names() -> set[str]:
        engine = create_engine(postgres.server_url)
        with engine.connect() as conn:
            found = set(conn.execute(text("SELECT datname FROM pg_database")).scalars())
        engine.dispose()
        return found

    name = postgres.create_database()
    assert name in names()
    drop_database(postgres.server_url, postgres.url(name))
    assert name not in names()
    with pytest.raises(ValueError, match="not made by database_factory"):
        drop_database(postgres.server_url, postgres.url("postgres"))
    assert "postgres" in names()


@pytest.mark.e2e
def test_bench_process_runs_both_ways_and_submits(monkeypatch) -> None:  # noqa: ANN001
    """The process benchmarks run (older code and this, dry and real); times are not
    asserted. HEAD stands in for an older revision: its code runs from a `git archive`."""
    from bots.cli import app as cli

    monkeypatch.chdir(ROOT)
    dry = CliRunner().invoke(cli, ["bench", "process", "--repeat", "1", "--against", "HEAD"])
    assert dry.exit_code == 0, dry.output
    out = " ".join(dry.output.split())
    assert "before (HEAD): median" in out and "after (this code): median" in out
    assert out.count("ratio bot / raw HTTP") == out.count("raw HTTP fetching them") == 2
    real = CliRunner().invoke(cli, ["bench", "process", "--repeat", "1", "--submit"])
    assert real.exit_code == 0, real.output
    out = " ".join(real.output.split())
    assert "paid: refund form + confirmation + note" in out and "s per paid case" in out


def test_bench_reconcile_and_report_run_small() -> None:
    """The benches themselves work (their speed is measured by running them, not here)."""
    from bots.tools.bench_reconcile import bench_reconcile, bench_report, generate

    ledger, portal = generate(3000)
    r = bench_reconcile(3000, repeat=1)
    assert r.problems > 0 and len(ledger) == len(portal) == 3000 and r.cpu
    w = bench_report(50, repeat=1)
    assert w.size_mb > 0 and w.peak_mb > 0 and len(w.seconds) == 1


@pytest.mark.e2e
def test_a_busy_day_reconciles_with_the_default_settings(monkeypatch) -> None:  # noqa: ANN001
    """The short version of `refund-bots bench listing --refunds 20000`: a day of refunds in
    the sandbox portal, read with the default settings, leaves no row unverified."""
    from bots.cli import app as cli

    monkeypatch.chdir(ROOT)
    out = CliRunner().invoke(cli, ["bench", "listing", "--refunds", "1500"])
    assert out.exit_code == 0, out.output
    assert "(1,500 listed)" in out.output and "rows not verified: 0" in out.output


def test_bench_report_against_another_revision_runs_both(tmp_path) -> None:  # noqa: ANN001
    """`bench report --against REV`: the revision's code and this code, side by side."""
    from bots.tools.bench_reconcile import bench_report_against

    before, after = bench_report_against(30, "HEAD", repeat=1)
    assert before.label == "before (HEAD)" and after.label.startswith("after")
    assert len(before.cpu) == len(after.cpu) == 1 and before.size_mb > 0 < after.size_mb
