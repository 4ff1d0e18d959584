"""The bulk path intake stores with (`bots.queue.bulk`): the same rows as the ORM's, on
both backends, nothing silently NULL, and secrets masked in what it writes."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Table, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bots.models import RefundRequest
from bots.queue import Queue, intake
from bots.queue.bulk import CHUNK, find_in, insert_rows, insert_values, new_ids, update_values
from bots.queue.schema import AuditRow, Case, RequestRow

CASES = Case.__table__
assert isinstance(CASES, Table)
CARD = "4111 1111 1111 1111"
AWKWARD = "tab\there, new\nline, back\\slash, quote \" ' , null-ish \\N, émoji 🙂, ; and ,"


@pytest.fixture
def queue(queue_url: str) -> Queue:
    return Queue(queue_url)


def _case_row(key: str, **changes: object) -> dict[str, object]:
    now = datetime(2026, 12, 2, 9, 30, 15, 123456, tzinfo=UTC)
    row: dict[str, object] = dict(
        case_key=key, order_number="ORD-1", customer_email=None, customer_name=AWKWARD,
        requested_amount=Decimal("1234.50"), currency="EUR", state="queued", priority=2,
        follows=None, attempts=0, lease_token=0, created_at=now, updated_at=now)
    row.update(changes)
    return row


def test_rows_read_back_as_the_orm_wrote_them(queue: Queue) -> None:
    """Money, UTC times, NULLs and text that COPY must escape survive the bulk path."""
    with queue.session() as s:
        insert_rows(s.connection(), CASES, [_case_row("a"), _case_row(
            "b", requested_amount=None, customer_name=None, order_number=None)])
    with queue.session() as s:
        a, b = (s.scalars(select(Case).where(Case.case_key == k)).one() for k in "ab")
        assert a.customer_name == AWKWARD
        assert a.requested_amount == Decimal("1234.50")
        assert a.created_at == datetime(2026, 12, 2, 9, 30, 15, 123456, tzinfo=UTC)
        assert (a.priority, a.attempts, a.state) == (2, 0, "queued")
        assert (b.requested_amount, b.customer_name, b.order_number) == (None, None, None)
        assert b.id > a.id  # inserted in the given order


def test_a_row_lacking_a_defaulted_column_is_refused(queue: Queue) -> None:
    """The ORM would have filled in `attempts`; a bulk insert never leaves it NULL silently."""
    row = _case_row("a")
    del row["attempts"]
    with queue.session() as s, pytest.raises(ValueError, match="attempts"):
        insert_rows(s.connection(), CASES, [row])
    with queue.session() as s, pytest.raises(ValueError, match="no column colour"):
        insert_rows(s.connection(), CASES, [_case_row("b", colour="red")])


def test_rows_as_tuples_read_back_as_rows_as_dicts(queue: Queue) -> None:
    """`insert_values` (what intake stores requests with) writes what `insert_rows` writes,
    and refuses a row with a value too many or too few instead of shifting the columns."""
    names = list(_case_row("x"))
    with queue.session() as s:
        insert_rows(s.connection(), CASES, [_case_row("a")])
        insert_values(s.connection(), CASES, names, [tuple(_case_row("b").values())])
    with queue.session() as s:
        a, b = (s.scalars(select(Case).where(Case.case_key == k)).one() for k in "ab")
        for column in names:
            if column not in ("case_key",):
                assert getattr(a, column) == getattr(b, column), column
    for row in [tuple(_case_row("c").values())[:-1], (*_case_row("c").values(), 1)]:
        with queue.session() as s, pytest.raises(ValueError, match="13 values"):
            insert_values(s.connection(), CASES, names, [tuple(_case_row("d").values()), row])


def test_nothing_to_insert_is_nothing(queue: Queue) -> None:
    with queue.session() as s:
        insert_rows(s.connection(), CASES, [])
        assert s.scalar(select(Case.id)) is None


def test_a_card_in_a_source_reference_is_masked_in_the_request_and_its_audit(
        queue: Queue) -> None:
    """A file name or subject can quote a card: never stored in clear, in either table."""
    req = RefundRequest(channel="portal", source_id="p-1", source_ref=f"form card {CARD}.json",
                        received_at=datetime(2026, 12, 1, tzinfo=UTC), reason_text=AWKWARD,
                        order_number="ORD-100001")
    plain = RefundRequest(channel="portal", source_id="p-2", source_ref="form-2.json",
                          received_at=datetime(2026, 12, 1, tzinfo=UTC), reason_text="hi",
                          order_number="ORD-100002")
    queue.add_requests([req, plain], "run-1")
    with queue.session() as s:
        refs = dict(s.execute(select(RequestRow.source_id, RequestRow.source_ref)).all())
        details = list(s.scalars(select(AuditRow.detail).order_by(AuditRow.id)))
        texts = list(s.scalars(select(RequestRow.reason_text)))
    assert CARD not in refs["p-1"] and "1111 1111" not in refs["p-1"]
    assert refs["p-2"] == "form-2.json"
    assert len(details) == 2 and "1111 1111" not in details[0]
    assert "form-2.json" in details[1]
    assert AWKWARD in texts
    assert queue.verify_chain().ok


def test_find_in_answers_every_match_across_chunks_and_filters(queue: Queue) -> None:
    """More keys than one IN (...) holds, a filter on another column, keys not stored."""
    keys = [f"k{i:04}" for i in range(CHUNK * 2 + 7)]
    rows = [_case_row(k, state="done" if i % 3 == 0 else "queued") for i, k in enumerate(keys)]
    with queue.session() as s:
        insert_rows(s.connection(), CASES, rows)
    asked = [*keys, "missing", "k 0001"]
    with queue.session() as s:
        found = dict(find_in(s.connection(), CASES, ("case_key", "state"), "case_key", asked))
        done = find_in(s.connection(), CASES, ("case_key",), "case_key", asked, state="done")
        assert find_in(s.connection(), CASES, ("id",), "case_key", []) == []
    assert found == {k: r["state"] for k, r in zip(keys, rows, strict=True)}
    assert sorted(k for (k,) in done) == keys[::3]


def test_other_drivers_get_sqlalchemys_own_statements(queue: Queue,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver the fast paths do not know (pg8000, psycopg2...) still stores and finds."""
    with queue.session() as s:
        conn = s.connection()
        monkeypatch.setattr(conn.dialect, "driver", "another")
        insert_rows(conn, CASES, [_case_row("a"), _case_row("b", customer_name=None)])
        found = find_in(conn, CASES, ("case_key", "customer_name"), "case_key",
                        ["a", "b", "c"], state="queued")
    assert sorted(found) == [("a", AWKWARD), ("b", None)]


def test_a_bulk_load_refreshes_planner_statistics_after_it(
        queue: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: once after storing ANALYZE_EVERY requests or more at once, else never;
    while it loads, its lookups by key never scan whole tables (the planner may take a
    table that grew from empty in this load for empty)."""
    analyzed: list[int] = []
    real = Queue._analyze

    def counting(self: Queue) -> None:
        analyzed.append(1)
        real(self)

    monkeypatch.setattr(intake, "ANALYZE_EVERY", 4)
    monkeypatch.setattr(Queue, "_analyze", counting)
    reqs = [RefundRequest(channel="chat", source_id=f"c-{i}", order_number=f"ORD-2000{i:02d}",
                          received_at=datetime(2026, 12, 1, tzinfo=UTC), reason_text="refund")
            for i in range(11)]
    seqscan: list[str] = []
    real_store = intake._store

    def store(s: Session, batch: list[RefundRequest], run_id: str | None) -> object:
        if queue.dialect == "postgresql":
            seqscan.append(s.execute(text("SHOW enable_seqscan")).scalar_one())
        return real_store(s, batch, run_id)

    monkeypatch.setattr(intake, "_store", store)
    queue.store_requests(reqs[:3], "run-1", batch=2)  # not a bulk load
    assert analyzed == []
    queue.store_requests(reqs, "run-1", batch=3)  # 3 (3 seen), 6, 9, 11: then analyze
    assert len(analyzed) == (1 if queue.dialect == "postgresql" else 0)
    assert seqscan == (["off"] * 6 if queue.dialect == "postgresql" else [])
    with queue.session() as s:  # the setting was the intake's transactions' own
        assert queue.dialect != "postgresql" or s.execute(
            text("SHOW enable_seqscan")).scalar_one() == "on"
    assert queue.insert_batch == (5_000 if queue.dialect == "postgresql" else 2_000)


def test_an_intake_run_that_makes_a_bulk_load_refreshes_the_statistics_once(
        queue: Queue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_intake stores in batches smaller than a bulk load: the whole run counts, and
    PostgreSQL's own statistics show the ANALYZE (a repeat that stores nothing: none)."""
    from bots.config import IntakeSettings
    from bots.intake.sources import SourceConfig
    from bots.runs import RunFolder
    from bots.work import pipeline

    monkeypatch.setattr(intake, "ANALYZE_EVERY", 6)
    monkeypatch.setattr(Queue, "insert_batch", 4)
    sheet = tmp_path / "s.csv"
    with sheet.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["order_number", "customer_email", "amount", "reason"])
        writer.writerows([f"ORD-3000{i:02d}", f"c{i}@example.org", "", "refund please"]
                         for i in range(7))
    settings = IntakeSettings(sources=[SourceConfig(kind="spreadsheet", path=sheet)],
                              readers=0)

    def analyzed() -> int:
        if queue.dialect != "postgresql":
            return 0
        with queue.engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'cases'"
            )).scalar_one())

    before = analyzed()
    run = RunFolder.create(tmp_path / "runs")
    try:
        assert pipeline.run_intake(settings, queue, run).new_requests == 7
        once = analyzed()
        assert pipeline.run_intake(settings, queue, run).new_requests == 0
        log = (run.path / "run.log").read_text(encoding="utf-8")
    finally:
        run.close()
    assert once - before == (1 if queue.dialect == "postgresql" else 0)
    assert analyzed() == once  # nothing new: nothing to refresh
    assert ("planner statistics refreshed after 7 new requests" in log) is (
        queue.dialect == "postgresql")


def test_a_duplicate_key_is_sqlalchemys_integrity_error(queue: Queue) -> None:
    """What a batch that lost a race to another intake catches to plan again."""
    with queue.session() as s:
        insert_rows(s.connection(), CASES, [_case_row("a")])
    with pytest.raises(IntegrityError), queue.session() as s:  # the session rolls back
        insert_rows(s.connection(), CASES, [_case_row("b"), _case_row("a")])
    with queue.session() as s:
        assert list(s.scalars(select(Case.case_key))) == ["a"]  # the batch left nothing


def test_update_values_sets_only_the_columns_named_on_the_rows_named(queue: Queue) -> None:
    """What intake writes back on stored cases: money, times, NULLs and awkward text, one
    statement whatever the number of rows; other columns and rows untouched."""
    keys = [f"k{i:04}" for i in range(CHUNK + 3)]
    with queue.session() as s:
        insert_rows(s.connection(), CASES, [_case_row(k) for k in keys])
    with queue.session() as s:
        ids = dict(find_in(s.connection(), CASES, ("case_key", "id"), "case_key", keys))
    later = datetime(2026, 12, 4, 2, 0, 0, 1, tzinfo=UTC)
    rows = [(ids[k], AWKWARD if i % 2 else None, Decimal("0.01") * i, later)
            for i, k in enumerate(keys[1:], start=1)]
    with queue.session() as s:
        update_values(s.connection(), CASES, "id",
                      ("customer_email", "requested_amount", "updated_at"), rows)
        update_values(s.connection(), CASES, "id", ("priority",), [])
    with queue.session() as s:
        cases = {c.case_key: c for c in s.scalars(select(Case))}
    first = cases[keys[0]]
    assert (first.customer_email, first.requested_amount) == (None, Decimal("1234.50"))
    assert first.updated_at == datetime(2026, 12, 2, 9, 30, 15, 123456, tzinfo=UTC)
    for i, k in enumerate(keys[1:], start=1):
        case = cases[k]
        assert case.customer_email == (AWKWARD if i % 2 else None)
        assert case.requested_amount == Decimal("0.01") * i
        assert case.updated_at == later
        assert (case.customer_name, case.priority, case.state) == (AWKWARD, 2, "queued")


def test_update_values_refuses_what_it_cannot_write(queue: Queue,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown column, a row of the wrong width: refused before anything is written;
    another driver still updates through SQLAlchemy."""
    with queue.session() as s:
        insert_rows(s.connection(), CASES, [_case_row("a"), _case_row("b")])
    with queue.session() as s:
        ids = dict(find_in(s.connection(), CASES, ("case_key", "id"), "case_key", ["a", "b"]))
        with pytest.raises(ValueError, match="no column colour"):
            update_values(s.connection(), CASES, "id", ("colour",), [(ids["a"], "red")])
        with pytest.raises(ValueError, match="2 values"):
            update_values(s.connection(), CASES, "id", ("priority",), [(ids["a"], 1, 2)])
    with queue.session() as s:
        conn = s.connection()
        monkeypatch.setattr(conn.dialect, "driver", "another")
        update_values(conn, CASES, "id", ("priority", "currency"), [(ids["b"], 7, "USD")])
    with queue.session() as s:
        found = {c.case_key: (c.priority, c.currency) for c in s.scalars(select(Case))}
    assert found == {"a": (2, "EUR"), "b": (7, "USD")}


def test_new_ids_come_from_the_tables_sequence_on_postgresql(queue: Queue) -> None:
    """PostgreSQL: ascending, unused, and never given again to a row inserted without one;
    SQLite gives keys only as rows go in (None)."""
    with queue.session() as s:
        ids = new_ids(s.connection(), CASES, 3)
        if queue.dialect != "postgresql":
            assert ids is None
            return
        assert ids is not None and len(set(ids)) == 3 and ids == sorted(ids)
        assert new_ids(s.connection(), CASES, 0) is None
        insert_rows(s.connection(), CASES, [{"id": ids[1], **_case_row("mine")}])
        insert_rows(s.connection(), CASES, [_case_row("later")])
    with queue.session() as s:
        found = dict(s.execute(select(Case.case_key, Case.id)).all())
    assert found["mine"] == ids[1] and found["later"] > ids[-1]
