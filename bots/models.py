"""Typed records passed between the bots' stages.

Every stage boundary (intake -> queue -> processing -> report) speaks in these
dataclasses so that pure logic can be tested without a browser or a database.
Money is always `Decimal` (never float): refunds are compared to the cent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

CENT = Decimal("0.01")


def money(value: Decimal | int | str | float) -> Decimal:
    """Round to cents the way accountants do (half up), from any numeric input."""
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


class Channel(StrEnum):
    EMAIL = "email"
    SPREADSHEET = "spreadsheet"
    CHAT = "chat"
    SOCIAL = "social"
    PHONE = "phone"
    PORTAL = "portal"
    VOICE = "voice"  # voicemail / IVR recordings, transcribed offline


@dataclass(frozen=True)
class RefundRequest:
    """One customer contact asking for a refund, in canonical form.

    `source_id` is unique within its channel (a Message-ID, a file hash + sheet +
    row content hash...) so that reading the same source twice adds nothing.
    """

    channel: str
    source_id: str
    received_at: datetime
    reason_text: str
    customer_email: str | None = None
    customer_name: str | None = None
    customer_phone: str | None = None
    order_number: str | None = None
    requested_amount: Decimal | None = None
    currency: str | None = None
    reason_category: str = "other"
    reply_to: str | None = None  # address / handle the answer goes back to
    source_ref: str = ""  # where it came from, for humans: file path, mailbox/uid
    customer_handle: str | None = None  # social/chat handle: weak identity evidence only
    auth_results: str | None = None  # email: Authentication-Results header(s), raw, one per line
    in_reply_to: str | None = None  # email: the Message-ID to thread the answer to
    # What intake could not read for sure (a minus sign, a currency it cannot map, two
    # orders named...): a case with any doubt is escalated to a human with these words.
    doubts: tuple[str, ...] = ()
    language: str | None = None  # ISO 639-1 of the customer's text, when detected
    priority: int = 0  # higher first (angry, urgent); routing only, never the amount
    # Why that priority, in words (sentiment score and the words that drove it): written to
    # the case's audit trail at intake as evidence. Routing only, like `priority`.
    triage: str = ""


@dataclass(frozen=True)
class Quarantined:
    """Input that could not become a request. Never dropped: it goes in the report."""

    channel: str
    source_id: str
    reason: str
    excerpt: str = ""
    source_ref: str = ""


IntakeItem = RefundRequest | Quarantined


@dataclass(frozen=True)
class LineItem:
    sku: str
    name: str
    category: str
    unit_price: Decimal
    quantity: int
    final_sale: bool = False

    @property
    def total(self) -> Decimal:
        return money(self.unit_price * self.quantity)


@dataclass(frozen=True)
class OrderFacts:
    """What the legacy order system shows for one order."""

    order_number: str
    customer_name: str
    email: str
    phone: str
    order_date: date
    delivery_date: date | None
    status: str
    items: tuple[LineItem, ...]
    shipping_fee: Decimal
    currency: str
    payment_card: str  # masked, as displayed
    total: Decimal


@dataclass(frozen=True)
class PortalRefund:
    """One row of a charge's refund history (or of the portal's refund listing)."""

    refund_id: str
    amount: Decimal
    reason: str
    reference: str
    operator: str
    created_at: datetime
    order_number: str = ""
    currency: str = ""
    transaction_id: str = ""  # the charge it refunds, when the listing shows it


@dataclass(frozen=True)
class ChargeFacts:
    """What the legacy payment portal shows for the charge behind an order."""

    transaction_id: str
    order_number: str
    amount: Decimal
    currency: str
    refunded: Decimal
    refunds: tuple[PortalRefund, ...] = ()

    @property
    def remaining(self) -> Decimal:
        return money(self.amount - self.refunded)


class Outcome(StrEnum):
    REFUND = "refund"
    PARTIAL = "partial"
    REJECT = "reject"
    ESCALATE = "escalate"


@dataclass(frozen=True)
class Decision:
    """A policy decision, with the rules that fired in words an ops agent reads."""

    outcome: Outcome
    amount: Decimal
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def pays(self) -> bool:
        return self.outcome in (Outcome.REFUND, Outcome.PARTIAL) and self.amount > 0
