"""Phone intake: call logs exported by the telephony / IVR system (CSV).

One row is one call: the caller's number, when, what the agent noted or the
transcript, and sometimes the order number or email the agent typed in. The
caller's number is stored in E.164 (national numbers placed by `default_region`)
so that the same person is one number whichever channel they used. Withheld
numbers ("anonymous") are fine when the row names an order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from bots.intake.exports import (
    merge_fields,
    read_export,
    read_table,
    table_rows,
)
from bots.intake.extract import DEFAULT_ORDER_PATTERNS
from bots.intake.records import (
    FieldOverrides,
    Options,
    Rows,
)
from bots.models import Channel, IntakeItem

CHANNEL = Channel.PHONE.value
SUFFIXES = (".csv", ".tsv")

DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "source_id": ("call id", "call_id", "call sid", "call uuid", "uniqueid", "interaction id",
                  "id"),
    "customer_phone": ("caller", "caller number", "caller id", "from", "from number", "ani",
                       "calling number", "phone", "phone number", "customer phone"),
    "received_at": ("timestamp", "start time", "call start", "started at", "call date", "date",
                    "time", "start"),
    # Every one of these present is kept: notes and transcript are both the customer's case.
    "reason_text": ("agent notes", "notes", "transcript", "summary", "comments",
                    "wrap-up notes"),
    "order_number": ("order number", "order #", "order no", "order id", "order"),
    "customer_email": ("email", "e-mail", "customer email", "caller email"),
    "customer_name": ("caller name", "customer name", "name", "customer"),
    "requested_amount": ("refund amount", "requested amount", "amount"),
    "currency": ("currency",),
    "reason_category": ("reason code", "reason category", "call reason", "disposition",
                        "category"),
}
FIELDS = tuple(DEFAULT_FIELDS)


def read_call_log(path: Path, *, fields: FieldOverrides | None = None,
                  order_patterns: Sequence[str] = DEFAULT_ORDER_PATTERNS,
                  default_region: str | None = None, default_currency: str | None = None,
                  date_dayfirst: bool = True, max_bytes: int = 256_000_000
                  ) -> Iterator[IntakeItem]:
    """One item per call, in file order."""
    field_map = merge_fields(DEFAULT_FIELDS, fields)
    opts = Options(CHANNEL, order_patterns, default_currency, date_dayfirst, default_region)

    def load(p: Path, data: bytes) -> Rows:
        return table_rows(p, read_table(data), field_map, what="call log",
                          example=" (e.g. 'Call ID', 'Caller', 'Notes', 'Order number')")

    yield from read_export(path, opts, max_bytes=max_bytes, load=load)
