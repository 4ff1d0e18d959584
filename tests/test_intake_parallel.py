"""Reading file sources in worker processes stores exactly what a sequential read stores."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select

from bots.config import IntakeSettings
from bots.intake.sources import SourcePart, source_parts
from bots.queue import AuditRow, Queue, RequestRow
from bots.queue.schema import Case
from bots.runs import RunFolder
from bots.tools.bench import generate
from bots.work import pipeline
from bots.work.reading import AUTO_MIN_BYTES, auto_workers


def _intake(tmp_path: Path, name: str, sources: list[Any], workers: int) -> Queue:
    queue = Queue(f"sqlite:///{tmp_path / f'{name}.sqlite'}")
    run = RunFolder.create(tmp_path / f"runs-{name}")
    settings = IntakeSettings(sources=sources, workers=workers)
    try:
        stats = pipeline.run_intake(settings, queue, run)
        again = pipeline.run_intake(settings, queue, run)
    finally:
        run.close()
    assert stats.new_requests > 0 and again.new_requests == 0
    return queue


def _contents(queue: Queue) -> dict[str, list[tuple[Any, ...]]]:
    quarantine = sorted((q.channel, q.source_id, q.reason) for q in queue.quarantined())
    with queue.session() as s:
        return {
            "requests": [tuple(r) for r in s.execute(select(
                RequestRow.id, RequestRow.channel, RequestRow.source_id, RequestRow.case_id,
                RequestRow.order_number, RequestRow.requested_amount, RequestRow.doubts,
                RequestRow.language, RequestRow.reason_text).order_by(RequestRow.id))],
            "cases": [tuple(r) for r in s.execute(select(
                Case.id, Case.case_key, Case.priority, Case.requested_amount).order_by(Case.id))],
            "audit": [tuple(r) for r in s.execute(select(
                AuditRow.case_id, AuditRow.event, AuditRow.detail).order_by(AuditRow.id))],
            "quarantine": quarantine,
        }


@pytest.mark.timeout(600)  # two fresh interpreters load the language models
def test_workers_store_what_one_process_stores_in_the_same_order(tmp_path: Path) -> None:
    corpus = generate(tmp_path / "corpus", 600, seed=7)
    sources = [cfg for group in corpus.sources.values() for cfg in group]
    one = _contents(_intake(tmp_path, "one", sources, workers=0))
    two = _contents(_intake(tmp_path, "two", sources, workers=2))
    assert len(one["requests"]) > 500 and one["quarantine"]  # junk rows are in the corpus
    assert one == two


def _parts(sizes: list[int]) -> list[SourcePart]:
    cfg: Any = SimpleNamespace()
    return [SourcePart(cfg, Path(f"f{i}.csv"), size=n) for i, n in enumerate(sizes)]


def test_workers_start_only_when_the_files_repay_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    half = AUTO_MIN_BYTES // 2
    assert auto_workers(_parts([half, half - 1]), None) == 0  # small: read here
    assert auto_workers(_parts([half, half]), None) == 2
    assert auto_workers(_parts([AUTO_MIN_BYTES * 4]), None) == 0  # one file: nothing to share
    assert auto_workers(_parts([half] * 9), None) == 2  # no more than the CPUs
    assert auto_workers(_parts([1, 1, 1]), 3) == 3  # configured: as many as files allow
    assert auto_workers(_parts([1, 1]), 8) == 2 and auto_workers(_parts([1]), 8) == 0
    assert auto_workers(_parts([half, half]), 0) == 0  # 0 means never


def test_a_refused_or_missing_part_is_never_sent_to_a_worker(tmp_path: Path) -> None:
    from bots.intake.sources import ExportSourceConfig

    folder = tmp_path / "chat"
    folder.mkdir()
    (folder / "a.json").write_text("[]")
    os.mkfifo(folder / "b.json")
    parts = source_parts(ExportSourceConfig(kind="chat", path=folder))
    assert [p.splittable for p in parts] == [True, False]
    assert parts[1].problem is not None and "FIFO" in parts[1].problem.reason
    missing = source_parts(ExportSourceConfig(kind="chat", path=tmp_path / "nowhere"))
    assert [p.splittable for p in missing] == [False] and missing[0].problem is not None


def test_reading_a_file_again_triages_only_its_new_rows(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """An export that grows is read every run: the rows stored before cost parsing only."""
    import bots.intake.triage as triage_module
    from bots.intake.sources import SourceConfig

    sheet = tmp_path / "requests.csv"
    rows = ["Order #,E-mail,Amount,Reason"] + [
        f"ORD-1000{i:02d},c{i}@example.org,,broken mug {i}" for i in range(5)]
    sheet.write_text("\n".join(rows) + "\n")
    settings = IntakeSettings(sources=[SourceConfig(kind="spreadsheet", path=sheet)], workers=0)
    queue = Queue(f"sqlite:///{tmp_path / 'q.sqlite'}")
    triaged: list[str] = []
    real = triage_module.triage
    monkeypatch.setattr(triage_module, "triage",
                        lambda req: (triaged.append(req.source_id), real(req))[1])

    def intake() -> pipeline.IntakeStats:
        run = RunFolder.create(tmp_path / "runs")
        try:
            return pipeline.run_intake(settings, queue, run)
        finally:
            run.close()

    assert intake().new_requests == 5 and len(triaged) == 5
    triaged.clear()
    assert intake().already_seen == 5 and triaged == []
    sheet.write_text("\n".join([*rows, "ORD-100099,new@example.org,,URGENT broken"]) + "\n")
    stats = intake()
    assert (stats.new_requests, stats.already_seen, len(triaged)) == (1, 5, 1)
    with queue.session() as s:  # the new row still got its priority
        assert s.scalar(select(Case.priority).where(Case.order_number == "ORD-100099")) >= 1


def test_a_worker_triages_only_what_the_queue_does_not_hold(tmp_path: Path) -> None:
    from bots.intake.sources import SourceConfig
    from bots.work.reading import read_triaged

    sheet = tmp_path / "requests.csv"
    sheet.write_text("Order #,E-mail,Reason\nORD-100001,a@example.org,URGENT lawyer\n"
                     "ORD-100002,b@example.org,URGENT lawyer\n")
    [part] = source_parts(SourceConfig(kind="spreadsheet", path=sheet))
    queue = Queue(f"sqlite:///{tmp_path / 'q.sqlite'}")
    first = read_triaged(part)  # no queue named: everything is triaged
    assert [r.priority for r in first] == [3, 3]  # type: ignore[union-attr]
    queue.add_requests([first[0]], "r1")  # type: ignore[list-item]
    again = read_triaged(part, queue.url)
    assert [r.priority for r in again] == [0, 3]  # type: ignore[union-attr]
