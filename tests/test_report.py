from __future__ import annotations

import re
import zipfile
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook, load_workbook

from bots.models import Quarantined
from bots.reports.excel_safe import (
    EXCEL_MAX_CHARS,
    MONEY_FORMAT,
    force_text,
    needs_guard,
    neutralise,
    write_cell,
)
from bots.reports.reconcile import ReconRow, ReconStatus
from bots.reports.report import SHEETS, CaseRow, RunInfo, read_report, write_report

S = ReconStatus
LONG = "x" * 10_000
HOSTILE = {
    "hyperlink": '=HYPERLINK("http://evil","x")',
    "dde": "+cmd|' /C calc'!A0",
    "at": "@SUM(1)",
    "minus": "-2+3",
    "fullwidth": "＝1+1",
    "pipe": "|calc",
    "tab": "\t=1+1",
}
RUN = RunInfo(run_id="20261129-101500-a1b2",
              started_at=datetime(2026, 11, 29, 10, 15, tzinfo=UTC),
              finished_at=datetime(2026, 11, 29, 10, 45, 30, tzinfo=UTC),
              orders_url="http://127.0.0.1:5001", payments_url="http://127.0.0.1:5002")


def case(n: int, outcome: str = "refunded", channels: str = "email",
         requested: str | None = "10.00", approved: str | None = "10.00",
         reason: str = "within 30 days", customer: str = "Ada Lovelace") -> CaseRow:
    return CaseRow(case_ref=f"C-{n:06d}", channels=channels, customer=customer,
                   customer_email=f"c{n}@example.com", order_number=f"ORD-{100000 + n}",
                   requested=Decimal(requested) if requested else None,
                   approved=Decimal(approved) if approved else None,
                   refund_number=f"R-{n}" if outcome in ("refunded", "partial") else None,
                   outcome=outcome, reason=reason, attempts=1, sources=1)


def recon(status: ReconStatus, n: int, ledger: str | None = "10.00",
          portal: str | None = "10.00", note: str = "") -> ReconRow:
    return ReconRow(status=status, case_ref=f"C-{n:06d}" if ledger else None,
                    order_number=f"ORD-{100000 + n}", reference=f"C{n:06d}-ab",
                    ledger_amount=Decimal(ledger) if ledger else None,
                    portal_amount=Decimal(portal) if portal else None,
                    ledger_refund_number=f"R-{n}" if ledger else None,
                    portal_refund_id=f"R-{n}" if portal else None, note=note)


CASES = [
    *[case(i, reason=text, customer=f"hostile {name}") for i, (name, text)
      in enumerate(HOSTILE.items(), start=1)],
    case(20, "partial", "email, spreadsheet", "100.00", "60.00", reason="bell\x07 nul\x00 ok"),
    case(21, "rejected", "chat", "1234.5", None, reason=LONG),
    case(22, "escalated", "spreadsheet, email", None, None),
    case(23, "failed", "", "5.00", None),
]
RECON = [
    recon(S.MISSING_IN_PORTAL, 30, portal=None, note="outcome unknown"),
    recon(S.NOT_IN_LEDGER, 31, ledger=None, portal="7.25", note='made by =cmd|"x"'),
    recon(S.MATCHED, 1),
    recon(S.MATCHED, 20, "60.00", "60.00"),
]
QUARANTINE = [Quarantined(channel="email", source_id="<m1@x>", reason="no order number",
                          excerpt="@SUM(A1:A9)", source_ref="INBOX/17"),
              Quarantined(channel="spreadsheet", source_id="f:3", reason="bad amount",
                          excerpt="-1e9", source_ref="req.xlsx!Sheet1!4")]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("run") / "reconciliation.xlsx"
    assert write_report(path, RUN, CASES, RECON, QUARANTINE) == path
    return path


def sheet_xml(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n).decode() for n in zf.namelist()
                if n.startswith("xl/worksheets/") and n.endswith(".xml")}


def summary(path: Path) -> dict[tuple[str, str], object]:
    return {(r["Section"], r["Item"]): r["Value"] for r in read_report(path)["Summary"]}


# -- excel_safe ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [*HOSTILE.values(), "＋1", "－1", "＠x", "  =1", "\x00=1",
                                  "\n\n-1", "\r=1", "\u3000=1"])
def test_formula_like_text_gets_a_visible_guard(text: str) -> None:
    out = neutralise(text)
    assert isinstance(out, str) and out.startswith("'")
    assert needs_guard(text)


@pytest.mark.parametrize("text", ["", "Ada", "order ORD-1 = broken", "a+b", "'=1", "5 - 2",
                                  "refund please!", "C000012-8f3a1c2b"])
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert neutralise(text) == text


@pytest.mark.parametrize("value", [None, -2, -2.5, Decimal("-10.00"), 0, True,
                                   date(2026, 1, 2), datetime(2026, 1, 2, 3, 4)])
def test_numbers_and_dates_are_untouched(value: object) -> None:
    assert neutralise(value) is value


def test_control_characters_are_stripped_but_tabs_and_newlines_kept() -> None:
    assert neutralise("a\x00b\x07c\x1bd\x7fe\x85f\tg\nh") == "abcdef\tg\nh"
    assert neutralise("line1\r\nline2\rline3") == "line1\nline2\nline3"
    assert neutralise("bad \ud800 surrogate \uffff") == "bad \ufffd surrogate \ufffd"


def test_guard_is_idempotent() -> None:
    once = neutralise("=1+1")
    assert neutralise(once) == once == "'=1+1"


def test_force_text_never_writes_a_formula_or_error_cell(tmp_path: Path) -> None:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    force_text(ws["A1"], "=1+1")
    force_text(ws["A2"], "#N/A")
    ws["A3"] = "=1+1"  # control: what openpyxl does unasked
    path = tmp_path / "f.xlsx"
    wb.save(path)
    xml = "".join(sheet_xml(path).values())
    assert xml.count("<f>") == 1  # only the control cell
    back = load_workbook(path).active
    assert back is not None
    assert [back["A1"].data_type, back["A2"].data_type] == ["s", "s"]
    assert (back["A1"].value, back["A2"].value) == ("=1+1", "#N/A")


def test_write_cell_types_money_and_aware_datetimes() -> None:
    ws = Workbook().create_sheet("t")
    money_cell = write_cell(ws, 1, 1, Decimal("-12.50"), MONEY_FORMAT)
    assert money_cell.data_type == "n" and money_cell.number_format == MONEY_FORMAT
    when = write_cell(ws, 1, 2, datetime(2026, 11, 29, 11, 0, tzinfo=UTC))
    assert when.value == datetime(2026, 11, 29, 11, 0) and when.is_date


def test_text_longer_than_excel_allows_is_cut_and_says_so() -> None:
    ws = Workbook().create_sheet("t")
    cell = write_cell(ws, 1, 1, "=" + "y" * 40_000)
    assert len(cell.value) == EXCEL_MAX_CHARS
    assert cell.value.startswith("'=yyy")
    assert "truncated, 40002 characters" in cell.value  # the guard counts


# -- workbook --------------------------------------------------------------------------------


def test_sheets_in_order(report: Path) -> None:
    assert load_workbook(report, read_only=True).sheetnames == list(SHEETS) == [
        "Summary", "Cases", "Reconciliation", "Breaks", "Quarantine"]


def test_no_formula_anywhere_in_the_sheet_xml(report: Path) -> None:
    xml = sheet_xml(report)
    assert len(xml) == 5
    for name, body in xml.items():
        assert not re.search(r"<f[ >/]", body), name


def test_hostile_text_reads_back_as_visible_guarded_strings(report: Path) -> None:
    ws = load_workbook(report)["Cases"]
    headers = [c.value for c in ws[1]]
    reason = headers.index("Reason") + 1
    by_case = {ws.cell(r, 1).value: ws.cell(r, reason) for r in range(2, ws.max_row + 1)}
    for i, text in enumerate(HOSTILE.values(), start=1):
        cell = by_case[f"C-{i:06d}"]
        assert cell.data_type == "s"
        assert cell.value == "'" + text, (cell.value, text)  # the original, visibly guarded
    assert by_case["C-000020"].value == "bell nul ok"
    assert by_case["C-000021"].value == LONG


def test_hostile_text_in_other_sheets_is_guarded(report: Path) -> None:
    data = read_report(report)
    assert data["Reconciliation"][1]["Note"] == "made by =cmd|\"x\""  # not at the start: fine
    excerpts = [r["Excerpt"] for r in data["Quarantine"]]
    assert excerpts == ["'@SUM(A1:A9)", "'-1e9"]


def test_money_cells_are_numbers_with_the_money_format(report: Path) -> None:
    wb = load_workbook(report)
    checks = {"Cases": ("Requested", "Approved"),
              "Reconciliation": ("Ledger amount", "Portal amount")}
    for sheet, columns in checks.items():
        ws = wb[sheet]
        headers = [c.value for c in ws[1]]
        for column in columns:
            cells = [row[headers.index(column)] for row in ws.iter_rows(min_row=2)]
            filled = [c for c in cells if c.value is not None]
            assert filled, (sheet, column)
            for c in filled:
                assert isinstance(c.value, int | float) and c.data_type == "n"
                assert c.number_format == MONEY_FORMAT
    requested = {r["Case"]: r["Requested"] for r in read_report(report)["Cases"]}
    assert requested["C-000021"] == Decimal("1234.50")
    assert requested["C-000022"] is None


def test_every_sheet_has_bold_frozen_filtered_header_and_capped_widths(report: Path) -> None:
    wb = load_workbook(report)
    for ws in wb.worksheets:
        assert ws.freeze_panes == "A2"
        assert ws.auto_filter.ref and ws.auto_filter.ref.startswith("A1:")
        assert all(c.font.bold for c in ws[1])
        widths = [d.width for d in ws.column_dimensions.values()]
        # Stored widths carry Excel's cell padding (XlsxWriter: 60 characters -> 60.71).
        assert widths and max(widths) <= 60.72


def test_summary_run_facts_are_real_dates_and_text(report: Path) -> None:
    s = summary(report)
    assert s[("Run", "Run id")] == RUN.run_id
    assert s[("Run", "Started (UTC)")] == datetime(2026, 11, 29, 10, 15)
    assert s[("Run", "Finished (UTC)")] == datetime(2026, 11, 29, 10, 45, 30)
    assert s[("Run", "Payment portal URL")] == "http://127.0.0.1:5002"
    assert s[("Run", "Mode")] == "live"


def test_summary_counts(report: Path) -> None:
    s = summary(report)
    assert s[("Cases", "Total cases")] == len(CASES) == 11
    outcomes = {k[1]: v for k, v in s.items() if k[0] == "Cases by outcome"}
    assert outcomes == {"refunded": 7, "partial": 1, "rejected": 1, "escalated": 1,
                        "failed": 1, "queued": 0}
    channels = {k[1]: v for k, v in s.items() if k[0] == "Cases by channel"}
    assert channels == {"email": 9, "spreadsheet": 2, "chat": 1, "(none)": 1}
    recon_counts = {k[1]: v for k, v in s.items() if k[0] == "Reconciliation"}
    assert recon_counts == {str(S.MATCHED): 2, str(S.MISSING_IN_PORTAL): 1,
                            str(S.NOT_IN_LEDGER): 1, str(S.AMOUNT_MISMATCH): 0,
                            str(S.DUPLICATE): 0, str(S.OVER_REFUNDED): 0,
                            str(S.UNCONFIRMED): 0, str(S.UNVERIFIED): 0,
                            str(S.IN_FLIGHT): 0, str(S.NOTE_MISSING): 0,
                            str(S.ORPHAN_NOTE): 0, str(S.NOTES_UNVERIFIED): 0}
    assert s[("Quarantine", "Quarantined inputs")] == 2
    assert s[("Result", "Reconciliation")] == (
        "Reconciliation: 2 problem(s) — see Reconciliation sheet")


def test_summary_channel_note_says_multi_channel_cases_count_per_channel(report: Path) -> None:
    rows = [r for r in read_report(report)["Summary"] if r["Section"] == "Cases by channel"]
    assert "once per channel" in rows[0]["Note"]


def test_summary_money_totals(report: Path) -> None:
    s = summary(report)
    # 7 x 10.00 + 100.00 + 1234.50 + 5.00 (one case states no amount)
    assert s[("Money", "Requested")] == Decimal("1409.50")
    assert s[("Money", "Approved")] == Decimal("130.00")
    assert s[("Money", "Refunded in portal")] == Decimal("70.00")  # matched rows only


def test_clean_run_says_reconciliation_ok(tmp_path: Path) -> None:
    path = write_report(tmp_path / "r.xlsx", RunInfo(**{**RUN.__dict__, "dry_run": True}),
                        [], [recon(S.MATCHED, 1)], [])
    s = summary(path)
    assert s[("Result", "Reconciliation")] == "Reconciliation: OK"
    assert s[("Run", "Mode")].startswith("dry run")
    data = read_report(path)
    assert list(data) == list(SHEETS)
    assert data["Cases"] == [] and data["Quarantine"] == []


def test_write_is_atomic_and_leaves_no_temp_file(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.xlsx"
    write_report(path, RUN, [case(1)], [], [])
    before = path.read_bytes()

    def boom(self: Any) -> None:  # half a file written, then the disk goes
        Path(self.filename).write_bytes(b"PK\x03\x04 half")
        raise RuntimeError("disk gone")

    monkeypatch.setattr("xlsxwriter.Workbook.close", boom)
    with pytest.raises(RuntimeError):
        write_report(path, RUN, CASES, RECON, QUARANTINE)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.xlsx"]


def test_the_printable_fast_path_guards_exactly_like_the_full_cleaning() -> None:
    """neutralise() skips its regexes for printable text: same answer on every string."""
    import random
    import string

    from bots.reports import excel_safe as xs

    def full(text: str) -> str:
        cleaned = xs._UNENCODABLE_RE.sub("\ufffd", xs._CONTROL_RE.sub("", text))
        guard = xs.needs_guard(cleaned)
        cleaned = cleaned.replace("\r\n", "\n").replace("\r", "\n")
        return xs.GUARD + cleaned if guard else cleaned

    alphabet = string.printable + "\u3000\xa0\uff1d\uff0b\uff0d\uff20\x85\x9f\u2028\ud800\ufffe é"
    rng = random.Random(15)
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        assert neutralise(text) == full(text), repr(text)
