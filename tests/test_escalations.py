"""The human decisions workbook: write, fill as an agent would, read, apply (once)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import Workbook, load_workbook
from openpyxl.utils import get_column_letter

from bots.decide import snapshot
from bots.decide.policy import Claim
from bots.models import (
    ChargeFacts,
    Decision,
    LineItem,
    OrderFacts,
    Outcome,
    PortalRefund,
    RefundRequest,
)
from bots.queue import CaseState, Queue
from bots.queue.staff import Staff
from bots.reports.escalations import (
    HEADERS,
    EscalationsFileError,
    HumanDecision,
    apply_decisions,
    evidence_text,
    read_decisions,
    write_escalations,
)
from bots.reports.excel_safe import MONEY_FORMAT
from bots.reports.report import read_report

RUN = "20261129-101500-a1b2"
COL = {h: i + 1 for i, h in enumerate(HEADERS)}


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    q = Queue(f"sqlite:///{tmp_path / 'q.sqlite'}")
    staff = Staff.on(q)
    for name in ("ann", "bo"):  # decisions name real users (`refund-bots users add`)
        staff.add_user(name, "agent", "a long enough password")
    return q


def facts(order_number: str) -> str:
    order = OrderFacts(
        order_number=order_number, customer_name="Ada", email="ada@example.com", phone="",
        order_date=date(2026, 10, 1), delivery_date=date(2026, 10, 4), status="delivered",
        items=(LineItem("SKU-1", "Kettle", "kitchen", Decimal("49.99"), 2),
               LineItem("SKU-2", "=Cable", "electronics", Decimal("4.99"), 1, final_sale=True)),
        shipping_fee=Decimal("0.00"), currency="EUR", payment_card="**** 4242",
        total=Decimal("104.97"))
    charge = ChargeFacts("TX-1", order_number, Decimal("104.97"), "EUR", Decimal("10.00"),
                         (PortalRefund("RF-1", Decimal("10.00"), "damaged", "ref", "bot",
                                       datetime(2026, 10, 10, tzinfo=UTC)),))
    claim = Claim((Decimal("94.97"),), "EUR", "damaged")
    decision = Decision(Outcome.ESCALATE, Decimal("94.97"), ("Above the auto-approve limit.",))
    return snapshot.dump(order, charge, claim, decision, date(2026, 11, 29))


def escalated_case(queue: Queue, n: int, *, name: str = "Ada Lovelace",
                   proposed: str | None = "94.97", state: str = CaseState.ESCALATED) -> int:
    order = f"ORD-{100000 + n}"
    case_id, _ = queue.add_request(RefundRequest(
        channel="email", source_id=f"m{n}@mail.example",
        received_at=datetime(2026, 11, 28, tzinfo=UTC), reason_text="refund please",
        customer_email=f"c{n}@example.com", customer_name=name, order_number=order,
        requested_amount=Decimal("94.97"), currency="EUR"))
    held = queue.claim("w1", 60, RUN)
    assert held is not None and held.id == case_id
    queue.record_decision(held.lease, facts(order))
    queue.finish(held.lease, state=state, outcome="escalated" if state == CaseState.ESCALATED
                 else "refunded", reason="Above the auto-approve limit of 50.00.",
                 actor="w1", run_id=RUN,
                 approved_amount=Decimal(proposed) if proposed else None)
    return case_id


def write(queue: Queue, tmp_path: Path) -> Path:
    return write_escalations(tmp_path / "escalations.xlsx", queue.cases(), RUN)


def fill(path: Path, rows: dict[int, dict[str, object]]) -> None:
    """Type into the workbook the way an agent would (openpyxl infers the types)."""
    wb = load_workbook(path)
    ws = wb["Escalations"]
    for r, values in rows.items():
        for header, value in values.items():
            ws.cell(row=r, column=COL[header]).value = value
    wb.save(path)


# -- round trip -----------------------------------------------------------------------------


def test_round_trip_write_fill_read_apply(queue: Queue, tmp_path: Path) -> None:
    a = escalated_case(queue, 1, name='=HYPERLINK("http://evil","x")')
    b = escalated_case(queue, 2)
    c = escalated_case(queue, 3)
    escalated_case(queue, 4, state=CaseState.DONE)  # not waiting for anyone: not listed
    path = write(queue, tmp_path)

    sheet = read_report(path)["Escalations"]
    assert [r["Case"] for r in sheet] == ["C-000001", "C-000002", "C-000003"]
    assert sheet[0]["Customer"] == "'=HYPERLINK(\"http://evil\",\"x\")"  # guarded, as text
    assert sheet[0]["Bot's proposed amount"] == Decimal("94.97")
    assert sheet[0]["Requested"] == Decimal("94.97") and sheet[0]["Currency"] == "EUR"
    assert sheet[0]["Why escalated"] == "Above the auto-approve limit of 50.00."
    assert "refunded so far 10.00" in sheet[0]["Evidence"]
    assert "Kettle" in sheet[0]["Evidence"] and "(final sale)" in sheet[0]["Evidence"]
    assert all(sheet[0][h] is None for h in ("Decision", "Amount", "Agent", "Comment"))
    ws = load_workbook(path)["Escalations"]
    assert ws.freeze_panes == "B2"
    assert ws.cell(row=2, column=COL["Bot's proposed amount"]).number_format == \
        MONEY_FORMAT + ' "EUR"'  # the row's currency
    assert isinstance(sheet[0]["Age (days)"], int) and sheet[0]["SLA"]
    assert ws.row_dimensions[2].height and ws.row_dimensions[2].height > 15  # evidence reads
    assert ws.print_title_rows == "$1:$1" and ws.page_setup.orientation == "landscape"
    assert ws.cell(row=2, column=COL["Customer"]).data_type == "s"
    lists = [dv for dv in ws.data_validations.dataValidation if dv.type == "list"]
    assert lists[0].formula1 == '"approve,reject,partial"'
    assert f"{get_column_letter(COL['Decision'])}2" in lists[0].sqref
    assert ws.column_dimensions[get_column_letter(COL["Evidence"])].width == 60

    fill(path, {2: {"Decision": "Approve ", "Agent": "Ann", "Comment": "ok"},
                3: {"Decision": "partial", "Amount": 12.5, "Agent": "Ann"},
                4: {"Decision": "reject", "Agent": "Bo", "Comment": "Used item."}})
    decisions, refused = read_decisions(path)
    assert refused == []
    assert [(d.case_id, d.decision, d.amount, d.agent, d.row) for d in decisions] == [
        (a, "approve", None, "Ann", 2), (b, "partial", Decimal("12.50"), "Ann", 3),
        (c, "reject", None, "Bo", 4)]

    result = apply_decisions(queue, decisions, run_id="run-2")

    assert [d.case_id for d in result.applied] == [a, b, c]
    assert result.refused == [] and result.already_applied == []
    cases = {x.id: x for x in queue.cases()}
    assert (cases[a].state, cases[a].approved_amount) == (CaseState.QUEUED, Decimal("94.97"))
    assert (cases[b].state, cases[b].approved_amount) == (CaseState.QUEUED, Decimal("12.50"))
    assert (cases[c].state, cases[c].outcome) == (CaseState.DONE, "rejected")
    assert cases[c].reason == "Rejected by bo: Used item."  # the user name
    assert queue.audit_trail(c)[-1].actor == "bo"


def test_importing_the_same_file_twice_applies_nothing_the_second_time(
        queue: Queue, tmp_path: Path) -> None:
    ids = [escalated_case(queue, n) for n in (1, 2)]
    path = write(queue, tmp_path)
    fill(path, {2: {"Decision": "approve", "Agent": "Ann"},
                3: {"Decision": "reject", "Agent": "Ann", "Comment": "no"}})
    first = apply_decisions(queue, read_decisions(path)[0], run_id="r1")
    trail = [len(queue.audit_trail(i)) for i in ids]

    second = apply_decisions(queue, read_decisions(path)[0], run_id="r2")

    assert len(first.applied) == 2
    assert second.applied == [] and second.refused == []
    assert [d.case_id for d in second.already_applied] == ids
    assert [len(queue.audit_trail(i)) for i in ids] == trail


# -- bad rows ---------------------------------------------------------------------------------


def test_bad_rows_are_refused_with_their_reason(queue: Queue, tmp_path: Path) -> None:
    for n in range(1, 11):
        escalated_case(queue, n)
    path = write(queue, tmp_path)
    fill(path, {
        2: {"Decision": "refund it", "Agent": "Ann"},
        3: {"Decision": "partial", "Agent": "Ann"},
        4: {"Decision": "partial", "Amount": -5, "Agent": "Ann"},
        5: {"Decision": "partial", "Amount": 12.345, "Agent": "Ann"},
        6: {"Decision": "approve", "Agent": "  "},
        7: {"Decision": "approve", "Agent": "Ann", "Comment": "=1+1"},
        8: {"Decision": "approve", "Agent": "Ann", "Amount": "#N/A"},
        9: {"Decision": "reject", "Agent": "Ann", "Amount": 3},
        10: {"Decision": "partial", "Amount": "12,50", "Agent": "Ann"},  # accepted
        11: {"Agent": "Ann", "Comment": "thinking about it"},  # no decision: ignored
    })
    decisions, refused = read_decisions(path)
    reasons = {r.row: r.reason for r in refused}
    assert reasons[2].startswith("unknown decision 'refund it'")
    assert reasons[3] == "partial needs an Amount"
    assert reasons[4].startswith("Amount must be positive")
    assert reasons[5] == "Amount 12.345 has more than 2 decimals"
    assert reasons[6] == "Agent is empty: who decided?"
    assert reasons[7] == "the Comment cell holds a formula: type the value itself"
    assert reasons[8] == "the Amount cell holds an error value (#N/A)"
    assert reasons[9].startswith("reject takes no Amount")
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert [(d.row, d.amount) for d in decisions] == [(10, Decimal("12.50"))]
    assert str(refused[0]) == f"row 2 (C-000001): {reasons[2]}"


def test_rows_added_by_hand_are_checked_against_the_queue(queue: Queue,
                                                          tmp_path: Path) -> None:
    a = escalated_case(queue, 1)
    escalated_case(queue, 2, proposed=None)
    done = escalated_case(queue, 3, state=CaseState.DONE)
    path = write(queue, tmp_path)
    fill(path, {
        2: {"Order": "ORD-999999", "Decision": "approve", "Agent": "Ann"},
        3: {"Decision": "approve", "Agent": "Ann"},
        4: {"Case": "C-000999", "Decision": "approve", "Agent": "Ann"},
        5: {"Case": f"C-{done:06d}", "Decision": "reject", "Agent": "Ann"},
        6: {"Case": "123", "Decision": "reject", "Agent": "Ann"},
        7: {"Case": "C-000001", "Decision": "reject", "Agent": "Ann"},
    })
    decisions, refused = read_decisions(path)
    assert {r.row: r.reason for r in refused} == {
        6: "Case '123' is not a case reference like C-000123",
        7: "C-000001 is already decided on row 2",
    }
    result = apply_decisions(queue, decisions, run_id="r1")
    reasons = {r.row: r.reason for r in result.refused}
    assert "was the row edited?" in reasons[2]
    assert reasons[3].startswith("approve without an Amount, and the bot proposed none")
    assert reasons[4] == "unknown case C-000999"
    assert reasons[5] == "C-000003 is not waiting for a decision (it is done)"
    assert result.applied == [] and queue.get_case(a).state == CaseState.ESCALATED  # type: ignore[union-attr]


def test_a_file_older_than_the_case_is_refused(queue: Queue, tmp_path: Path) -> None:
    """Decided, re-processed, escalated again: the old file must not decide the new round."""
    case_id = escalated_case(queue, 1)
    path = write(queue, tmp_path)
    fill(path, {2: {"Decision": "approve", "Agent": "Ann"}})
    decisions = read_decisions(path)[0]
    decisions = [HumanDecision(**{**d.__dict__,
                                  "escalated_at": d.escalated_at - timedelta(hours=1)})
                 for d in decisions]  # as if the case was escalated again since
    [refused] = apply_decisions(queue, decisions, run_id="r1").refused
    assert "changed since this file was written" in refused.reason
    assert queue.get_case(case_id).state == CaseState.ESCALATED  # type: ignore[union-attr]


def test_unusable_files_raise_a_plain_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.xlsx"
    junk.write_text("not a workbook")
    with pytest.raises(EscalationsFileError, match="not a readable Excel workbook"):
        read_decisions(junk)
    other = tmp_path / "other.xlsx"
    Workbook().save(other)
    with pytest.raises(EscalationsFileError, match="no sheet named 'Escalations'"):
        read_decisions(other)


def test_evidence_is_compact_and_survives_odd_snapshots() -> None:
    text = evidence_text(facts("ORD-100001"))
    assert text.splitlines()[0] == ("Order ORD-100001 of 2026-10-01, delivered 2026-10-04, "
                                    "status delivered, total 104.97 EUR.")
    assert "Charge TX-1: 104.97, refunded so far 10.00 (RF-1 10.00 on 2026-10-10), " \
           "remaining 94.97." in text
    assert "Asked: 94.97 EUR (damaged)." in text
    assert evidence_text(None) == ""
    assert evidence_text('{"old": 1}') == '{"old": 1}'
    assert evidence_text("{broken") == "(the facts snapshot is not readable)"


def test_empty_workbook_has_headers_and_instructions(tmp_path: Path) -> None:
    path = write_escalations(tmp_path / "e.xlsx", [], RUN)
    wb = load_workbook(path)
    assert wb.sheetnames == ["Escalations", "How to"]
    assert [c.value for c in wb["Escalations"][1]] == list(HEADERS)
    assert read_decisions(path) == ([], [])
