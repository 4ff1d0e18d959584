"""The audit trail is hash-chained: an edit, a deletion or an insertion made directly in
SQL is found, and named, by `audit verify`; erasure of personal data keeps it valid."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bots.cli import app
from bots.models import RefundRequest
from bots.queue import Queue
from bots.queue.audit import audit


def req(source_id: str, order: str = "ORD-100001") -> RefundRequest:
    return RefundRequest(channel="email", source_id=source_id,
                         received_at=datetime(2026, 11, 28, tzinfo=UTC),
                         reason_text="my parcel never came, call me on +44 7700 900123",
                         customer_email="ada@example.com", customer_name="Ada Lovelace",
                         order_number=order, requested_amount=Decimal("12.00"))


@pytest.fixture
def db(tmp_path: Path) -> tuple[Queue, Path]:
    path = tmp_path / "q.sqlite"
    queue = Queue(f"sqlite:///{path}")
    # bulk intake (multi-row INSERT) and single audit() records, interleaved
    queue.store_requests([req(f"m{i}", f"ORD-10000{i}") for i in range(5)], "run-1")
    held = queue.claim("w1", 60, run_id="run-1")
    assert held is not None
    queue.finish(held.lease, state="escalated", outcome="escalated", reason="above limit",
                 actor="w1", run_id="run-1")
    queue.human_decision(held.id, decision="reject", amount=None, agent="ana",
                         comment="not eligible", run_id=None)
    queue.store_requests([req("m9", "ORD-100009")], "run-2")
    return queue, path


def sql(path: Path, statement: str, *args: object) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(statement, args)


def test_an_untouched_trail_verifies(db: tuple[Queue, Path]) -> None:
    queue, _ = db
    report = queue.verify_chain()
    assert report.ok and report.records >= 8
    head = queue.chain_head()
    assert head is not None and report.head is not None and report.head.hash == head.hash


def test_an_edited_record_is_named(db: tuple[Queue, Path]) -> None:
    queue, path = db
    sql(path, "UPDATE audit SET detail = 'approve by ana' WHERE id = 6")
    report = queue.verify_chain()
    assert not report.ok and report.first_bad_id == 6 and "edited" in report.problem


def test_an_edited_actor_is_named(db: tuple[Queue, Path]) -> None:
    queue, path = db
    sql(path, "UPDATE audit SET actor = 'bo' WHERE id = 7")
    report = queue.verify_chain()
    assert not report.ok and report.first_bad_id == 7


def test_a_deleted_record_is_named(db: tuple[Queue, Path]) -> None:
    queue, path = db
    sql(path, "DELETE FROM audit WHERE id = 4")
    report = queue.verify_chain()
    assert not report.ok and report.first_bad_id == 5
    assert "deleted" in report.problem and "4" in report.problem


def test_an_inserted_record_is_named(db: tuple[Queue, Path]) -> None:
    queue, path = db
    sql(path, "INSERT INTO audit (id, case_id, at, run_id, actor, event, detail) VALUES "
              "(100, 1, '2026-12-01T10:00:00.000000+00:00', NULL, 'ana', 'human_decision', "
              "'approve by ana')")
    report = queue.verify_chain()
    assert not report.ok and report.first_bad_id == 100 and "inserted" in report.problem


def test_a_copied_record_inserted_in_the_middle_is_named(db: tuple[Queue, Path]) -> None:
    """A forger who copies valid hashes into a gap is still caught by the next link."""
    queue, path = db
    sql(path, "DELETE FROM audit WHERE id = 5")  # make room, then re-insert a forgery
    with sqlite3.connect(path) as conn:
        prev = conn.execute("SELECT row_hash FROM audit WHERE id = 4").fetchone()[0]
        conn.execute("UPDATE audit SET id = 5 WHERE id = 6")  # shift: the chain breaks anyway
    report = queue.verify_chain()
    assert not report.ok and report.first_bad_id in (5, 6) and prev


def test_a_rewritten_tail_is_caught_against_the_head_an_old_report_saw(
        db: tuple[Queue, Path]) -> None:
    queue, path = db
    head = queue.chain_head()
    assert head is not None
    sql(path, "DELETE FROM audit WHERE id = ?", head.last_id)
    assert queue.verify_chain().ok  # alone, a deleted last record cannot be seen...
    report = queue.verify_chain((head.last_id, head.hash))  # ...but the report's head can
    assert not report.ok and report.first_bad_id == head.last_id


def test_records_chain_correctly_with_several_writers(queue_url: str) -> None:
    """SQLite serialises writers; PostgreSQL takes the chain's advisory lock."""
    queue = Queue(queue_url)

    def writer(n: int) -> None:
        other = Queue(queue.url)
        for i in range(10):
            other.store_requests([req(f"w{n}-{i}", f"ORD-2{n}{i:04d}")], f"run-{n}")
            cid = other.find_cases_by_order(f"ORD-2{n}{i:04d}")[0].id
            with other.session() as session:  # a single audit() record between bulk ones
                audit(session, cid, None, f"w{n}", None, None, "note", f"note {i}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = queue.verify_chain()
    assert report.ok and report.records == 60, report.problem


def test_audit_verify_command_exits_3_and_names_the_record(db: tuple[Queue, Path]) -> None:
    queue, path = db
    env = {"REFUND_BOTS_QUEUE_URL": queue.url}
    ok = CliRunner().invoke(app, ["audit", "verify"], env=env)
    assert ok.exit_code == 0, ok.output
    assert "intact" in ok.output
    sql(path, "UPDATE audit SET detail = 'x' WHERE id = 3")
    bad = CliRunner().invoke(app, ["audit", "verify"], env=env)
    assert bad.exit_code == 3 and "record 3" in bad.output


def test_forgetting_a_customer_erases_their_data_and_the_chain_still_verifies(
        db: tuple[Queue, Path]) -> None:
    queue, path = db
    env = {"REFUND_BOTS_QUEUE_URL": queue.url}
    refused = CliRunner().invoke(app, ["customers", "forget", "ada@example.com", "--agent",
                                       "ana"], env=env)
    assert refused.exit_code == 1 and "why" in refused.output  # a reason is required
    done = CliRunner().invoke(app, ["customers", "forget", "ada@example.com", "--agent", "ana",
                                    "-m", "GDPR art. 17 request #88"], env=env)
    assert done.exit_code == 0, done.output
    with sqlite3.connect(path) as conn:
        dump = "\n".join(str(r) for table in ("requests", "cases", "audit", "refund_intents")
                         for r in conn.execute(f"SELECT * FROM {table}"))  # noqa: S608
    # the phone's last six digits: a hex hash holds a bare "7700" about once in a hundred dumps
    assert "ada@example.com" not in dump and "Lovelace" not in dump and "900123" not in dump
    assert "12.00" in dump  # amounts stay
    report = queue.verify_chain()
    assert report.ok, report.problem
    sql(path, "UPDATE audit SET detail = 'sneaky' WHERE detail = '[erased]' AND id = 1")
    assert not queue.verify_chain().ok  # an erased record cannot be rewritten unnoticed
