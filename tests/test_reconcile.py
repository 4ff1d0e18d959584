from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from bots.models import PortalRefund
from bots.reports.reconcile import (
    Approval,
    ChargeBalance,
    LedgerEntry,
    ReconRow,
    ReconStatus,
    reconcile,
    summarise,
    totals_by_currency,
)

S = ReconStatus


def led(case: int, amount: str = "10.00", status: str = "confirmed",
        number: str | None = "R-1", order: str | None = None,
        ref: str | None = None) -> LedgerEntry:
    return LedgerEntry(case_ref=f"C-{case:06d}", order_number=order or f"ORD-{100000 + case}",
                       reference=ref or f"C{case:06d}-8f3a1c2b", amount=Decimal(amount),
                       status=status, refund_number=number)


def ptl(refund_id: str = "R-1", amount: str = "10.00", ref: str = "C000001-8f3a1c2b",
        operator: str = "refund-bot", order: str = "", reason: str = "damaged") -> PortalRefund:
    return PortalRefund(refund_id=refund_id, amount=Decimal(amount), reason=reason,
                        reference=ref, operator=operator,
                        created_at=datetime(2026, 11, 29, 10, 0, tzinfo=UTC), order_number=order)


def only(rows: list[ReconRow]) -> ReconRow:
    assert len(rows) == 1, rows
    return rows[0]


# -- matched -----------------------------------------------------------------------------


def test_confirmed_and_in_portal_with_same_number_and_amount_is_matched() -> None:
    row = only(reconcile([led(1)], [ptl()]))
    assert row.status is S.MATCHED
    assert (row.case_ref, row.order_number, row.reference) == ("C-000001", "ORD-100001",
                                                              "C000001-8f3a1c2b")
    assert row.ledger_amount == row.portal_amount == Decimal("10.00")
    assert row.ledger_refund_number == row.portal_refund_id == "R-1"
    assert row.note == ""


def test_match_by_refund_number_even_if_operator_rewrote_the_reference() -> None:
    row = only(reconcile([led(1)], [ptl(ref="edited by hand")]))
    assert row.status is S.MATCHED
    assert "edited by hand" in row.note


def test_match_by_exact_reference_when_refund_number_differs_is_not_matched() -> None:
    row = only(reconcile([led(1, number="R-9")], [ptl("R-1")]))
    assert row.status is S.UNCONFIRMED
    assert "R-9" in row.note and "R-1" in row.note


def test_amounts_equal_to_the_cent_match_whatever_their_exponent() -> None:
    assert only(reconcile([led(1, amount="10")], [ptl(amount="10.00")])).status is S.MATCHED


# -- partial references ------------------------------------------------------------------


def test_ledger_reference_contained_in_portal_reference_matches() -> None:
    portal = [ptl("R-7", ref="per phone call C000001-8f3a1c2b")]
    row = only(reconcile([led(1, status="pending", number=None)], portal))
    assert row.status is S.UNCONFIRMED
    assert row.portal_refund_id == "R-7"
    assert "per phone call" in row.note


def test_portal_reference_contained_in_ledger_reference_does_not_match() -> None:
    rows = reconcile([led(1, number=None)], [ptl("R-7", ref="C000001")])
    assert {r.status for r in rows} == {S.MISSING_IN_PORTAL, S.NOT_IN_LEDGER}


def test_exact_reference_wins_over_a_contained_one_and_the_other_is_a_duplicate() -> None:
    exact = ptl("R-2", ref="C000001-8f3a1c2b")
    prefixed = ptl("R-1", ref="x C000001-8f3a1c2b")
    rows = reconcile([led(1, status="pending", number=None)], [prefixed, exact])
    paired = next(r for r in rows if r.status is not S.DUPLICATE)
    assert paired.portal_refund_id == "R-2"
    dup = next(r for r in rows if r.status is S.DUPLICATE)
    assert dup.portal_refund_id == "R-1" and dup.case_ref == "C-000001"


def test_empty_reference_never_matches_by_containment() -> None:
    rows = reconcile([led(1, number=None, ref=" ")], [ptl("R-1", ref="anything")])
    assert {r.status for r in rows} == {S.MISSING_IN_PORTAL, S.NOT_IN_LEDGER}


# -- one portal refund, one ledger entry -------------------------------------------------


def test_a_portal_refund_matching_two_ledger_entries_matches_only_one() -> None:
    # Both entries' keys are in the one portal reference; only one may claim it.
    a = led(1, status="pending", number=None, ref="K-AAAA")
    b = led(2, status="pending", number=None, ref="K-BBBB")
    rows = reconcile([b, a], [ptl("R-1", ref="K-AAAA K-BBBB")])
    assert sorted(r.status for r in rows) == sorted([S.UNCONFIRMED, S.MISSING_IN_PORTAL])
    assert [r.portal_refund_id for r in rows].count("R-1") == 1
    assert rows == reconcile([a, b], [ptl("R-1", ref="K-AAAA K-BBBB")])  # order-independent


def test_two_ledger_entries_with_the_same_refund_number_match_only_once() -> None:
    rows = reconcile([led(1), led(2, ref="C000002-0000")], [ptl("R-1")])
    assert sorted(r.status for r in rows) == sorted([S.MATCHED, S.MISSING_IN_PORTAL])


def test_duplicate_portal_rows_from_pagination_count_once() -> None:
    assert only(reconcile([led(1)], [ptl(), ptl()])).status is S.MATCHED


# -- missing in portal -------------------------------------------------------------------


def test_confirmed_but_not_in_portal_is_missing() -> None:
    row = only(reconcile([led(1, number="R-5")], []))
    assert row.status is S.MISSING_IN_PORTAL
    assert "R-5" in row.note
    assert row.portal_amount is None and row.portal_refund_id is None


def test_pending_not_in_portal_is_missing_with_outcome_unknown() -> None:
    row = only(reconcile([led(1, status="pending", number=None)], []))
    assert row.status is S.MISSING_IN_PORTAL
    assert "outcome unknown" in row.note


def test_pending_in_portal_is_not_missing() -> None:
    row = only(reconcile([led(1, status="pending", number=None)], [ptl()]))
    assert row.status is not S.MISSING_IN_PORTAL


# -- unconfirmed ---------------------------------------------------------------------------


def test_pending_found_in_portal_is_unconfirmed_the_bot_must_record_it() -> None:
    row = only(reconcile([led(1, status="pending", number=None)], [ptl("R-3")]))
    assert row.status is S.UNCONFIRMED
    assert "R-3" in row.note and "record" in row.note


def test_absent_found_in_portal_is_unconfirmed_and_says_why_it_matters() -> None:
    row = only(reconcile([led(1, status="absent", number=None)], [ptl("R-3")]))
    assert row.status is S.UNCONFIRMED
    assert "absent" in row.note and "twice" in row.note


def test_absent_found_in_portal_with_another_amount_is_still_unconfirmed() -> None:
    row = only(reconcile([led(1, status="absent", number=None)], [ptl(amount="12.00")]))
    assert row.status is S.UNCONFIRMED
    assert "12.00" in row.note


def test_absent_not_in_portal_agrees_with_the_portal_and_makes_no_row() -> None:
    assert reconcile([led(1, status="absent", number=None)], []) == []


def test_refund_on_another_order_is_not_matched() -> None:
    row = only(reconcile([led(1)], [ptl(order="ORD-999999")]))
    assert row.status is S.UNCONFIRMED
    assert "ORD-999999" in row.note


def test_portal_listing_without_order_numbers_still_matches() -> None:
    assert only(reconcile([led(1)], [ptl(order="")])).status is S.MATCHED


# -- amount mismatch ---------------------------------------------------------------------


def test_amount_differs_is_a_mismatch_showing_both_amounts() -> None:
    row = only(reconcile([led(1, amount="10.00")], [ptl(amount="12.50")]))
    assert row.status is S.AMOUNT_MISMATCH
    assert (row.ledger_amount, row.portal_amount) == (Decimal("10.00"), Decimal("12.50"))
    assert "10.00" in row.note and "12.50" in row.note and "+2.50" in row.note


def test_amount_mismatch_outranks_a_missing_confirmation_but_both_are_noted() -> None:
    row = only(reconcile([led(1, status="pending", number=None)], [ptl("R-3", amount="9.00")]))
    assert row.status is S.AMOUNT_MISMATCH
    assert "record" in row.note and "9.00" in row.note


# -- not in ledger -----------------------------------------------------------------------


def test_portal_refund_nobody_recorded_is_not_in_ledger_with_its_operator() -> None:
    row = only(reconcile([], [ptl("R-8", ref="goodwill", operator="jsmith",
                                  order="ORD-100042")]))
    assert row.status is S.NOT_IN_LEDGER
    assert "jsmith" in row.note
    assert row.case_ref is None and row.ledger_amount is None
    assert (row.order_number, row.reference, row.portal_refund_id) == ("ORD-100042", "goodwill",
                                                                      "R-8")


def test_matched_portal_refund_is_not_reported_as_not_in_ledger() -> None:
    assert S.NOT_IN_LEDGER not in {r.status for r in reconcile([led(1)], [ptl()])}


# -- ordering and summary ----------------------------------------------------------------


def test_problems_first_then_matched_each_by_order_number() -> None:
    ledger = [led(3), led(1, ref="C1-x", number="R-10"), led(2, ref="C2-x", number="R-20"),
              led(4, ref="C4-x", number="R-40")]
    portal = [ptl("R-3", ref="C000003-8f3a1c2b"), ptl("R-10", ref="C1-x"),
              ptl("R-40", ref="C4-x", amount="1.00"), ptl("R-99", ref="manual", order="ORD-100000")]
    rows = reconcile(ledger, portal)
    assert [(r.status, r.order_number) for r in rows] == [
        (S.NOT_IN_LEDGER, "ORD-100000"),
        (S.MISSING_IN_PORTAL, "ORD-100002"),
        (S.UNCONFIRMED, "ORD-100003"),  # ledger says R-1, portal says R-3
        (S.AMOUNT_MISMATCH, "ORD-100004"),
        (S.MATCHED, "ORD-100001"),
    ]
    assert rows == reconcile(reversed(ledger), reversed(portal))


def test_summarise_counts_every_status_including_zero() -> None:
    rows = reconcile([led(1), led(2, status="pending", number=None)], [ptl(), ptl("R-x", ref="z")])
    counts = summarise(rows)
    assert list(counts) == list(ReconStatus)
    assert counts == {S.MATCHED: 1, S.MISSING_IN_PORTAL: 1, S.NOT_IN_LEDGER: 1,
                      S.AMOUNT_MISMATCH: 0, S.DUPLICATE: 0, S.OVER_REFUNDED: 0,
                      S.UNCONFIRMED: 0, S.UNVERIFIED: 0, S.IN_FLIGHT: 0, S.NOTE_MISSING: 0,
                      S.ORPHAN_NOTE: 0, S.NOTES_UNVERIFIED: 0}


def test_unverified_rows_when_the_portal_cannot_be_read() -> None:
    from bots.reports.reconcile import unverified

    rows = unverified([led(1), led(2)], "portal down")
    assert [r.status for r in rows] == [S.UNVERIFIED, S.UNVERIFIED] and rows[0].is_problem
    assert unverified([], "portal down")[0].note == "portal down"


# -- duplicates, over-refunds, currencies, partial listings ----------------------------------

def _at(day: int, hour: int = 10) -> datetime:
    return datetime(2026, 11, day, hour, 0, tzinfo=UTC)


def test_two_refunds_for_one_intent_is_a_duplicate_whatever_the_run_or_window() -> None:
    first = ptl("R-1")
    again = PortalRefund(refund_id="R-2", amount=Decimal("10.00"), reason="damaged",
                         reference="C000001-8f3a1c2b", operator="jsmith", created_at=_at(30),
                         order_number="ORD-100001", currency="EUR")
    rows = reconcile([led(1)], [again, first])
    assert sorted(r.status for r in rows) == sorted([S.MATCHED, S.DUPLICATE])
    dup = next(r for r in rows if r.status is S.DUPLICATE)
    assert dup.portal_refund_id == "R-2" and "R-1" in dup.note and "jsmith" in dup.note
    assert dup.break_key == "refund:R-2" and dup.day == date(2026, 11, 30)


def test_a_refund_nobody_recorded_past_the_cases_approval_is_a_duplicate() -> None:
    by_hand = PortalRefund(refund_id="R-9", amount=Decimal("10.00"), reason="other",
                           reference="goodwill", operator="jsmith", created_at=_at(30),
                           order_number="ORD-100001", currency="EUR")
    approvals = [Approval("C-000001", "ORD-100001", Decimal("10.00"), "EUR", since=_at(28))]
    rows = reconcile([led(1)], [ptl(), by_hand], approvals=approvals)
    dup = next(r for r in rows if r.status is S.DUPLICATE)
    assert dup.case_ref == "C-000001" and "20.00 EUR" in dup.note and "jsmith" in dup.note


def test_a_manual_refund_before_the_case_began_is_not_the_cases() -> None:
    earlier = PortalRefund(refund_id="R-0", amount=Decimal("5.00"), reason="other",
                           reference="goodwill", operator="jsmith", created_at=_at(2),
                           order_number="ORD-100001", currency="EUR")
    approvals = [Approval("C-000001", "ORD-100001", Decimal("10.00"), "EUR", since=_at(28))]
    rows = reconcile([led(1)], [ptl(), earlier], approvals=approvals)
    assert sorted(r.status for r in rows) == sorted([S.MATCHED, S.NOT_IN_LEDGER])


def test_within_the_approval_a_second_partial_refund_is_not_a_duplicate() -> None:
    other = PortalRefund(refund_id="R-5", amount=Decimal("5.00"), reason="other",
                         reference="rest", operator="jsmith", created_at=_at(30),
                         order_number="ORD-100001", currency="EUR")
    approvals = [Approval("C-000001", "ORD-100001", Decimal("15.00"), "EUR", since=_at(28))]
    rows = reconcile([led(1)], [ptl(), other], approvals=approvals)
    assert S.DUPLICATE not in {r.status for r in rows}


def test_a_charge_refunded_more_than_it_paid_is_over_refunded() -> None:
    rows = reconcile([], [], charges=[ChargeBalance("TX-1", "ORD-1", Decimal("50.00"),
                                                    Decimal("60.00"), "GBP"),
                                      ChargeBalance("TX-2", "ORD-2", Decimal("50.00"),
                                                    Decimal("50.00"), "GBP")])
    row = only(rows)
    assert row.status is S.OVER_REFUNDED and row.currency == "GBP" and "10.00" in row.note


def test_another_currency_is_an_amount_mismatch() -> None:
    entry = LedgerEntry("C-000001", "ORD-100001", "C000001-8f3a1c2b", Decimal("10.00"),
                        "confirmed", "R-1", currency="EUR")
    row = only(reconcile([entry], [ptl()]))  # ptl: currency GBP below
    assert row.status is S.MATCHED or row.currency  # same amount, portal without currency
    gbp = PortalRefund(refund_id="R-1", amount=Decimal("10.00"), reason="", currency="GBP",
                       reference="C000001-8f3a1c2b", operator="bot", created_at=_at(29))
    row = only(reconcile([entry], [gbp]))
    assert row.status is S.AMOUNT_MISMATCH and "currency" in row.note


def test_only_entries_a_failed_listing_day_could_hide_are_unverified() -> None:
    old = LedgerEntry("C-000001", "ORD-1", "C000001-aaaaaaaa", Decimal("1.00"), "confirmed",
                      "R-1", created_at=_at(27))
    new = LedgerEntry("C-000002", "ORD-2", "C000002-bbbbbbbb", Decimal("1.00"), "confirmed",
                      "R-2", created_at=_at(29))
    found = LedgerEntry("C-000003", "ORD-3", "C000003-cccccccc", Decimal("1.00"), "confirmed",
                        "R-3", created_at=_at(27))
    portal = [PortalRefund("R-3", Decimal("1.00"), "", "C000003-cccccccc", "bot", _at(27))]
    rows = reconcile([old, new, found], portal, unread_days=[date(2026, 11, 28)])
    status = {r.case_ref: r.status for r in rows}
    assert status == {"C-000001": S.UNVERIFIED, "C-000002": S.MISSING_IN_PORTAL,
                      "C-000003": S.MATCHED}


def test_totals_are_per_currency() -> None:
    eur = PortalRefund("R-1", Decimal("10.00"), "", "a", "x", _at(29), currency="EUR")
    gbp = PortalRefund("R-2", Decimal("7.00"), "", "b", "x", _at(29), currency="GBP")
    totals = totals_by_currency(reconcile([], [eur, gbp]))
    assert totals == {(S.NOT_IN_LEDGER, "EUR"): Decimal("10.00"),
                      (S.NOT_IN_LEDGER, "GBP"): Decimal("7.00")}


# -- in flight: another runner holds the case and is submitting ----------------------------


def _flying(**over: str) -> LedgerEntry:
    import dataclasses

    return dataclasses.replace(led(1, status="pending", number=None, **over),
                               in_flight="host-b|runner-b, lease until 10:05:00 UTC")


def test_a_pending_refund_a_live_runner_holds_is_in_flight_not_a_problem() -> None:
    paired = only(reconcile([_flying()], [ptl()]))
    assert paired.status is S.IN_FLIGHT and not paired.is_problem
    assert "R-1" in paired.note and "host-b|runner-b" in paired.note
    missing = only(reconcile([_flying()], []))
    assert missing.status is S.IN_FLIGHT and not missing.is_problem


def test_in_flight_never_hides_money_or_a_settled_intent() -> None:
    assert only(reconcile([_flying()], [ptl(amount="10.01")])).status is S.AMOUNT_MISMATCH
    import dataclasses

    absent = dataclasses.replace(_flying(), status="absent")
    assert only(reconcile([absent], [ptl()])).status is S.UNCONFIRMED
    confirmed = dataclasses.replace(_flying(), status="confirmed", refund_number="R-1")
    assert only(reconcile([confirmed], [ptl()])).status is S.MATCHED
    assert only(reconcile([confirmed], [])).status is S.MISSING_IN_PORTAL
    assert only(reconcile([_flying(order="ORD-999999")], [ptl(order="ORD-100001")])
                ).status is S.UNCONFIRMED  # another order's refund carries the key
    nobody = dataclasses.replace(_flying(), in_flight="")
    assert only(reconcile([nobody], [ptl()])).status is S.UNCONFIRMED
    assert only(reconcile([nobody], [])).status is S.MISSING_IN_PORTAL


def test_a_refund_recorded_after_the_listing_was_read_waits_only_for_its_absence() -> None:
    """Another runner recorded it while this report read: the listing may lack it. Only
    that absence waits for the next report; money and a listed refund are checked now."""
    import dataclasses

    late = dataclasses.replace(led(1), settled_late="at 03:54:05 UTC")
    missing = only(reconcile([late], []))
    assert missing.status is S.IN_FLIGHT and not missing.is_problem
    assert "R-1" in missing.note and "03:54:05" in missing.note
    assert only(reconcile([late], [ptl()])).status is S.MATCHED
    assert only(reconcile([late], [ptl(amount="10.01")])).status is S.AMOUNT_MISMATCH
    pending = dataclasses.replace(late, status="pending", refund_number=None)
    assert only(reconcile([pending], [])).status is S.MISSING_IN_PORTAL  # nobody holds it
    unread = only(reconcile([late], [], unread_days=[date(2026, 11, 29)]))
    assert unread.status is S.UNVERIFIED  # a day not read stays a break
