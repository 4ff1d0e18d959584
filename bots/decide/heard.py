"""What a machine heard in a voicemail is never a reason to pay or to reject on its own.

A voicemail's order number comes from speech recognition (`bots.intake.voice`). Before
the bot acts on it, it must be confirmed by something a machine did not hear: the
caller id. These checks say, in words for the escalation, when it is not:

- every contact is a voicemail and intake already had doubts: escalate before looking
  anything up (a misheard number must not even lead to a "not found" rejection);
- the caller id finds no order: escalate (the customer may have called from another
  phone, or said the number we could not hear), never "no order found";
- the heard order number is not in the order system, or its order belongs to another
  phone number than the caller's: escalate.

A case where another channel (an email, a chat) names the same order number is not
"heard only": that contact is the evidence, and the usual rules apply.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from bots.models import Channel, OrderFacts

VOICE = Channel.VOICE.value
PHONE_DIGITS = 9  # phone numbers are compared on their last 9 digits, as the order system does


class _Contact(Protocol):
    channel: str
    order_number: str | None
    customer_phone: str | None
    source_ref: str
    reason_text: str

    @property
    def doubt_list(self) -> list[str]: ...


def _tail(phone: str | None) -> str:
    return re.sub(r"\D", "", phone or "")[-PHONE_DIGITS:]


def voice_only(contacts: Sequence[_Contact]) -> bool:
    return bool(contacts) and all(c.channel == VOICE for c in contacts)


def before_lookup(contacts: Sequence[_Contact]) -> str | None:
    """Voicemail-only case that intake was unsure about: escalate before any lookup."""
    if not voice_only(contacts):
        return None
    doubts = [d for c in contacts for d in c.doubt_list]
    if not doubts:
        return None
    return ("Not sure what the caller asks: " + "; ".join(doubts)
            + ". A human listens to the recording and decides.")


def no_caller_match(contacts: Sequence[_Contact], caller: str) -> str | None:
    """The caller id of a voicemail-only case finds no order: a human, not a rejection."""
    if not voice_only(contacts):
        return None
    where = ", ".join(c.source_ref for c in contacts)
    return (f"No order found for the caller id {caller}, and no order number could be "
            f"heard for sure in the voicemail ({where}): a human listens to it.")


def order_not_confirmed(contacts: Sequence[_Contact], order_number: str,
                        order: OrderFacts | None) -> str | None:
    """A heard order number that the caller id does not confirm (see module doc)."""
    named = [c for c in contacts if (c.order_number or "").upper() == order_number.upper()]
    if not named or any(c.channel != VOICE for c in named):
        return None  # found by caller id, or named on a channel a human typed
    where = ", ".join(c.source_ref for c in named)
    if order is None:
        return (f"Order {order_number} was heard by machine in a voicemail ({where}) and is "
                f"not in the order system: a human listens to the recording.")
    callers = {_tail(c.customer_phone) for c in named if c.customer_phone}
    if not callers or _tail(order.phone) not in callers:
        return (f"Order {order_number} was heard by machine in a voicemail ({where}), but "
                f"the caller id does not match the order's phone number: a human listens "
                f"to the recording before anything is decided.")
    return None
