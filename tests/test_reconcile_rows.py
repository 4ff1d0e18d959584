"""Every field of every kind of reconciliation row, and the edges of pairing.

An analyst reads these rows (the Excel report, the breaks register): a row that names the
wrong charge, day or operator, or a note that says the wrong thing, sends them to the wrong
place. So each kind of row is checked whole, and each rule at its edge (the day a listing
could not be read, the moment a case began, the second refund of an intent).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from bots.models import PortalRefund
from bots.reports.reconcile import (
    Approval,
    ChargeBalance,
    LedgerEntry,
    ReconRow,
    ReconStatus,
    reconcile,
    reference_words,
    summarise,
    totals_by_currency,
    unread_day,
    unverified,
)

S = ReconStatus
D = Decimal
KEY = "C000001-8f3a1c2b"


def _at(day: int, hour: int = 10, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def led(case: int = 1, amount: object = "10.00", status: str = "confirmed",
        number: str | None = "R-1", *, ref: str | None = None, currency: str = "",
        tx: str = "", created: datetime | None = None) -> LedgerEntry:
    return LedgerEntry(case_ref=f"C-{case:06d}", order_number=f"ORD-{100000 + case}",
                       reference=ref or f"C{case:06d}-8f3a1c2b",
                       amount=D(amount) if isinstance(amount, str) else amount,  # type: ignore[arg-type]
                       status=status, refund_number=number, currency=currency,
                       transaction_id=tx, created_at=created)


def ptl(refund_id: str = "R-1", amount: str = "10.00", ref: str = KEY, *,
        operator: str = "refund-bot", order: str = "", currency: str = "", tx: str = "",
        reason: str = "damaged", at: datetime | None = None) -> PortalRefund:
    return PortalRefund(refund_id=refund_id, amount=D(amount), reason=reason, reference=ref,
                        operator=operator, created_at=at or _at(29), order_number=order,
                        currency=currency, transaction_id=tx)


def only(rows: list[ReconRow]) -> ReconRow:
    assert len(rows) == 1, rows
    return rows[0]


# -- each kind of row, whole ---------------------------------------------------------------


def test_a_clean_match_carries_the_portal_day_operator_charge_and_currency() -> None:
    row = only(reconcile([led(currency="eur", tx="T-LEDGER")],
                         [ptl(currency="eur", tx="T-PORTAL", operator="refund-bot")]))
    assert row == ReconRow(S.MATCHED, "C-000001", "ORD-100001", KEY, D("10.00"), D("10.00"),
                           "R-1", "R-1", "", "EUR", date(2026, 11, 29), "refund-bot",
                           "T-PORTAL")


def test_a_clean_match_falls_back_to_the_ledgers_charge_and_currency() -> None:
    row = only(reconcile([led(currency="gbp", tx="T-LEDGER")], [ptl(currency="", tx="")]))
    assert (row.status, row.currency, row.transaction_id) == (S.MATCHED, "GBP", "T-LEDGER")


def test_a_match_with_an_edited_reference_carries_every_field() -> None:
    row = only(reconcile([led(currency="", tx="T-LEDGER")],
                         [ptl(ref="edited by hand", currency="gbp", tx="", operator="jsmith",
                              at=_at(28, 23, 59))]))
    assert row == ReconRow(S.MATCHED, "C-000001", "ORD-100001", KEY, D("10.00"), D("10.00"),
                           "R-1", "R-1", "portal reference 'edited by hand'", "GBP",
                           date(2026, 11, 28), "jsmith", "T-LEDGER")


def test_a_problem_pair_takes_the_ledgers_currency_when_the_portal_shows_none() -> None:
    row = only(reconcile([led(currency="eur", tx="T-1")],
                         [ptl(ref="edited", currency="", tx="T-2")]))
    assert (row.currency, row.transaction_id) == ("EUR", "T-2")


def test_a_missing_row_carries_the_intents_day_and_charge_and_no_operator() -> None:
    row = only(reconcile([led(currency="eur", tx="T-1", created=_at(27, 9))], []))
    assert row == ReconRow(S.MISSING_IN_PORTAL, "C-000001", "ORD-100001", KEY, D("10.00"),
                           None, "R-1", None,
                           "ledger records refund R-1, but the portal shows no such refund",
                           "EUR", date(2026, 11, 27), "", "T-1")


def test_a_refund_nobody_recorded_carries_every_portal_field() -> None:
    row = only(reconcile([], [ptl("R-9", "12.345", ref="manual", operator="jsmith",
                                  order="ORD-7", currency="eur", tx="T-7", reason="goodwill")]))
    assert row == ReconRow(S.NOT_IN_LEDGER, None, "ORD-7", "manual", None, D("12.35"), None,
                           "R-9", "made by jsmith; reason 'goodwill'", "EUR",
                           date(2026, 11, 29), "jsmith", "T-7")


def test_an_over_refunded_charge_says_by_how_much() -> None:
    row = only(reconcile([], [], charges=[ChargeBalance("T-1", "ORD-1", D("40"), D("55.5"),
                                                        "eur")]))
    assert row == ReconRow(S.OVER_REFUNDED, None, "ORD-1", "", D("40.00"), D("55.50"), None,
                           None, "charge T-1 paid 40.00 eur but 55.50 eur was refunded on it "
                           "(over by 15.50)", "EUR", None, "", "T-1")


def test_a_charge_refunded_exactly_what_it_paid_is_not_over_refunded() -> None:
    assert reconcile([], [], charges=[ChargeBalance("T-1", "ORD-1", D("40"), D("40.00"))]) == []
    over = reconcile([], [], charges=[ChargeBalance("T-1", "ORD-1", D("40"), D("40.01"))])
    assert [r.status for r in over] == [S.OVER_REFUNDED]


def test_unverified_rows_keep_each_intent_and_say_why() -> None:
    rows = unverified([led(1, created=_at(27)), led(2, number=None, status="pending")],
                      "portal down")
    assert rows[0] == ReconRow(S.UNVERIFIED, "C-000001", "ORD-100001", KEY, D("10.00"), None,
                               "R-1", None, "portal down", "", date(2026, 11, 27), "", "")
    assert [(r.status, r.case_ref, r.note) for r in rows[1:]] == [
        (S.UNVERIFIED, "C-000002", "portal down")]
    assert unverified([], "portal down") == [
        ReconRow(S.UNVERIFIED, None, "", "", None, None, None, None, "portal down")]


def test_an_unread_day_is_one_unverified_row_about_that_day() -> None:
    row = unread_day(date(2026, 11, 28), "HTTP 500")
    assert row == ReconRow(S.UNVERIFIED, None, "", "", None, None, None, None,
                           "the portal's refunds of 2026-11-28 could not be read (HTTP 500): "
                           "refunds made that day by people or other systems, and second "
                           "payments, are unchecked", day=date(2026, 11, 28))
    assert row.is_problem and row.break_key == "listing:2026-11-28"


# -- amounts to the cent -------------------------------------------------------------------


def test_half_a_cent_rounds_up_on_both_sides_like_money() -> None:
    row = only(reconcile([led(amount="10.005")], [ptl(amount="10.005")]))
    assert (row.status, row.ledger_amount, row.portal_amount) == (S.MATCHED, D("10.01"),
                                                                  D("10.01"))


def test_a_ledger_amount_of_another_numeric_type_is_read_as_money() -> None:
    row = only(reconcile([led(amount=10)], [ptl(amount="10.00")]))
    assert (row.status, row.ledger_amount) == (S.MATCHED, D("10.00"))


def test_a_currency_written_in_small_letters_is_the_same_currency() -> None:
    row = only(reconcile([led(currency="eur")], [ptl(currency="EUR")]))
    assert (row.status, row.note, row.currency) == (S.MATCHED, "", "EUR")
    row = only(reconcile([led(currency="EUR")], [ptl(currency="eur")]))
    assert (row.status, row.note) == (S.MATCHED, "")


# -- notes the analyst acts on ---------------------------------------------------------------


def test_an_absent_intent_with_the_portals_refund_number_is_still_unconfirmed() -> None:
    row = only(reconcile([led(status="absent", number="R-1")], [ptl()]))
    assert row.status is S.UNCONFIRMED
    assert row.note == ("ledger says verified absent, but the portal has refund R-1: "
                        "risk of paying twice, check before any resubmission")


def test_several_problems_of_one_pair_are_noted_apart() -> None:
    row = only(reconcile([led(status="pending", number=None)],
                         [ptl(amount="12.00", order="ORD-9", ref=f"phoned {KEY}")]))
    assert row.note == ("submitted and found in the portal as R-1: the bot must record it; "
                        "ledger 10.00 vs portal 12.00 (difference +2.00); "
                        f"portal refund is on order ORD-9, not ORD-100001; "
                        f"portal reference 'phoned {KEY}'")


def test_a_problem_pair_with_the_same_reference_notes_no_reference() -> None:
    row = only(reconcile([led(number="R-1")], [ptl(amount="9.99")]))
    assert row.note == "ledger 10.00 vs portal 9.99 (difference -0.01)"


@pytest.mark.parametrize(("status", "number", "note"), [
    ("confirmed", "R-1", "ledger records refund R-1, but the portal shows no such refund"),
    ("confirmed", None, "ledger records refund (no number), but the portal shows no such refund"),
    ("pending", None, "outcome unknown: submitted, but not found in the portal"),
    ("queued", None, "outcome unknown: ledger status 'queued', not found in the portal"),
])
def test_what_a_missing_row_says_depends_on_the_ledgers_status(
        status: str, number: str | None, note: str) -> None:
    row = only(reconcile([led(status=status, number=number)], []))
    assert (row.status, row.note) == (S.MISSING_IN_PORTAL, note)


def test_an_intent_made_on_the_last_unread_day_is_unverified_not_missing() -> None:
    made = led(created=_at(28, 23, 59))
    row = only(reconcile([made], [], unread_days=[date(2026, 11, 27), date(2026, 11, 28)]))
    assert row.status is S.UNVERIFIED
    assert row.note == ("not found, but the portal's listing for 2026-11-28 could not be read "
                        "(retried): check again before anything is paid")
    later = only(reconcile([led(created=_at(29, 0, 0))], [], unread_days=[date(2026, 11, 28)]))
    assert later.status is S.MISSING_IN_PORTAL


def test_a_refund_by_nobody_named_says_unknown_operator_on_every_row() -> None:
    second = ptl("R-2", operator="  ", at=_at(30, 8, 5))
    rows = reconcile([led()], [ptl(), second])
    dup = next(r for r in rows if r.status is S.DUPLICATE)
    assert dup.note == (f"second refund for key {KEY}: R-1 already pays this intent; R-2 by "
                        "unknown operator on 2026-11-30 08:05 pays it again")
    loose = only(reconcile([], [ptl("R-5", ref="x", operator="", reason=" ")]))
    assert loose.note == "made by unknown operator"
    over = only(reconcile([], [ptl("R-5", "50.00", ref="x", operator="", order="ORD-100001")],
                          approvals=[Approval("C-000001", "ORD-100001", D("40.00"), "EUR")]))
    assert over.note == ("refund by unknown operator on order ORD-100001: C-000001 is now "
                         "refunded 50.00 EUR in total, more than the 40.00 EUR approved")


# -- pairing: strongest evidence, duplicates, listings ---------------------------------------


def test_the_refund_number_outranks_an_earlier_refund_with_the_intents_reference() -> None:
    by_reference = ptl("R-1", at=_at(28))  # listed first, made first
    by_number = ptl("R-2", ref="typed by hand", at=_at(29))
    rows = reconcile([led(number="R-2")], [by_reference, by_number])
    assert [(r.status, r.portal_refund_id) for r in rows] == [(S.DUPLICATE, "R-1"),
                                                              (S.MATCHED, "R-2")]


def test_every_intent_paid_twice_gets_its_duplicate_row() -> None:
    ledger = [led(1), led(2, number="R-2"), led(3, number="R-3")]
    portal = [ptl("R-1"), ptl("R-2", ref="C000002-8f3a1c2b"),
              ptl("R-2b", ref="C000002-8f3a1c2b", at=_at(30)),
              ptl("R-3", ref="C000003-8f3a1c2b"),
              ptl("R-3b", ref="C000003-8f3a1c2b", at=_at(30))]
    rows = reconcile(ledger, portal)
    assert sorted((r.status, r.portal_refund_id) for r in rows if r.is_problem) == [
        (S.DUPLICATE, "R-2b"), (S.DUPLICATE, "R-3b")]
    assert summarise(rows)[S.MATCHED] == 3


def test_two_intents_with_one_key_pair_the_first_and_miss_the_other() -> None:
    a, b = led(1, status="pending", number=None), led(2, status="pending", number=None, ref=KEY)
    rows = reconcile([b, a], [ptl(ref=KEY)])
    assert [(r.status, r.case_ref) for r in rows] == [(S.UNCONFIRMED, "C-000001"),
                                                      (S.MISSING_IN_PORTAL, "C-000002")]
    assert rows == reconcile([a, b], [ptl(ref=KEY)])


def test_a_refund_listed_twice_with_different_rows_keeps_one_whatever_the_order() -> None:
    first, second = ptl(amount="10.00"), ptl(amount="12.00")
    assert reconcile([led()], [first, second]) == reconcile([led()], [second, first])
    assert only(reconcile([led()], [second, first])).status is S.MATCHED


@pytest.mark.parametrize("field", ["operator", "reason", "order", "currency", "tx"])
def test_a_refund_listed_twice_differing_in_any_field_keeps_one_whatever_the_order(
        field: str) -> None:
    first, second = ptl(), ptl(**{field: "X-other"})
    assert reconcile([led()], [first, second]) == reconcile([led()], [second, first])
    assert reconcile([], [first, second]) == reconcile([], [second, first])


def test_two_matched_rows_come_by_order_number() -> None:
    ledger = [led(2, number="R-2"), led(1)]
    portal = [ptl("R-2", ref="C000002-8f3a1c2b"), ptl("R-1")]
    rows = reconcile(ledger, portal)
    assert [(r.status, r.order_number) for r in rows] == [(S.MATCHED, "ORD-100001"),
                                                          (S.MATCHED, "ORD-100002")]


# -- approvals: what a case may be refunded in total -----------------------------------------


def test_every_intent_of_a_case_counts_towards_its_approval() -> None:
    ledger = [led(1, number="R-1"), led(1, number="R-2", ref="C000001-00000002")]
    portal = [ptl("R-1"), ptl("R-2", ref="C000001-00000002"),
              ptl("R-3", "15.00", ref="manual", order="ORD-100001", at=_at(30))]
    rows = reconcile(ledger, portal,
                     approvals=[Approval("C-000001", "ORD-100001", D("30.00"))])
    assert [(r.status, r.portal_refund_id) for r in rows if r.is_problem] == [
        (S.DUPLICATE, "R-3")]


def test_loose_refunds_of_a_case_count_in_the_order_they_were_made() -> None:
    approval = Approval("C-000001", "ORD-100001", D("30.00"), "EUR")
    early = ptl("R-8", "15.00", ref="manual", order="ORD-100001", at=_at(29))
    late = ptl("R-9", "10.00", ref="manual", order="ORD-100001", at=_at(30))
    for portal in ([ptl(), early, late], [late, early, ptl()]):
        rows = reconcile([led()], portal, approvals=[approval])
        assert [(r.status, r.portal_refund_id) for r in rows if r.is_problem] == [
            (S.NOT_IN_LEDGER, "R-8"), (S.DUPLICATE, "R-9")]


def test_a_refund_after_an_over_approval_is_still_reported() -> None:
    approval = Approval("C-000001", "ORD-100001", D("10.00"))
    over = ptl("R-8", "5.00", ref="manual", order="ORD-100001", at=_at(29, 11))
    other = ptl("R-9", "7.00", ref="manual", order="ORD-555", at=_at(29, 12))
    rows = reconcile([led()], [ptl(), over, other], approvals=[approval])
    assert {(r.status, r.portal_refund_id) for r in rows if r.is_problem} == {
        (S.DUPLICATE, "R-8"), (S.NOT_IN_LEDGER, "R-9")}


def test_a_refund_made_at_the_moment_the_case_began_is_the_cases() -> None:
    began = _at(29, 9)
    approval = Approval("C-000001", "ORD-100001", D("10.00"), "EUR", since=began)
    at_start = ptl("R-8", "5.00", ref="manual", order="ORD-100001", at=began)
    rows = reconcile([led()], [ptl(), at_start], approvals=[approval])
    assert [(r.status, r.case_ref) for r in rows if r.is_problem] == [(S.DUPLICATE, "C-000001")]


def test_an_over_approval_names_the_cases_currency_when_the_listing_shows_none() -> None:
    approval = Approval("C-000001", "ORD-100001", D("10.00"), "EUR")
    row = only(reconcile([], [ptl("R-8", "12.00", ref="x", order="ORD-100001", currency="")],
                         approvals=[approval]))
    assert "12.00 EUR in total, more than the 10.00 EUR approved" in row.note


# -- counting ----------------------------------------------------------------------------------


def test_summarise_counts_rows_of_one_status_together() -> None:
    rows = reconcile([led(1), led(2, number="R-2")], [ptl(), ptl("R-2", ref="C000002-8f3a1c2b")])
    assert summarise(rows)[S.MATCHED] == 2


def test_totals_add_rows_of_one_status_and_use_the_ledger_amount_when_the_portal_has_none(
        ) -> None:
    rows = reconcile([led(1, "10.00", currency="EUR"), led(2, "2.50", number="R-2",
                                                          currency="EUR"),
                      led(3, "1.00", number="R-3")], [])
    assert totals_by_currency(rows) == {(S.MISSING_IN_PORTAL, "EUR"): D("12.50"),
                                        (S.MISSING_IN_PORTAL, "?"): D("1.00")}


def test_the_words_of_a_reference_are_its_non_empty_pieces_and_the_keys_in_it() -> None:
    assert reference_words(f" ({KEY}); per phone ") == {KEY, "per", "phone"}
    assert reference_words("refund#C0000012-0123abcdx") == {
        "refund", "C0000012-0123abcdx", "C0000012-0123abcd"}
    assert reference_words("") == set()
