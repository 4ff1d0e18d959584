"""A corpus of what real shared inboxes hold (issue #12, section 5), with expected outcomes.

tests/fixtures/inbox/*.eml were written by `make_corpus.py` beside them; expected.json says
for each what it must become: a request (whose customer, which order, which amount, which
doubt) or quarantined (with which words in the reason). Never an empty request that would
become a whole-order refund, never a quoted price or a company's share capital as the claim.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from paths import ROOT

from bots.intake.eml import parse_eml_bytes
from bots.models import Quarantined, RefundRequest

CORPUS = ROOT / "tests" / "fixtures" / "inbox"
EXPECTED: dict[str, dict[str, Any]] = json.loads((CORPUS / "expected.json").read_text())


def test_the_corpus_covers_every_kind() -> None:
    assert len(EXPECTED) >= 25
    assert sorted(p.name for p in CORPUS.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_inbox_mail(name: str) -> None:
    want = EXPECTED[name]
    item = parse_eml_bytes((CORPUS / name).read_bytes(), source_ref=name)
    if want["outcome"] == "quarantined":
        assert isinstance(item, Quarantined), item
        assert want["reason"].lower() in item.reason.lower(), item.reason
        return
    assert isinstance(item, RefundRequest), item
    for key in ("customer_email", "order_number", "currency"):
        if key in want:
            assert getattr(item, key) == want[key], (key, getattr(item, key))
    if "amount" in want:
        expected = Decimal(want["amount"]) if want["amount"] is not None else None
        assert item.requested_amount == expected, item.requested_amount
    if "doubt" in want:
        assert any(want["doubt"] in d for d in item.doubts), item.doubts
    if want.get("no_doubts"):
        assert item.doubts == (), item.doubts
