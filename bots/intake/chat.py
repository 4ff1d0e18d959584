"""Live-chat intake: transcripts exported by helpdesk tools (JSON or JSON Lines).

A transcript is one conversation: who the customer is, and the messages both
sides wrote. Only the customer's messages are their request (an agent saying
"I see order ORD-123456 was refunded 20 EUR" asks for nothing), so messages are
told apart by their author's role. Exports come two ways and both are read:
one record per conversation with a list of messages (Zendesk, Intercom style),
or one record per message carrying its conversation id, grouped here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bots.intake.exports import (
    Picker,
    cell,
    first_path,
    first_text,
    json_records,
    merge_fields,
    outbound_mark,
    read_export,
    text_of,
)
from bots.intake.extract import DEFAULT_ORDER_PATTERNS
from bots.intake.records import (
    SCAN_LIMIT,
    FieldMap,
    FieldOverrides,
    Options,
    Rows,
)
from bots.models import Channel, IntakeItem

CHANNEL = Channel.CHAT.value
SUFFIXES = (".json", ".jsonl", ".ndjson")

DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "source_id": ("conversation_id", "conversationId", "conversation.id", "chat_id",
                  "ticket_id", "id"),
    "received_at": ("created_at", "started_at", "start_time", "timestamp", "date"),
    "customer_email": ("customer.email", "visitor.email", "user.email", "requester.email",
                       "contact.email", "customer_email", "email"),
    "customer_name": ("customer.name", "visitor.name", "user.name", "requester.name",
                      "contact.name", "customer_name", "name"),
    "customer_phone": ("customer.phone", "visitor.phone", "user.phone", "customer_phone",
                       "phone"),
    "customer_handle": ("customer.handle", "customer.username", "handle", "username"),
    "order_number": ("order_number", "orderNumber", "custom_fields.order_number", "order_id",
                     "order"),
    "requested_amount": ("requested_amount", "refund_amount", "amount"),
    "currency": ("currency",),
    "reason_category": ("reason_category", "reason_code"),
    # The list of messages, and where each message keeps its text, author role and time.
    "messages": ("messages", "history", "transcript", "conversation_parts.conversation_parts",
                 "parts", "chat_messages"),
    "message_text": ("text", "body", "message", "msg", "content", "plain_text"),
    "message_role": ("role", "author.role", "author.type", "author_type", "sender.type",
                     "sender_type", "sender", "author", "from"),
    "message_time": ("timestamp", "created_at", "time", "sent_at"),
}
FIELDS = tuple(DEFAULT_FIELDS)
CUSTOMER_ROLES = ("customer", "user", "visitor", "end-user", "end_user", "enduser", "contact",
                  "lead", "client", "guest", "requester")
AGENT_ROLES = frozenset({"agent", "admin", "operator", "bot", "staff", "support", "system",
                         "teammate", "assistant", "human_agent", "chatbot"})
_CONVERSATION_FIELDS = ("source_id", "received_at", "customer_email", "customer_name",
                        "customer_phone", "customer_handle", "order_number",
                        "requested_amount", "currency", "reason_category")


def read_chat_export(path: Path, *, fields: FieldOverrides | None = None,
                     order_patterns: Sequence[str] = DEFAULT_ORDER_PATTERNS,
                     customer_roles: Sequence[str] = CUSTOMER_ROLES,
                     records_key: str | None = None, default_currency: str | None = None,
                     default_region: str | None = None, date_dayfirst: bool = True,
                     max_bytes: int = 256_000_000) -> Iterator[IntakeItem]:
    """One item per conversation of a chat export, in the order they first appear."""
    field_map = merge_fields(DEFAULT_FIELDS, fields)
    opts = Options(CHANNEL, order_patterns, default_currency, date_dayfirst, default_region)
    roles = frozenset(r.lower() for r in customer_roles)

    def load(p: Path, data: bytes) -> Rows:
        return _conversations(p, data, field_map, roles, records_key)

    yield from read_export(path, opts, max_bytes=max_bytes, load=load)


def _conversations(path: Path, data: bytes, fields: FieldMap, roles: frozenset[str],
                   records_key: str | None) -> Rows:
    rows = Rows(path)
    conversations, messages = Picker(_only(fields, _CONVERSATION_FIELDS)), Picker(
        _only(fields, ("message_text", "message_role", "message_time")))
    # Records that are single messages, grouped by conversation id (None: on their own).
    grouped: dict[str, tuple[str, list[dict[str, Any]]]] = {}
    order: list[tuple[str, Any, str]] = []  # (ref, record or group key, problem)

    def is_record(doc: dict[str, Any]) -> bool:
        return first_path(doc, fields["messages"] + fields["source_id"]
                          + fields["message_text"]) is not None

    for ref, record, problem in json_records(path, data, records_key=records_key,
                                             is_record=is_record):
        if problem or isinstance(first_path(record, fields["messages"]), list):
            order.append((ref, record, problem))
            continue
        key = first_path(record, fields["source_id"])
        if isinstance(key, str | int) and not isinstance(key, bool) and str(key).strip():
            group = f"group:{key}"
            if group not in grouped:
                grouped[group] = (ref, [])
                order.append((ref, group, ""))
            grouped[group][1].append(record)
        else:
            order.append((ref, {"__messages": [record], **record}, ""))
    for ref, item, problem in order:
        if problem:
            rows.add(ref, {"reason_text": item if isinstance(item, str) else ""}, problem)
        elif isinstance(item, str):  # a group of message records
            members = grouped[item][1]
            merged = {k: v for m in reversed(members) for k, v in m.items()}
            rows.add(_group_ref(ref, len(members)),
                     *_conversation(merged, members, conversations, messages, roles))
        else:
            said = item.pop("__messages", None)
            if said is None:
                found = first_path(item, fields["messages"])
                said = found if isinstance(found, list) else []
            rows.add(ref, *_conversation(item, said, conversations, messages, roles))
    return rows


def _group_ref(ref: str, n: int) -> str:
    return ref if n == 1 else f"{ref} (+{n - 1} more message{'s' if n > 2 else ''})"


def _only(fields: FieldMap, names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    return {name: tuple(fields[name]) for name in names}


def _conversation(record: dict[str, Any], messages: list[Any], conversations: Picker,
                  pick: Picker, roles: frozenset[str]) -> tuple[dict[str, Any], str]:
    """(cells, problem) for one conversation: its fields and the customer's words."""
    cells = {name: cell(first_path(record, paths)) if paths else None
             for name, paths in conversations.plan(record).items()}
    said: list[tuple[str, Any, dict[str, tuple[str, ...]]]] = []  # (role, message, plan)
    for message in messages[:10_000]:
        if not isinstance(message, dict):
            if isinstance(message, str):
                message = {"text": message}
            else:
                continue
        plan = pick.plan(message)
        role = (first_text(message, plan["message_role"]) or "").lower()
        if outbound_mark(message):  # our own answer echoed in the export: an agent's words
            role = "agent"
        said.append((role, message, plan))
    customer = [(m, plan) for role, m, plan in said if role in roles]
    if not customer:  # no role says "customer": every message not plainly an agent's
        customer = [(m, plan) for role, m, plan in said if role not in AGENT_ROLES]
    texts: list[str] = []
    size = 0
    for message, plan in customer:
        text = text_of(first_path(message, plan["message_text"])).strip()
        if text:
            texts.append(text)
            size += len(text)
            if size > SCAN_LIMIT:
                break
    cells["reason_text"] = "\n".join(texts)
    if cells["received_at"] is None and customer:
        message, plan = customer[0]
        cells["received_at"] = cell(first_path(message, plan["message_time"]))
    problem = "" if texts or cells["order_number"] is not None else (
        "no message from the customer in the conversation" if said
        else "the conversation has no messages")
    return cells, problem
