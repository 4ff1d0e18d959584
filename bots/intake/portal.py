"""Self-service portal and mobile-app intake: refund forms dropped in a folder.

The web portal and the app post their forms to a drop folder, as JSON (one
submission per file, or a list) or as a CSV export of the form tool. A form has
structure a free-text message lacks (an order field, an amount field, a reason
picked from a list), so those fields win over anything read from the comment.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from bots.intake.exports import (
    Picker,
    json_rows,
    merge_fields,
    pick_cells,
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

CHANNEL = Channel.PORTAL.value
SUFFIXES = (".json", ".jsonl", ".ndjson", ".csv", ".tsv")

# Dotted JSON paths; for CSV the same names are column headers ("customer.email"
# matches a "Customer Email" column: headers are compared without case or punctuation).
DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "source_id": ("submission_id", "submissionId", "form_id", "response_id", "request_id",
                  "id"),
    "received_at": ("submitted_at", "submittedAt", "created_at", "timestamp", "submitted",
                    "date"),
    "customer_email": ("email", "customer.email", "contact.email", "customer_email",
                       "user.email"),
    "customer_name": ("name", "customer.name", "full_name", "customer_name", "contact.name"),
    "customer_phone": ("phone", "customer.phone", "mobile", "contact.phone"),
    "order_number": ("order_number", "orderNumber", "order.number", "order_id", "order.id",
                     "order"),
    "requested_amount": ("amount", "refund.amount", "requested_amount", "refund_amount",
                         "amount_requested"),
    "currency": ("currency", "refund.currency", "order.currency"),
    "reason_category": ("reason_code", "reason", "reason_category", "refund.reason",
                        "category"),
    "reason_text": ("message", "comments", "comment", "details", "description",
                    "reason_text", "refund.comment"),
}
FIELDS = tuple(DEFAULT_FIELDS)


def read_portal_file(path: Path, *, fields: FieldOverrides | None = None,
                     order_patterns: Sequence[str] = DEFAULT_ORDER_PATTERNS,
                     records_key: str | None = None, default_currency: str | None = None,
                     default_region: str | None = None, date_dayfirst: bool = True,
                     max_bytes: int = 256_000_000) -> Iterator[IntakeItem]:
    """One item per submission of a JSON or CSV drop file."""
    field_map = merge_fields(DEFAULT_FIELDS, fields)
    picker = Picker(field_map)
    opts = Options(CHANNEL, order_patterns, default_currency, date_dayfirst, default_region)
    tabular = path.suffix.lower() in (".csv", ".tsv")

    def load(p: Path, data: bytes) -> Rows:
        if tabular:
            return table_rows(p, read_table(data), field_map, joined=(), what="form export",
                              example=" (e.g. 'Email', 'Order number', 'Message')")
        return json_rows(p, data, field_map, records_key=records_key,
                         to_cells=lambda record: pick_cells(record, picker))

    yield from read_export(path, opts, max_bytes=max_bytes, load=load)
