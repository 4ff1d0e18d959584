"""Spreadsheets: read what a person sees, bounded (issue #12, section 2)."""

from __future__ import annotations

import io
import resource
import zipfile
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest

from bots.intake.spreadsheet import read_spreadsheet
from bots.intake.xlsx import MAX_ROWS
from bots.models import IntakeItem, Quarantined, RefundRequest

HEADER = ["Order #", "E-mail", "Amount"]


def book(*rows: list[object], title: str = "Refunds") -> openpyxl.Workbook:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = title
    ws.append(HEADER)
    for row in rows:
        ws.append(row)
    return wb


def save(wb: openpyxl.Workbook, path: Path, patch: dict[str, tuple[bytes, bytes]] | None = None
         ) -> Path:
    """Save, then rewrite parts of the XML as other tools write it (cached formula values)."""
    buf = io.BytesIO()
    wb.save(buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, \
            zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            for member, (old, new) in (patch or {}).items():
                if info.filename == member:
                    assert old in data, data[:500]
                    data = data.replace(old, new)
            dst.writestr(info, data)
    return path


def read(path: Path, **kw: object) -> list[IntakeItem]:
    return list(read_spreadsheet(path, **kw))  # type: ignore[arg-type]


def test_a_hidden_sheet_is_skipped_and_reported(tmp_path: Path) -> None:
    """Issue #12: a row on a hidden sheet was paid."""
    wb = book(["ORD-100001", "ada@example.org", 10])
    hidden = wb.create_sheet("Old")
    hidden.append(HEADER)
    hidden.append(["ORD-100002", "bo@example.org", 999])
    hidden.sheet_state = "hidden"
    items = read(save(wb, tmp_path / "h.xlsx"))
    requests = [i for i in items if isinstance(i, RefundRequest)]
    assert [r.order_number for r in requests] == ["ORD-100001"]
    (skipped,) = [i for i in items if isinstance(i, Quarantined)]
    assert "sheet 'Old'" in skipped.reason and "hidden" in skipped.reason


def test_hidden_rows_and_columns_are_not_read(tmp_path: Path) -> None:
    wb = book(["ORD-100001", "ada@example.org", 10], ["ORD-100002", "bo@example.org", 20])
    ws = wb.active
    assert ws is not None
    ws.row_dimensions[3].hidden = True
    ws["D1"], ws["D2"] = "Refund amount", 500  # a hidden, more specific amount column
    ws.column_dimensions["D"].hidden = True
    items = read(save(wb, tmp_path / "rows.xlsx"))
    requests = [i for i in items if isinstance(i, RefundRequest)]
    assert [(r.order_number, r.requested_amount) for r in requests] == [
        ("ORD-100001", Decimal("10.00"))]
    reasons = " / ".join(i.reason for i in items if isinstance(i, Quarantined))
    assert "row 3" in reasons and "hidden" in reasons and "column(s) D" in reasons


SHEET = "xl/worksheets/sheet1.xml"


def _formula_book(tmp_path: Path, cached: bool) -> Path:
    wb = book(["ORD-100001", "ada@example.org", "=2*10"])
    old = b"<f>2*10</f><v></v>"
    return save(wb, tmp_path / f"f{cached}.xlsx",
                {SHEET: (old, b"<f>2*10</f><v>20</v>" if cached else b"<f>2*10</f>")})


def test_a_formula_without_a_saved_result_is_quarantined(tmp_path: Path) -> None:
    (item,) = read(_formula_book(tmp_path, cached=False))
    assert isinstance(item, Quarantined) and "formula with no saved result" in item.reason


def test_a_saved_formula_result_is_used_only_when_trusted(tmp_path: Path) -> None:
    path = _formula_book(tmp_path, cached=True)
    (item,) = read(path)
    assert isinstance(item, Quarantined) and "trust_formula_results" in item.reason
    (trusted,) = read(path, trust_formula_results=True)
    assert isinstance(trusted, RefundRequest) and trusted.requested_amount == Decimal("20.00")


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_tiny_file_declaring_a_huge_sheet_is_quarantined_in_bounded_memory(
        tmp_path: Path) -> None:
    """Issue #12: 4.9 KB declaring A1:XFD1048576 used 4.6 GB and was killed."""
    wb = book(["ORD-100001", "ada@example.org", 10])
    path = save(wb, tmp_path / "bomb.xlsx", {SHEET: (b'<dimension ref="A1:C2"/>',
                                                     b'<dimension ref="A1:XFD1048576"/>')})
    assert path.stat().st_size < 10_000
    before = _max_rss_mb()
    (item,) = read(path)
    assert isinstance(item, Quarantined) and "1,048,576 rows" in item.reason
    assert _max_rss_mb() - before < 200


def test_a_far_away_cell_without_a_declared_dimension_is_bounded(tmp_path: Path) -> None:
    wb = book(["ORD-100001", "ada@example.org", 10])
    ws = wb.active
    assert ws is not None
    ws.cell(MAX_ROWS + 5, 3, 1)
    path = save(wb, tmp_path / "far.xlsx", {SHEET: (b'<dimension ref="A1:C200005"/>', b"")})
    before = _max_rss_mb()
    items = read(path)
    assert len(items) == 1 and isinstance(items[0], Quarantined), items
    assert "more than" in items[0].reason and _max_rss_mb() - before < 300


@pytest.mark.parametrize("setting", ["file", "sheets"])
def test_workbook_bounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    import bots.intake.xlsx as xlsx

    wb = book(["ORD-100001", "ada@example.org", 10])
    wb.create_sheet("Two")
    path = save(wb, tmp_path / "b.xlsx")
    monkeypatch.setattr(xlsx, "MAX_BYTES" if setting == "file" else "MAX_SHEETS",
                        100 if setting == "file" else 1)
    (item,) = read(path)
    assert isinstance(item, Quarantined)
    assert ("MB" if setting == "file" else "2 sheets") in item.reason


def test_excel_serial_and_us_dates_are_dates(tmp_path: Path) -> None:
    path = tmp_path / "dates.csv"
    path.write_text("Order #,E-mail,Date\nORD-100001,a@example.org,46000\n"
                    "ORD-100002,b@example.org,11/28/2026\n")
    first, second = read(path)
    assert isinstance(first, RefundRequest) and isinstance(second, RefundRequest)
    assert first.received_at.date().isoformat() == "2025-12-09"
    assert second.received_at.date().isoformat() == "2026-11-28"


@pytest.mark.parametrize("cells", [
    ("e.g. ORD-123456", "name@example.com", "10.00", "what the customer says"),
    ("ORD-123456", "name@example.com", "10.00", "Example: the item arrived broken"),
    ("ORD-123456", "name@example.com", "", "z.B. kaputt angekommen"),
])
def test_the_template_row_of_an_ops_sheet_is_not_a_request(tmp_path: Path,
                                                          cells: tuple[str, ...]) -> None:
    path = tmp_path / "ops.csv"
    path.write_text("Order #,E-mail,Amount,Reason\n" + ",".join(cells) + "\n"
                    "ORD-100001,ada@example.org,12.00,broken\n")
    example, real = read(path)
    assert isinstance(example, Quarantined) and "template row" in example.reason
    assert isinstance(real, RefundRequest)
