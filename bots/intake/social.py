"""Social-media intake: direct messages and mentions exported by social inbox tools.

One record is one message: a platform, the author's handle and display name,
the text and when it was sent. A handle is how the answer goes back (it is
`reply_to`, "twitter:@ana_b") and weak evidence of who wrote: anyone can call
themselves anything, so it never stands in for the order's email. An email is
kept only when the export has one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bots.intake.exports import (
    Picker,
    json_rows,
    merge_fields,
    outbound_mark,
    pick_cells,
    read_export,
)
from bots.intake.extract import DEFAULT_ORDER_PATTERNS
from bots.intake.records import (
    FieldOverrides,
    Options,
    Rows,
)
from bots.models import Channel, IntakeItem

CHANNEL = Channel.SOCIAL.value
SUFFIXES = (".json", ".jsonl", ".ndjson")

DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "source_id": ("id", "id_str", "message_id", "post_id", "tweet_id"),
    "received_at": ("created_at", "timestamp", "created_time", "date", "time", "sent_at"),
    "reason_text": ("text", "full_text", "message", "body", "content", "caption"),
    "customer_handle": ("handle", "username", "screen_name", "author.handle",
                        "author.username", "user.screen_name", "user.username",
                        "from.username", "sender.handle"),
    "customer_name": ("display_name", "author.name", "author.display_name", "user.name",
                      "from.name", "sender.name", "name"),
    "customer_email": ("email", "author.email", "user.email"),
    "customer_phone": ("phone", "author.phone"),
    "platform": ("platform", "network", "channel", "source"),
    "order_number": ("order_number", "orderNumber", "order"),
    "requested_amount": ("requested_amount", "refund_amount", "amount"),
    "currency": ("currency",),
    "reason_category": ("reason_category", "reason_code"),
}
FIELDS = tuple(DEFAULT_FIELDS)


def read_social_export(path: Path, *, fields: FieldOverrides | None = None,
                       order_patterns: Sequence[str] = DEFAULT_ORDER_PATTERNS,
                       platform: str | None = None, records_key: str | None = None,
                       own_handles: Sequence[str] = (),
                       default_currency: str | None = None,
                       default_region: str | None = None, date_dayfirst: bool = True,
                       max_bytes: int = 256_000_000) -> Iterator[IntakeItem]:
    """One item per message. `platform` names the network when the export does not.

    A message the business sent (marked outbound by the export, or written by one of
    `own_handles`, the business's own accounts) is our answer echoed back, never a
    request: it is quarantined with that reason.
    """
    field_map = merge_fields(DEFAULT_FIELDS, fields)
    ours = frozenset(_handle_key(h) for h in own_handles if _handle_key(h))

    def problem_of(record: dict[str, Any], cells: dict[str, Any]) -> str:
        if mark := outbound_mark(record):
            return f"our own outbound message echoed back in the export ({mark}), not a request"
        handle = cells.get("customer_handle")
        if ours and isinstance(handle, str) and _handle_key(handle) in ours:
            return (f"our own outbound message echoed back in the export (written by our "
                    f"account {handle.strip()}), not a request")
        return ""
    picker = Picker(field_map)
    opts = Options(CHANNEL, order_patterns, default_currency, date_dayfirst, default_region,
                   platform.lower() if platform else None)

    def load(p: Path, data: bytes) -> Rows:
        return json_rows(p, data, field_map, records_key=records_key,
                         to_cells=lambda record: pick_cells(record, picker),
                         problem_of=problem_of)

    yield from read_export(path, opts, max_bytes=max_bytes, load=load)


def _handle_key(handle: str) -> str:
    """A handle as platforms compare them: no "@", no case ("@Shop_Support" = "shop_support")."""
    return handle.strip().lstrip("@").casefold()
