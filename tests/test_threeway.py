"""The three-way check against the order notes (bots/reports/threeway.py): pure matching."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from pydantic import ValidationError

from bots.reports.reconcile import ReconRow
from bots.reports.reconcile import ReconStatus as S
from bots.reports.threeway import (
    ListedRefund,
    OrderNotes,
    OrderNotesSettings,
    check_notes,
    note_key,
    orders_to_read,
    refunds_to_check,
)

DAY = date(2026, 12, 1)


def refund(rid: str, order: str, operator: str = "refund.bot") -> ListedRefund:
    return ListedRefund(rid, order, "C-000001", "EUR", Decimal("12.50"), DAY, operator)


def bot_note(rid: str, case: str = "C-000001") -> str:
    return (f"Refund {rid} of 12.50 EUR issued by refund-bots for case {case}. "
            "— refund.bot, 01/12/2026")


def statuses(rows: list[ReconRow]) -> list[tuple[str, str, str | None]]:
    return sorted((str(r.status), r.order_number, r.portal_refund_id) for r in rows)


def test_a_refund_with_its_note_agrees() -> None:
    got = check_notes([refund("RF-000001", "ORD-1")],
                      OrderNotes(read={"ORD-1": [bot_note("RF-000001")]}), {})
    assert got.rows == []
    assert got.agreed.count(note_key("ORD-1", "RF-000001")) >= 1


def test_a_refund_a_person_wrote_up_by_hand_agrees() -> None:
    """Any note naming the refund as a word counts (a person's own words included)."""
    got = check_notes([refund("RF-000002", "ORD-2", "jsmith")],
                      OrderNotes(read={"ORD-2": ["goodwill refund (RF-000002), agreed by phone"]}),
                      {})
    assert got.rows == []


def test_a_refund_without_its_note_is_a_break_naming_the_operator() -> None:
    got = check_notes([refund("RF-000003", "ORD-3", "jsmith")],
                      OrderNotes(read={"ORD-3": ["customer called", bot_note("RF-0000031")]}), {})
    problems = [r for r in got.rows if r.status is S.NOTE_MISSING]
    assert statuses(problems) == [(str(S.NOTE_MISSING), "ORD-3", "RF-000003")]
    assert "jsmith" in problems[0].note
    assert problems[0].is_problem and problems[0].portal_amount == Decimal("12.50")


def test_a_note_of_the_bot_whose_refund_the_portal_does_not_list_is_a_break() -> None:
    got = check_notes([], OrderNotes(read={"ORD-4": [bot_note("RF-000404")]}), {})
    assert statuses(got.rows) == [(str(S.ORPHAN_NOTE), "ORD-4", "RF-000404")]
    assert got.rows[0].break_key == note_key("ORD-4", "RF-000404")


def test_a_note_about_a_refund_of_an_earlier_period_is_not_a_break() -> None:
    got = check_notes([], OrderNotes(read={"ORD-5": [bot_note("RF-000005")]}),
                      {"RF-000005": "C-000005"})
    assert got.rows == []


def test_a_persons_note_is_not_read_as_a_claimed_refund() -> None:
    got = check_notes([], OrderNotes(read={"ORD-6": ["refund RF-000006 to be checked"]}), {})
    assert got.rows == []


def test_an_order_page_not_read_makes_its_refunds_unverified_with_the_reason() -> None:
    """Never matched and never silent: each refund says why its note was not checked."""
    got = check_notes([refund("RF-000007", "ORD-7"), refund("RF-000008", "ORD-8"),
                       refund("RF-000009", "")],
                      OrderNotes(unread={"ORD-7": "its page could not be read (UnknownPage)"}),
                      {})
    assert [r.status for r in got.rows] == [S.NOTES_UNVERIFIED] * 3
    notes = {r.portal_refund_id: r.note for r in got.rows}
    assert "UnknownPage" in notes["RF-000007"]
    assert "not read" in notes["RF-000008"]
    assert "names no order" in notes["RF-000009"]
    assert got.agreed == []
    assert all(r.is_problem for r in got.rows)


def test_unverified_and_missing_share_the_break_so_a_later_read_closes_it() -> None:
    r = refund("RF-000010", "ORD-10")
    unread = check_notes([r], OrderNotes(unread={"ORD-10": "x"}), {}).rows[0]
    missing = check_notes([r], OrderNotes(read={"ORD-10": []}), {}).rows[0]
    fine = check_notes([r], OrderNotes(read={"ORD-10": [bot_note("RF-000010")]}), {})
    assert unread.break_key == missing.break_key == note_key("ORD-10", "RF-000010")
    assert unread.break_key in fine.agreed
    # a refund's note break never collides with its listing break ("refund:RF-...")
    assert not unread.break_key.startswith("refund:")


def test_refund_ids_are_matched_as_words_not_as_substrings() -> None:
    got = check_notes([refund("RF-1", "ORD-11")],
                      OrderNotes(read={"ORD-11": ["Refund RF-10 of 1.00 EUR issued by refund-bots "
                                                  "for case C-000011."]}), {})
    assert {r.status for r in got.rows} == {S.NOTE_MISSING, S.ORPHAN_NOTE}


def test_refunds_and_orders_to_check_are_bounded_and_stable() -> None:
    rows = [ReconRow(S.MATCHED, "C-1", "ORD-2", "k", None, Decimal(1), "RF-2", "RF-2", ""),
            ReconRow(S.NOT_IN_LEDGER, None, "ORD-1", "", None, Decimal(1), None, "RF-1", ""),
            ReconRow(S.DUPLICATE, "C-1", "ORD-2", "k", None, Decimal(1), None, "RF-3", ""),
            ReconRow(S.MISSING_IN_PORTAL, "C-9", "ORD-9", "k9", Decimal(1), None, "RF-9", None, ""),
            ReconRow(S.MATCHED, "C-1", "ORD-2", "k", None, Decimal(1), "RF-2", "RF-2", "")]
    refunds = refunds_to_check(rows)
    assert [r.refund_id for r in refunds] == ["RF-2", "RF-1", "RF-3"]
    read, over = orders_to_read(refunds, ["ORD-9", "ORD-1", ""], limit=2)
    assert read == ["ORD-1", "ORD-2"] and over == ["ORD-9"]


def test_the_note_pattern_setting_needs_its_value_group() -> None:
    assert OrderNotesSettings().enabled is True
    with pytest.raises(ValidationError):
        OrderNotesSettings(bot_note_pattern=r"Refund (\S+)")
    with pytest.raises(ValidationError):
        OrderNotesSettings(bot_note_pattern=r"Refund (?P<value>")
    custom = OrderNotesSettings(bot_note_pattern=r"Erstattung (?P<value>\S+) durch refund-bots")
    got = check_notes([], OrderNotes(read={"O": ["Erstattung RF-7 durch refund-bots"]}), {},
                      pattern=custom.bot_note_pattern)
    assert statuses(got.rows) == [(str(S.ORPHAN_NOTE), "O", "RF-7")]


def test_a_refund_whose_case_a_runner_is_still_working_is_left_to_its_own_report() -> None:
    got = check_notes([refund("RF-000012", "ORD-12")], OrderNotes(read={"ORD-12": []}), {},
                      in_progress={"C-000001"})
    assert got.rows == [] and got.agreed == []  # neither a break nor agreed: not yet due


def test_a_note_whose_refund_may_be_on_a_day_not_read_is_unverified_not_a_break() -> None:
    """The portal's listing of a day failed: a note naming a refund the listing lacks is
    not known to be wrong. Not verified, with the day, never "order note without refund"."""
    got = check_notes([], OrderNotes(read={"ORD-13": [bot_note("RF-000013")]}), {},
                      unread_days=[date(2026, 11, 30)])
    [row] = got.rows
    assert row.status is S.NOTES_UNVERIFIED and "2026-11-30" in row.note
    assert row.break_key == note_key("ORD-13", "RF-000013")


def test_a_note_on_a_refund_recorded_after_the_listing_was_read_is_in_flight() -> None:
    """Another runner's refund landed, was recorded and noted while this report read: the
    listing read earlier lacks it. In flight (shown, not a break); any other unlisted
    refund a note names is still an orphan, and a listed one still agrees."""
    notes = OrderNotes(read={"ORD-15": [bot_note("RF-000015"), bot_note("RF-000016")],
                             "ORD-16": [bot_note("RF-000017")]})
    late = {"RF-000015": ("C-000015", "at 03:54:05 UTC")}
    got = check_notes([refund("RF-000017", "ORD-16")], notes, {}, settled_late=late)
    rows = {r.portal_refund_id: r for r in got.rows}
    assert statuses(got.rows) == [(str(S.IN_FLIGHT), "ORD-15", "RF-000015"),
                                  (str(S.ORPHAN_NOTE), "ORD-15", "RF-000016")]
    flying = rows["RF-000015"]
    assert not flying.is_problem and flying.case_ref == "C-000015"
    assert "03:54:05" in flying.note and "after the portal's listing was read" in flying.note
    assert note_key("ORD-16", "RF-000017") in got.agreed


def test_a_refund_id_with_its_own_separators_is_found_as_a_whole() -> None:
    got = check_notes([refund("RF/2026/17", "ORD-14"), refund("RF/2026/1", "ORD-14")],
                      OrderNotes(read={"ORD-14": ["credited RF/2026/17 by phone"]}), {})
    assert statuses(got.rows) == [(str(S.NOTE_MISSING), "ORD-14", "RF/2026/1")]
