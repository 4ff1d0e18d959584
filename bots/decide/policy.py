"""The refund policy: preset business rules that turn facts into a decision.

Pure logic, no I/O beyond reading the YAML: every rule that fires adds a sentence
an ops agent can read in the report, so a decision is never a black box.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bots.decide.line_items import ItemAsk
from bots.models import ChargeFacts, Decision, LineItem, OrderFacts, Outcome, money


class PolicyError(Exception):
    """The policy file is invalid: the message says where."""


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refund_window_days: int = Field(30, ge=0, description="days from delivery")
    transit_buffer_days: int = Field(7, ge=0, description="assumed transit when no delivery date")
    category_window_days: dict[str, int] = {}
    final_sale_categories: list[str] = []
    refund_shipping_for: list[str] = ["damaged", "not_received", "wrong_item"]
    auto_approve_limit: Decimal = Field(Decimal("500.00"), ge=0)
    customer_auto_approve_limit: Decimal | None = Field(None, ge=0)  # per customer per period
    customer_limit_days: int = Field(30, ge=1)
    restocking_fee_percent: Decimal = Field(Decimal("0"), ge=0, le=100)
    restocking_fee_waived_for: list[str] = ["damaged", "not_received", "wrong_item"]
    refundable_statuses: list[str] = ["delivered", "shipped"]
    # Refund only the order lines (and quantities) the customer names; all when none is.
    refund_by_line_item: bool = True
    # Shipping is refunded (for the reasons above) when the whole order comes back; also
    # when only part of it does if this is true.
    refund_shipping_on_partial_return: bool = False
    # Four eyes: an agent's approved amount above the bot's proposal or above what the
    # customer asked, and above this, needs a second agent's approval (null: never).
    four_eyes_above: Decimal | None = Field(Decimal("0.00"), ge=0)

    def window_for(self, category: str) -> int:
        return self.category_window_days.get(category, self.refund_window_days)


def load_policy(path: Path) -> Policy:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise PolicyError(f"policy file not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:  # a folder, a device, unreadable bytes
        raise PolicyError(f"{path}: cannot be read as a policy file: {exc}") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        lines = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise PolicyError(f"{path}: invalid policy:\n  " + "\n  ".join(lines)) from exc


@dataclass(frozen=True)
class Claim:
    """What the customer's contacts ask for, merged across channels."""

    amounts: tuple[Decimal, ...]  # every amount any contact stated
    currency: str | None
    reason_category: str
    items: tuple[ItemAsk, ...] = ()  # the order lines the contacts name; () for all


def decide(policy: Policy, claim: Claim, order: OrderFacts, charge: ChargeFacts,
           today: date, customer_refunded: Decimal = Decimal("0.00")) -> Decision:
    """Apply the rules in the order an ops agent would check them.

    `customer_refunded` is what the bot refunded this customer within the policy's
    `customer_limit_days`, for the per-customer auto-approve limit.
    """
    reasons: list[str] = []

    if order.status not in policy.refundable_statuses:
        return _reject(f"Order status is '{order.status}': refunds need one of "
                       f"{', '.join(policy.refundable_statuses)}.")
    if claim.currency and claim.currency != charge.currency:
        # Never a rejection on what may be a misread ("$20" meant in CAD), and never a
        # payment in the order's currency of an amount asked in another: a human decides.
        return Decision(Outcome.ESCALATE, Decimal("0.00"), (
            f"The customer asks in {claim.currency} but the charge is in {charge.currency}: "
            f"the bot does not convert or guess which is meant.",))
    if charge.remaining <= 0:
        return _reject(f"Nothing left to refund: the charge of {charge.amount} {charge.currency} "
                       f"was already refunded in full.")

    asks = claim.items if policy.refund_by_line_item else ()
    eligible, excluded, item_reasons = _eligible_items(policy, order, today, asks)
    reasons += item_reasons
    if eligible == 0:
        return Decision(Outcome.REJECT, Decimal("0.00"), tuple(reasons))
    part_of_order = excluded > 0 or bool(asks) and _less_than_all(asks, order.items)

    refundable = eligible
    if policy.restocking_fee_percent and claim.reason_category not in \
            policy.restocking_fee_waived_for:
        fee = money(eligible * policy.restocking_fee_percent / 100)
        refundable -= fee
        reasons.append(f"Restocking fee of {policy.restocking_fee_percent}% ({fee}) kept: the "
                       f"reason is '{claim.reason_category}'.")
    if claim.reason_category in policy.refund_shipping_for and order.shipping_fee > 0:
        if asks and _less_than_all(asks, order.items) and \
                not policy.refund_shipping_on_partial_return:
            reasons.append(f"Shipping fee {order.shipping_fee} kept: only part of the order "
                           f"is returned.")
        else:
            refundable += order.shipping_fee
            reasons.append(f"Shipping fee {order.shipping_fee} refunded because the reason is "
                           f"'{claim.reason_category}'.")

    unsure = [a for a in asks if a.unsure]
    if unsure:
        return Decision(Outcome.ESCALATE, money(min(refundable, charge.remaining)), (
            *reasons, f"The customer gives a count for '{unsure[0].said}', which several order "
            f"lines match ({', '.join(a.sku for a in unsure)}): a human decides which and how "
            f"many."))
    if not_positive := sorted(a for a in set(claim.amounts) if a <= 0):
        # A sign or a zero the bot cannot have read right: never a negative refund, never
        # "approved 0.00". (Intake escalates a minus sign it sees; this is the last belt.)
        return Decision(Outcome.ESCALATE, money(min(refundable, charge.remaining)), (
            *reasons, f"The customer asks for {not_positive[0]}, not a positive amount: a "
                      f"human decides."))
    if len(set(claim.amounts)) > 1:
        asked_all = ", ".join(str(a) for a in sorted(set(claim.amounts)))
        return Decision(Outcome.ESCALATE, money(min(refundable, charge.remaining)),
                        (*reasons, "The customer's contacts ask for different amounts "
                                   f"({asked_all})."))

    amount = refundable
    if claim.amounts:
        asked = claim.amounts[0]
        if asked < amount:
            amount = asked
            reasons.append(f"Customer asked for {asked}, less than the {refundable} eligible.")
        elif asked > amount:
            reasons.append(f"Customer asked for {asked}; capped at the {refundable} eligible.")
    if amount > charge.remaining:
        reasons.append(f"Capped at {charge.remaining}, what remains refundable on the charge "
                       f"({charge.refunded} already refunded).")
        amount = charge.remaining
    amount = money(amount)

    if amount > policy.auto_approve_limit:
        return Decision(Outcome.ESCALATE, amount, (*reasons, f"{amount} is above the "
                        f"auto-approve limit of {policy.auto_approve_limit}: a human decides."))
    limit = policy.customer_auto_approve_limit
    if limit is not None and customer_refunded + amount > limit:
        return Decision(Outcome.ESCALATE, amount, (*reasons, f"With {customer_refunded} already "
                        f"refunded to this customer in {policy.customer_limit_days} days, "
                        f"{amount} more is above the per-customer limit of {limit}: a human "
                        f"decides."))

    full = not part_of_order and amount >= refundable and not (
        policy.restocking_fee_percent and claim.reason_category not in
        policy.restocking_fee_waived_for)
    outcome = Outcome.REFUND if full else Outcome.PARTIAL
    reasons.append(f"Approved {'full' if full else 'partial'} refund of {amount} "
                   f"{charge.currency}.")
    return Decision(outcome, amount, tuple(reasons))


def _eligible_items(policy: Policy, order: OrderFacts, today: date,
                    asks: tuple[ItemAsk, ...] = ()) -> tuple[Decimal, int, list[str]]:
    """Sum of the asked lines inside their window and not final sale, with why others are out.

    `asks` empty means every line. The count is what the customer asked for, else the
    whole line.
    """
    delivered = order.delivery_date
    reasons: list[str] = []
    if delivered is None:
        delivered = order.order_date + timedelta(days=policy.transit_buffer_days)
        reasons.append(f"No delivery date: assumed {delivered:%Y-%m-%d} (order date + "
                       f"{policy.transit_buffer_days} days transit).")
    age = (today - delivered).days
    asked = {a.sku: a for a in asks}
    if asks:
        named = ", ".join(f"'{a.said}'" for a in asks)
        reasons.append(f"The request names {named}: "
                       f"{'that line' if len(asks) == 1 else 'those lines'} of the order only.")
    total, excluded = Decimal("0.00"), 0
    for item in order.items:
        window = policy.window_for(item.category)
        if asks and item.sku not in asked:
            continue
        if item.final_sale or item.category in policy.final_sale_categories:
            excluded += 1
            reasons.append(f"{item.sku} ({item.name}) is final sale: not refundable.")
        elif age > window:
            excluded += 1
            reasons.append(f"{item.sku} ({item.name}) is outside the {window}-day refund window "
                           f"(delivered {delivered:%Y-%m-%d}, {age} days ago).")
        else:
            total += _line_total(item, asked.get(item.sku), reasons)
    return money(total), excluded, reasons


def _line_total(item: LineItem, ask: ItemAsk | None, reasons: list[str]) -> Decimal:
    if ask is None or ask.quantity is None or ask.quantity >= item.quantity:
        return item.total
    amount = money(item.unit_price * ask.quantity)
    reasons.append(f"{ask.quantity} of {item.quantity} x {item.sku} ({item.name}) asked for: "
                   f"{ask.quantity} x {item.unit_price} = {amount}.")
    return amount


def _less_than_all(asks: tuple[ItemAsk, ...], items: tuple[LineItem, ...]) -> bool:
    """Whether the asked lines and counts leave part of the order out."""
    asked = {a.sku: a for a in asks}
    return any(i.sku not in asked or (asked[i.sku].quantity or i.quantity) < i.quantity
               for i in items)


def _reject(reason: str) -> Decision:
    return Decision(Outcome.REJECT, Decimal("0.00"), (reason,))


def claim_from(amounts: Sequence[Decimal | None], currencies: Sequence[str | None],
               categories: Sequence[str], items: tuple[ItemAsk, ...] = ()) -> Claim:
    """Merge what several contacts said into one claim."""
    stated = tuple(a for a in amounts if a is not None)
    currency = next((c for c in currencies if c), None)
    category = next((c for c in categories if c and c != "other"), "other")
    return Claim(stated, currency, category, items)
