from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from paths import ROOT

from bots.decide.signals import (
    Assessment,
    Contact,
    SignalContext,
    SignalsError,
    SignalSettings,
    assess,
    auth_failure,
    customer_window_start,
    escalate_decision,
    load_signals,
    parse_auth_results,
    store_window_start,
    trusted_auth_headers,
)
from bots.intake import parse_eml_bytes
from bots.models import ChargeFacts, Decision, LineItem, OrderFacts, Outcome, RefundRequest

D = Decimal
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
OURS = "mx.shop.example"
TRUSTED = [OURS]
PASS_HEADER = f"{OURS}; spf=pass smtp.mailfrom=ada@example.org; dkim=pass header.d=example.org; " \
              "dmarc=pass header.from=example.org"
FAIL_HEADER = f"{OURS}; spf=fail smtp.mailfrom=ada@example.org; dkim=none; " \
              "dmarc=fail header.from=example.org"

SETTINGS = SignalSettings(trusted_authserv_ids=TRUSTED)

ORDER = OrderFacts(
    order_number="ORD-100001", customer_name="Ada Lovelace", email="ada@example.org",
    phone="+44 20 0000 0000", order_date=date(2026, 11, 1), delivery_date=date(2026, 11, 5),
    status="delivered",
    items=(LineItem("SKU-1", "Kettle", "home", D("100.00"), 1),),
    shipping_fee=D("0.00"), currency="EUR", payment_card="**** 1111", total=D("100.00"),
)
CHARGE = ChargeFacts("TXN-1", "ORD-100001", D("100.00"), "EUR", D("0.00"))
CONTACT = Contact("email", "ada@example.org", PASS_HEADER, datetime(2026, 11, 18, 9, 0, tzinfo=UTC),
                  "damaged")


def base(**changes: Any) -> SignalContext:
    """A case on which no signal fires; each test changes one thing."""
    ctx = SignalContext(
        order=ORDER, charge=CHARGE, contacts=(CONTACT,), amount=D("50.00"), now=NOW,
        customer_refunds=[], store_refunds_in_window=0, customer_order_count=10,
        customer_order_totals=[D("80.00"), D("100.00"), D("120.00")],
    )
    return dataclasses.replace(ctx, **changes)


def contact(**changes: Any) -> tuple[Contact, ...]:
    return (dataclasses.replace(CONTACT, **changes),)


def order(**changes: Any) -> OrderFacts:
    return dataclasses.replace(ORDER, **changes)


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def fired(ctx: SignalContext, settings: SignalSettings = SETTINGS) -> dict[str, str]:
    return {s.name: s.explanation for s in assess(settings, ctx).signals}


def test_the_base_case_is_clean() -> None:
    result = assess(SETTINGS, base())
    assert result == Assessment((), 0, False, "No fraud or abuse signal fired.")


# (signal, context, fires?) -- every signal has cases on both sides of its line.
CASES: list[tuple[str, Callable[[], SignalContext], bool]] = [
    ("customer_velocity", lambda: base(customer_refunds=[(ago(5), D("20")), (ago(10), D("30"))]),
     True),
    ("customer_velocity", lambda: base(customer_refunds=[(ago(5), D("20"))]), False),
    ("customer_velocity", lambda: base(customer_refunds=[(ago(40), D("20")), (ago(50), D("9"))]),
     False),
    ("customer_velocity",  # naive datetimes are UTC, as the queue stores them
     lambda: base(customer_refunds=[(ago(1).replace(tzinfo=None), D("1"))] * 2), True),
    ("store_velocity", lambda: base(store_refunds_in_window=40), True),
    ("store_velocity", lambda: base(store_refunds_in_window=39), False),
    ("refund_ratio", lambda: base(customer_order_count=4,
                                  customer_refunds=[(ago(90), D("5")), (ago(120), D("5"))]), True),
    ("refund_ratio", lambda: base(customer_order_count=6,
                                  customer_refunds=[(ago(90), D("5")), (ago(120), D("5"))]), False),
    ("refund_ratio", lambda: base(customer_order_count=2,  # too few orders to judge
                                  customer_refunds=[(ago(90), D("5"))]), False),
    ("refund_ratio", lambda: base(customer_order_count=None,
                                  customer_refunds=[(ago(90), D("5"))] * 5), False),
    ("amount_vs_usual", lambda: base(amount=D("300.01")), True),
    ("amount_vs_usual", lambda: base(amount=D("300.00")), False),
    ("amount_vs_usual", lambda: base(amount=D("900.00"),  # too little history to know
                                     customer_order_totals=[D("10"), D("20")]), False),
    ("amount_vs_usual", lambda: base(amount=D("900.00"), customer_order_totals=[]), False),
    ("sender_mismatch", lambda: base(contacts=contact(customer_email="eve@evil.example")), True),
    ("reply_to_elsewhere", lambda: base(contacts=contact(reply_to="eve@evil.example")), True),
    ("reply_to_elsewhere", lambda: base(contacts=contact(reply_to="ADA@example.org")), False),
    ("sender_mismatch", lambda: base(contacts=contact(customer_email="ADA@Example.org ")), False),
    ("sender_mismatch", lambda: base(contacts=contact(channel="phone", customer_email=None,
                                                      auth_results=None)), False),
    ("email_auth", lambda: base(contacts=contact(auth_results=FAIL_HEADER)), True),
    ("email_auth", lambda: base(contacts=contact(auth_results=FAIL_HEADER.replace(
        OURS, "mx.evil.example"))), False),
    ("email_auth", lambda: base(contacts=contact(auth_results=None)), False),
    ("not_received_but_delivered", lambda: base(contacts=contact(reason_category="not_received")),
     True),
    ("not_received_but_delivered",  # delivery date passed, status not updated: still delivered
     lambda: base(contacts=contact(reason_category="not_received"), order=order(status="shipped")),
     True),
    ("not_received_but_delivered",
     lambda: base(contacts=contact(reason_category="not_received"),
                  order=order(status="shipped", delivery_date=None)), False),
    ("not_received_but_delivered", lambda: base(contacts=contact(reason_category="damaged")),
     False),
    ("early_claim", lambda: base(contacts=contact(received_at=datetime(2026, 11, 4, tzinfo=UTC))),
     True),  # before the delivery on 11-05
    ("early_claim", lambda: base(order=order(status="shipped", delivery_date=None),
                                 contacts=contact(received_at=datetime(2026, 11, 2, tzinfo=UTC))),
     True),  # one day after the order
    ("early_claim", lambda: base(order=order(status="shipped", delivery_date=None),
                                 contacts=contact(received_at=datetime(2026, 11, 3, tzinfo=UTC))),
     False),  # two days after: not early with early_claim_days 2
    ("early_claim", lambda: base(contacts=contact(received_at=datetime(2026, 11, 5, tzinfo=UTC))),
     False),  # on the delivery day
]


@pytest.mark.parametrize(("name", "make", "fires"), CASES,
                         ids=[f"{n}-{'fires' if f else 'quiet'}-{i}"
                              for i, (n, _, f) in enumerate(CASES)])
def test_each_signal_fires_only_across_its_line(name: str, make: Callable[[], SignalContext],
                                                 fires: bool) -> None:
    got = fired(make())
    if fires:
        assert set(got) == {name}, got  # and nothing else: every case changes one fact
        assert got[name].endswith(".") and len(got[name]) > 30
    else:
        assert name not in got, got


def test_every_signal_has_both_kinds_of_case() -> None:
    names = set(type(SETTINGS.scores).model_fields)
    assert {n for n, _, f in CASES if f} == names
    assert {n for n, _, f in CASES if not f} == names


def test_explanations_say_what_an_agent_checks() -> None:
    got = fired(base(customer_refunds=[(ago(5), D("20")), (ago(10), D("30"))],
                     store_refunds_in_window=40, amount=D("450.00"),
                     contacts=contact(customer_email="eve@evil.example",
                                      reason_category="not_received", auth_results=FAIL_HEADER)))
    assert got["customer_velocity"].startswith(
        "3 refunds for this customer in the last 30 days counting this one (limit 2); "
        "earlier ones on 2026-11-10, 2026-11-15.")
    assert got["store_velocity"].startswith("41 refunds store-wide in the last 24 hours")
    assert got["amount_vs_usual"] == ("Refund of 450.00 EUR is 4.5× this customer's usual order "
                                      "value (median 100.00 over 3 orders; limit 3×).")
    assert got["sender_mismatch"] == ("Request from eve@evil.example (email) but order "
                                      "ORD-100001 belongs to ada@example.org.")
    assert "DMARC fail for example.org" in got["email_auth"]
    assert got["not_received_but_delivered"] == (
        "Customer says the order never arrived (claimed 2026-11-18) but the order system shows "
        "it delivered on 2026-11-05 (before the claim).")
    ratio = fired(base(customer_order_count=4, customer_refunds=[(ago(90), D("5"))] * 2))
    assert ratio["refund_ratio"] == "This would be refund 3 on 4 orders for this customer " \
                                    "(75%, limit 50%)."


# -- score, threshold, decision --------------------------------------------------------------


def test_scores_add_up_and_escalate_at_the_threshold() -> None:
    weak = base(amount=D("400.00"))  # amount_vs_usual: 20
    result = assess(SETTINGS, weak)
    assert (result.score, result.escalate) == (20, False)
    assert result.summary == ("Fraud signals scored 20, below the escalation threshold of 50: "
                              "amount vs usual.")
    both = base(amount=D("400.00"), contacts=contact(received_at=datetime(2026, 11, 2,
                                                                          tzinfo=UTC)))
    result = assess(SETTINGS, both)  # + early_claim: 20 -> 40, still below
    assert (result.score, result.escalate) == (40, False)
    result = assess(SETTINGS.model_copy(update={"escalate_at_score": 40}), both)
    assert result.escalate and result.summary.startswith("Fraud signals scored 40 (escalation at "
                                                          "40): amount vs usual, early claim")


def test_a_zero_score_switches_a_signal_off() -> None:
    scores = SETTINGS.scores.model_copy(update={"store_velocity": 0})
    result = assess(SETTINGS.model_copy(update={"scores": scores}),
                    base(store_refunds_in_window=100))
    assert result.score == 0 and not result.escalate


def test_signals_turn_a_payment_into_an_escalation_never_a_rejection() -> None:
    risky = assess(SETTINGS, base(contacts=contact(auth_results=FAIL_HEADER)))
    assert risky.escalate
    pay = Decision(Outcome.REFUND, D("50.00"), ("Approved full refund of 50.00 EUR.",))
    out = escalate_decision(pay, risky)
    assert out.outcome is Outcome.ESCALATE and out.amount == D("50.00")
    assert out.reasons[0] == pay.reasons[0] and risky.summary in out.reasons
    assert any("forged" in r for r in out.reasons)
    reject = Decision(Outcome.REJECT, D("0.00"), ("Outside the window.",))
    assert escalate_decision(reject, risky) is reject
    calm = assess(SETTINGS, base())
    assert escalate_decision(pay, calm) is pay


def test_window_helpers_for_the_callers_queries() -> None:
    assert customer_window_start(SETTINGS, NOW) == NOW - timedelta(days=30)
    assert store_window_start(SETTINGS, NOW.replace(tzinfo=None)) == NOW - timedelta(hours=24)


def test_contact_from_a_request() -> None:
    req = RefundRequest("email", "m1", NOW, "text", customer_email="ada@example.org",
                        auth_results=FAIL_HEADER, reason_category="not_received")
    assert Contact.of(req) == Contact("email", "ada@example.org", FAIL_HEADER, NOW, "not_received")


# -- Authentication-Results ----------------------------------------------------------------


@pytest.mark.parametrize(("raw", "why"), [
    (FAIL_HEADER, "DMARC fail for example.org"),
    (PASS_HEADER, None),
    # DMARC pass outweighs SPF and DKIM failures (forwarding, mailing lists)
    (f"{OURS}; spf=fail; dkim=fail; dmarc=pass", None),
    # without DMARC: one method that passes is enough ...
    (f"{OURS}; spf=fail; dkim=pass header.d=example.org", None),
    (f"{OURS}; spf=softfail smtp.mailfrom=a@b.example; dkim=none", "SPF softfail for a@b.example"),
    (f"{OURS}; spf=none; dkim=fail header.d=b.example", "DKIM fail for b.example"),
    (f"{OURS}; spf=fail; dkim=fail; dmarc=none", "SPF fail, DKIM fail"),
    (f"{OURS}; spf=neutral; dkim=none; dmarc=none", None),
    (f"{OURS}; none", None),
    # case, comments (nested, holding ';' and '='), versions, quoted strings
    ("MX.Shop.Example 1 (our (edge) mx; dmarc=pass); DMARC = FAIL (p=reject; dis=none) "
     "header.from=evil.example", "DMARC fail for evil.example"),
    (f"{OURS}; dmarc=fail header.from=\"odd;name.example\"", "DMARC fail for odd;name.example"),
    (f"{OURS}; spf/1=pass (sender is authorised); dmarc=none", None),
    (f"{OURS}; spf=FAIL; dkim=FAIL", "SPF fail, DKIM fail"),
    ("", None),
    ("garbage without structure", None),
    ("(only a comment", None),
])
def test_trusted_header_rules(raw: str, why: str | None) -> None:
    assert auth_failure(raw, TRUSTED) == why


def test_headers_from_untrusted_servers_are_ignored() -> None:
    assert auth_failure("mx.evil.example; dmarc=fail", TRUSTED) is None
    assert auth_failure(FAIL_HEADER, []) is None  # no trusted server configured: signal off
    assert fired(base(contacts=contact(auth_results="mx.other.example; spf=fail; dkim=fail; "
                                                   "dmarc=fail"))) == {}


def test_forged_header_above_the_trusted_one_is_ignored() -> None:
    forged = "mx.evil.example; spf=pass; dkim=pass; dmarc=pass"
    assert auth_failure(f"{forged}\n{FAIL_HEADER}", TRUSTED) == "DMARC fail for example.org"
    assert auth_failure(f"mx.evil.example; dmarc=fail\n{PASS_HEADER}", TRUSTED) is None


def test_trusted_looking_header_below_a_foreign_one_is_ignored() -> None:
    # The sender wrote it into the message before any of our servers saw it.
    raw = f"{PASS_HEADER}\nmx.relay.example; none\n{OURS}; dmarc=fail header.from=example.org"
    assert [h.authserv_id for h in trusted_auth_headers(raw, TRUSTED)] == [OURS]
    assert auth_failure(raw, TRUSTED) is None


def test_a_forged_pass_next_to_ours_cannot_hide_our_fail() -> None:
    raw = f"{FAIL_HEADER}\n{OURS}; spf=pass; dkim=pass; dmarc=pass"
    assert auth_failure(raw, TRUSTED) == "DMARC fail for example.org"


def test_results_of_several_trusted_headers_combine() -> None:
    # One header per milter (SPF, DKIM, DMARC), all written by our server.
    spf_then_dmarc = f"{OURS}; spf=fail smtp.mailfrom=x@y.example\n{OURS}; dmarc=fail"
    assert auth_failure(spf_then_dmarc, TRUSTED) == "DMARC fail"
    assert auth_failure(f"{OURS}; spf=fail\n{OURS}; dkim=pass", TRUSTED) is None
    assert auth_failure(f"{OURS}; spf=fail\nmx2.shop.example; dkim=pass",
                        [OURS, "MX2.shop.example"]) is None


def test_parse_auth_results_reads_rfc8601() -> None:
    header = parse_auth_results("mx.shop.example (v2); spf=fail smtp.mailfrom=a@b.example "
                                "(sender not allowed); dkim=pass reason=\"good sig\" "
                                "header.d=b.example header.s=sel; dmarc=fail header.from=b.example")
    assert header is not None and header.authserv_id == OURS
    assert [(r.method, r.result) for r in header.results] == [
        ("spf", "fail"), ("dkim", "pass"), ("dmarc", "fail")]
    assert header.results[1].properties == {"header.d": "b.example", "header.s": "sel"}
    assert parse_auth_results("; spf=fail") is None
    assert parse_auth_results("   ") is None


# -- settings --------------------------------------------------------------------------------


def test_the_shipped_config_loads() -> None:
    settings = load_signals(ROOT / "config" / "signals.yaml")
    assert settings.trusted_authserv_ids == [OURS]
    assert settings.escalate_at_score == 50 and settings.max_refund_ratio == D("0.5")
    assert settings.scores.email_auth >= settings.escalate_at_score  # a spoof escalates alone


@pytest.mark.parametrize(("text", "expected"), [
    ("customer_velocty: 3\n", "customer_velocty: Extra inputs are not permitted"),
    ("scores:\n  dmarc: 10\n", "scores.dmarc: Extra inputs are not permitted"),
    ("customer_velocity: 0\n", "customer_velocity: Input should be greater than or equal to 1"),
    ("max_refund_ratio: -1\n", "max_refund_ratio: Input should be greater than 0"),
    ("escalate_at_score: lots\n", "escalate_at_score: Input should be a valid integer"),
    ("scores:\n  email_auth: -5\n", "scores.email_auth: Input should be greater than or equal"),
    ("trusted_authserv_ids: ['mx.shop.example; dmarc=pass']\n", "is not an authserv-id"),
    ("- just\n- a list\n", "expected a mapping of settings, got list"),
    ("store_velocity: [unclosed\n", "not valid YAML"),
])
def test_settings_errors_are_clear(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "signals.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SignalsError) as err:
        load_signals(path)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_missing_settings_file(tmp_path: Path) -> None:
    with pytest.raises(SignalsError, match="signals file not found"):
        load_signals(tmp_path / "nope.yaml")


def test_empty_file_gives_the_defaults_and_ids_are_normalised(tmp_path: Path) -> None:
    path = tmp_path / "signals.yaml"
    path.write_text("trusted_authserv_ids: ['  MX.Shop.Example ']\n", encoding="utf-8")
    assert load_signals(path).trusted_authserv_ids == [OURS]
    path.write_text("", encoding="utf-8")
    assert load_signals(path) == SignalSettings()


# -- intake: the headers the signals need ---------------------------------------------------


def test_eml_keeps_authentication_results_and_message_id() -> None:
    data = (
        b"Authentication-Results: mx.shop.example;\r\n"
        b"\tspf=fail smtp.mailfrom=eve@evil.example (not\r\n"
        b"  allowed);\r\n"
        b" dmarc=fail header.from=example.org\r\n"
        b"Authentication-Results: mx.evil.example; dmarc=pass\r\n"
        b"Message-ID:\r\n <folded-1@mail.example>\r\n"
        b"From: Ada <ada@example.org>\r\n"
        b"To: refunds@shop.example\r\n"
        b"Subject: Refund ORD-100001\r\n"
        b"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n"
        b"\r\n"
        b"It never arrived, please refund ORD-100001.\r\n"
    )
    req = parse_eml_bytes(data, source_ref="t.eml")
    assert isinstance(req, RefundRequest)
    assert req.auth_results == (
        "mx.shop.example;\tspf=fail smtp.mailfrom=eve@evil.example (not  allowed); "
        "dmarc=fail header.from=example.org\n"
        "mx.evil.example; dmarc=pass")
    assert req.in_reply_to == "<folded-1@mail.example>"
    assert req.source_id == "folded-1@mail.example"
    got = fired(base(contacts=(Contact.of(req),)))
    assert "DMARC fail for example.org" in got["email_auth"]


def test_eml_without_those_headers() -> None:
    data = b"From: ada@example.org\r\nSubject: Refund ORD-100001\r\n\r\nBroken, refund it.\r\n"
    req = parse_eml_bytes(data, source_ref="t.eml")
    assert isinstance(req, RefundRequest)
    assert req.auth_results is None and req.in_reply_to is None


def test_eml_header_with_undecodable_bytes_is_kept_readable() -> None:
    data = (b"Authentication-Results: mx.shop.example; dmarc=fail header.from=\xff.example\r\n"
            b"Message-ID: <m2@mail.example>\r\n"
            b"From: ada@example.org\r\nSubject: Refund ORD-100001\r\n\r\nBroken.\r\n")
    req = parse_eml_bytes(data, source_ref="t.eml")
    assert isinstance(req, RefundRequest)
    assert req.auth_results == "mx.shop.example; dmarc=fail header.from=\ufffd.example"
    assert req.in_reply_to == "<m2@mail.example>"
