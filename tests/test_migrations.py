"""The queue's schema: created and upgraded by migrations, safely, with plain errors."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from paths import ROOT
from postgres import Postgres
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from bots.cli import app
from bots.queue import Queue, QueueError
from bots.queue.engine import current_revision, head_revision

START = ("import sys; from bots.queue import Queue; q = Queue(sys.argv[1]); "
         "print(q.pending_count())")


def _start_together(url: str, n: int) -> list[subprocess.CompletedProcess[str]]:
    procs = [subprocess.Popen([sys.executable, "-c", START, url], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(n)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=60)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def test_runners_starting_at_once_on_an_empty_database_create_it_once(queue_url: str) -> None:
    results = _start_together(queue_url, 4)
    assert [(r.returncode, r.stdout.strip()) for r in results] == [(0, "0")] * 4, [
        r.stderr[-2000:] for r in results]
    engine = create_engine(queue_url)
    assert current_revision(engine) == head_revision()
    assert {"cases", "requests", "refund_intents", "audit", "notifications"} <= set(
        inspect(engine).get_table_names())
    engine.dispose()


def test_a_queue_made_before_migrations_is_stamped_and_upgraded(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as conn:  # the 0.1 schema (as create_all made it), one case
        conn.executescript((Path(__file__).parent / "fixtures" / "queue_v01.sql").read_text())
    queue = Queue(f"sqlite:///{db}")
    [case] = queue.cases()
    assert case.order_number == "ORD-100001" and case.lease_token == 0 and case.doubts == []
    assert current_revision(queue.engine) == head_revision()


def test_a_schema_from_a_newer_version_is_refused(queue_url: str) -> None:
    Queue(queue_url)
    engine = create_engine(queue_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_future'"))
    engine.dispose()
    with pytest.raises(QueueError, match="newer refund-bots"):
        Queue(queue_url)


def _cli(url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args], env={"REFUND_BOTS_QUEUE_URL": url})
    return result.exit_code, result.output + (repr(result.exception)
                                              if result.exception and
                                              not isinstance(result.exception, SystemExit)
                                              else "")


def test_a_wrong_database_password_is_a_clear_error(postgres: Postgres) -> None:
    url = postgres.url(password="not-the-password")
    with pytest.raises(QueueError) as caught:
        Queue(url)
    assert "refused the user or password" in str(caught.value)
    assert "not-the-password" not in str(caught.value)
    code, output = _cli(url, "cases", "list")
    assert code == 1 and "refused the user or password" in output
    assert "Traceback" not in output and "not-the-password" not in output


def test_an_unreachable_database_is_a_clear_error(postgres: Postgres) -> None:
    from postgres import free_port

    url = f"postgresql+psycopg://postgres:pw@127.0.0.1:{free_port()}/nothing"
    code, output = _cli(url, "cases", "list")
    assert code == 1 and "nothing answers at that address" in output, output
    code, output = _cli(url, "run")
    assert code == 1 and "nothing answers" in output and "Traceback" not in output


def test_a_queue_url_that_is_not_a_url_is_a_clear_error() -> None:
    code, output = _cli("not a url at all", "cases", "list")
    assert code == 1 and "not a database URL" in output and "Traceback" not in output


def test_the_migrations_make_the_indexes_the_models_declare(queue_url: str) -> None:
    """Every index a model declares is in the database the migrations made, and no other
    (a dropped index, such as cases' state of its own, is gone from both)."""
    from bots.queue.schema import Base

    Queue(queue_url)
    engine = create_engine(queue_url)
    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        declared = {(i.name, tuple(c.name for c in i.columns)) for i in table.indexes
                    if not i.unique}
        made = {(i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(table.name)
                if not i["unique"]}
        assert made == declared, table.name
    names = {i["name"] for i in inspector.get_indexes("cases")}
    assert "ix_cases_state" not in names and {"ix_cases_due", "ix_cases_lease"} <= names
    engine.dispose()
