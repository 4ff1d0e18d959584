"""Reading sources part by part, and triaging only what the queue does not hold yet."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from bots.config import IntakeSettings
from bots.intake.sources import read_part, source_parts
from bots.queue import Queue
from bots.queue.schema import Case
from bots.runs import RunFolder
from bots.work import pipeline


def test_a_folder_is_read_file_by_file_and_refused_files_are_never_read(
        tmp_path: Path) -> None:
    from bots.intake.sources import ExportSourceConfig

    folder = tmp_path / "chat"
    folder.mkdir()
    (folder / "a.json").write_text("[]")
    os.mkfifo(folder / "b.json")
    parts = source_parts(ExportSourceConfig(kind="chat", path=folder))
    assert [p.file.name if p.file else None for p in parts] == ["a.json", None]
    assert parts[1].problem is not None and "FIFO" in parts[1].problem.reason
    assert list(read_part(parts[1])) == [parts[1].problem]  # quarantined, never opened
    missing = source_parts(ExportSourceConfig(kind="chat", path=tmp_path / "nowhere"))
    assert [p.file for p in missing] == [None] and missing[0].problem is not None


def test_reading_a_file_again_triages_and_stores_only_its_new_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An export that grows is read every run: the rows stored before cost parsing only."""
    import bots.intake.triage as triage_module
    from bots.intake.sources import SourceConfig

    sheet = tmp_path / "requests.csv"
    rows = ["Order #,E-mail,Amount,Reason"] + [
        f"ORD-1000{i:02d},c{i}@example.org,,broken mug {i}" for i in range(5)]
    sheet.write_text("\n".join(rows) + "\n")
    settings = IntakeSettings(sources=[SourceConfig(kind="spreadsheet", path=sheet)])
    queue = Queue(f"sqlite:///{tmp_path / 'q.sqlite'}")
    triaged: list[str] = []
    real = triage_module._triaged
    monkeypatch.setattr(triage_module, "_triaged", lambda req, language: (
        triaged.append(req.source_id), real(req, language))[1])
    stored: list[str] = []  # and only they are stored (no write transaction for the others)
    store = queue.store_requests
    monkeypatch.setattr(queue, "store_requests", lambda reqs, run_id: (
        stored.extend(r.source_id for r in reqs), store(reqs, run_id))[1])

    def intake() -> pipeline.IntakeStats:
        run = RunFolder.create(tmp_path / "runs")
        try:
            return pipeline.run_intake(settings, queue, run)
        finally:
            run.close()

    assert intake().new_requests == 5 and len(triaged) == 5 == len(stored)
    triaged.clear()
    stored.clear()
    assert intake().already_seen == 5 and triaged == [] == stored
    sheet.write_text("\n".join([*rows, "ORD-100099,new@example.org,,URGENT broken"]) + "\n")
    stats = intake()
    assert (stats.new_requests, stats.already_seen, len(triaged)) == (1, 5, 1)
    assert stored == triaged
    with queue.session() as s:  # the new row still got its priority
        assert s.scalar(select(Case.priority).where(Case.order_number == "ORD-100099")) >= 1
