"""Sentiment and urgency: priority and routing only, never eligibility, never the amount."""

from __future__ import annotations

import ast
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from paths import ROOT

from bots.decide.line_items import items_asked
from bots.decide.policy import Policy, claim_from, decide
from bots.intake.extract import classify_reason
from bots.intake.sentiment import score
from bots.intake.triage import triage
from bots.models import ChargeFacts, LineItem, OrderFacts, RefundRequest
from bots.queue import Queue
from bots.reports.escalations import write_escalations

TODAY = date(2026, 12, 1)


@pytest.mark.parametrize(("text", "language", "priority", "words"), [
    ("The jacket arrived damaged, please refund me.", "en", 0, ()),
    ("This is outrageous and disgusting. Worst shop ever, I am furious!!!", "en", 1, ()),
    ("Refund me immediately or I file a chargeback with my bank.", "en", 3, ("chargeback",)),
    ("My lawyer will contact you, and the press will hear about it.", "en", 2,
     ("lawyer", "press")),
    ("Das ist eine Frechheit und Abzocke! Ich gehe zum Rechtsanwalt.", "de", 3, ("lawyer",)),
    ("C'est une arnaque scandaleuse, je fais une contestation bancaire !", "fr", 3,
     ("bank dispute",)),
    ("Es una vergüenza, quiero mi dinero urgente.", "es", 2, ()),
    ("Vorrei un rimborso, altrimenti faccio un chargeback.", "it", 2, ("chargeback",)),
])
def test_priority_from_sentiment_urgency_and_escalation_words(
        text: str, language: str, priority: int, words: tuple[str, ...]) -> None:
    found = score(text, language)
    assert found.priority == priority, found.describe()
    assert found.escalation_words == words
    described = found.describe()
    assert described.startswith(f"priority {priority}: ")
    if language == "it":
        assert found.sentiment is None and "none (it)" in described  # said, not guessed


def test_the_words_that_drove_the_score_are_named() -> None:
    found = score("I am furious, this is a scam and totally unacceptable!", "en")
    assert found.angry and {"furious", "scam"} <= set(found.negative_words)
    assert "negative words: " in found.describe()


def _order(*items: LineItem) -> OrderFacts:
    total = sum((i.total for i in items), Decimal("0")) + Decimal("4.90")
    return OrderFacts("ORD-100001", "Ada", "ada@example.com", "", TODAY - timedelta(days=8),
                      TODAY - timedelta(days=5), "delivered", items, Decimal("4.90"), "EUR",
                      "VISA **** 4242", total)


CALM_AND_ANGRY = [
    ("The jacket arrived damaged.",
     "The jacket arrived damaged. This is a disgrace, I am furious, my lawyer and my bank "
     "will hear about it: chargeback if you do not refund IMMEDIATELY!!!"),
    ("Two of the three candles arrived broken.",
     "Two of the three candles arrived broken. Absolutely pathetic. Terrible service."),
    ("Die Jacke kam beschädigt an.",
     "Die Jacke kam beschädigt an. Eine Frechheit, ich gehe zum Anwalt, sofort erstatten!"),
    ("I changed my mind, 40 EUR please.",
     "I changed my mind, 40 EUR please. Hurry up, this is urgent, useless shop."),
]


@pytest.mark.parametrize(("calm", "angry"), CALM_AND_ANGRY)
def test_anger_never_changes_eligibility_or_the_amount(calm: str, angry: str) -> None:
    items = (LineItem("AP-1", "Waterproof jacket", "apparel", Decimal("80.00"), 1),
             LineItem("HO-3", "Scented candle", "home", Decimal("10.00"), 3))
    order = _order(*items)
    charge = ChargeFacts("TX-1", order.order_number, order.total, "EUR", Decimal("0"))
    decisions = []
    for text in (calm, angry):
        req = triage(RefundRequest("chat", text, datetime(2026, 11, 30, tzinfo=UTC), text,
                                   requested_amount=Decimal("40") if "40" in text else None))
        claim = claim_from([req.requested_amount], [req.currency], [classify_reason(text)],
                           items_asked([text], order.items))
        decisions.append((req.priority, decide(Policy(), claim, order, charge, TODAY)))
    (calm_priority, calm_decision), (angry_priority, angry_decision) = decisions
    assert angry_priority > calm_priority  # it does route...
    assert angry_decision == calm_decision  # ...and nothing else: same outcome, amount, reasons


def test_decision_code_never_reads_the_sentiment() -> None:
    """The policy, the signals and the processor do not import the triage at all."""
    for path in [*(ROOT / "bots/decide").glob("*.py"), *(ROOT / "bots/legacy").glob("*.py"),
                 ROOT / "bots/work/processing.py"]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {"bots.intake.sentiment", "bots.intake.triage"} & names, path


def _store(queue: Queue, texts: list[str]) -> None:
    at = datetime(2026, 11, 30, tzinfo=UTC)
    queue.store_requests([triage(RefundRequest(
        "email", f"m{i}", at + timedelta(minutes=i), text, customer_email=f"c{i}@x.example",
        order_number=f"ORD-1{i:05d}")) for i, text in enumerate(texts)])


CALM = "Hello, the mug is chipped, could you refund it? Thanks."
ANGRY = "This is outrageous and disgusting, the mug is chipped. I am furious!!!"
THREAT = "Refund the chipped mug now or I will file a chargeback with my bank."


def test_angry_customers_are_claimed_first(tmp_path: Path) -> None:
    """The priority effect: of 12 cases the 2 angry ones, written last, are worked first."""
    queue = Queue(f"sqlite:///{tmp_path / 'q.sqlite'}")
    _store(queue, [CALM] * 10 + [ANGRY, THREAT])
    order = []
    while (case := queue.claim("w1", 60)) is not None:
        order.append(case.order_number)
    assert order[:2] == ["ORD-100011", "ORD-100010"]  # chargeback (3), then angry (1)
    assert order[2:] == [f"ORD-1{i:05d}" for i in range(10)]  # then oldest first
    without = sorted(range(12))  # what first-in-first-out would have done
    assert without.index(11) + 1 == 12 and order.index("ORD-100011") + 1 == 1


def test_escalations_are_sorted_angriest_first_with_the_evidence(tmp_path: Path) -> None:
    import openpyxl

    queue = Queue(f"sqlite:///{tmp_path / 'q.sqlite'}")
    _store(queue, [CALM, THREAT, ANGRY])
    for _ in range(3):
        case = queue.claim("w1", 60)
        assert case is not None
        queue.finish(case.lease, state="escalated", outcome="escalated", reason="Above limit.",
                     actor="w1", run_id=None)
    path = write_escalations(tmp_path / "e.xlsx", queue.cases(["escalated"]), "run-1")
    sheet = openpyxl.load_workbook(path).active
    assert sheet is not None
    headers = [c.value for c in sheet[1]]
    rows = [[c.value for c in r] for r in sheet.iter_rows(min_row=2) if r[0].value]
    assert [r[headers.index("Order")] for r in rows] == ["ORD-100001", "ORD-100002",
                                                         "ORD-100000"]
    assert [r[headers.index("Priority")] for r in rows] == [2, 1, 0]
    assert "escalation words: chargeback" in rows[0][headers.index("Priority")+1]
    trail = " ".join(a.detail for a in queue.audit_trail(2))
    assert "priority 2: sentiment" in trail and "chargeback" in trail
