"""Every workbook the project writes, rendered by LibreOffice (what staff print and file):
each converts to PDF, and the reconciliation's Summary prints on one page.

Needs `soffice` (Debian's libreoffice-calc) and `pdfinfo` (poppler-utils), installed by
scripts/test-services.sh; skipped without them, failing under CI=true.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import load_workbook
from test_escalations import escalated_case
from test_report import CASES, QUARANTINE, RUN

from bots.decide.simulate import Replay, write_comparison
from bots.queue import Queue
from bots.reports.audit_export import write_audit_export
from bots.reports.escalations import write_escalations
from bots.reports.reconcile import ReconRow, ReconStatus
from bots.reports.report import Books, BreakLine, CaseRow, write_report

pytestmark = pytest.mark.timeout(600)
TOOLS = ("soffice", "pdfinfo")


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"missing {missing}: run scripts/test-services.sh as root")
        pytest.skip(f"missing {missing}: run scripts/test-services.sh as root")


def to_pdf(xlsx: Path) -> Path:
    """Convert with a throwaway LibreOffice profile (parallel runs never share one)."""
    profile = xlsx.parent / f".lo-{xlsx.stem}"
    subprocess.run(["soffice", f"-env:UserInstallation=file://{profile}", "--headless",
                    "--convert-to", "pdf", "--outdir", str(xlsx.parent), str(xlsx)],
                   check=True, capture_output=True, timeout=300)
    pdf = xlsx.with_suffix(".pdf")
    assert pdf.exists() and pdf.stat().st_size > 1000, f"{xlsx.name} did not convert"
    return pdf


def pages(pdf: Path) -> int:
    out = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True)
    match = re.search(r"^Pages:\s+(\d+)", out.stdout, re.MULTILINE)
    assert match, out.stdout
    return int(match[1])


def only_sheet(path: Path, name: str) -> Path:
    wb = load_workbook(path)
    for ws in list(wb.worksheets):
        if ws.title != name:
            wb.remove(ws)
    out = path.with_name(f"{path.stem}-{name}.xlsx")
    wb.save(out)
    return out


def reconciliation(tmp_path: Path) -> Path:
    """A busy run: two currencies, breaks old and new, a long Cases sheet."""
    now = datetime(2026, 11, 29, 10, 45, tzinfo=UTC)
    cases = [CaseRow(**{**c.__dict__, "currency": "EUR" if i % 3 else "GBP",
                        "received_at": now - timedelta(days=i % 5), "decided_at": now,
                        "reason_category": "damaged"}) for i, c in enumerate(CASES * 6)]
    recon = [ReconRow(ReconStatus.DUPLICATE, "C-000001", "ORD-100001", "C000001-8f3a1c2b",
                      Decimal("10.00"), Decimal("10.00"), "RF-1", "RF-9",
                      "second refund for key C000001-8f3a1c2b", "EUR", date(2026, 11, 29),
                      "jsmith"),
             *[ReconRow(ReconStatus.MATCHED, f"C-{n:06d}", f"ORD-{n}", f"C{n:06d}-aa",
                        Decimal("10.00"), Decimal("10.00"), f"RF-{n}", f"RF-{n}", "",
                        "GBP" if n % 3 == 0 else "EUR", date(2026, 11, 29), "refund.bot")
               for n in range(2, 60)]]
    old = BreakLine("B-000001", "investigating", "missing in portal",
                    now - timedelta(days=3), 3, "bo", "2026-11-26", "C-000040", "ORD-1",
                    "", "GBP", Decimal("25.00"), "ledger records refund RF-40, portal has none")
    new = BreakLine("B-000002", "open", "duplicate", now, 0, "", "2026-11-29", "C-000001",
                    "ORD-100001", "RF-9", "EUR", Decimal("10.00"),
                    "second refund for key C000001-8f3a1c2b")
    books = Books(first_day=date(2026, 11, 29), last_day=date(2026, 11, 29), opening=[old],
                  closing=[old, new], new_breaks=1,
                  break_refs={recon[0].break_key: "B-000002"}, listing_size=59,
                  chain_head="812:" + "ab" * 32)
    return write_report(tmp_path / "reconciliation.xlsx", RUN, cases, recon, QUARANTINE, books)


def test_the_reconciliation_converts_and_its_summary_prints_on_one_page(tmp_path: Path) -> None:
    path = reconciliation(tmp_path)
    assert pages(to_pdf(path)) >= 2
    assert pages(to_pdf(only_sheet(path, "Summary"))) == 1


def test_escalations_simulation_and_audit_export_convert(tmp_path: Path) -> None:
    queue = Queue(f"sqlite:///{tmp_path / 'q.sqlite'}")
    for n in range(1, 6):
        escalated_case(queue, n)
    books = [
        write_escalations(tmp_path / "escalations.xlsx", queue.cases(), "run-1"),
        write_comparison(tmp_path / "simulation.xlsx", [
            Replay(f"C-{n:06d}", f"ORD-{n}", "refund", Decimal("40.00"), "reject",
                   Decimal("0.00"), "outside the 10-day window " * 4, "EUR")
            for n in range(30)], Path("strict.yaml")),
        write_audit_export(tmp_path / "audit.xlsx", queue,
                           datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)),
    ]
    for book in books:
        assert pages(to_pdf(book)) >= 1
        assert pages(to_pdf(only_sheet(book, load_workbook(book).sheetnames[0]))) == 1
