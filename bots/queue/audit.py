"""The audit trail: every state change and decision, who made it and why. Append-only,
and tamper-evident: a hash chain.

Every record carries the hash of the record before it (`prev_hash`) and its own hash
(`row_hash`) over its content and `prev_hash`, so editing, deleting or inserting a record
anywhere breaks the chain at that record, and `verify_chain` names it. Each run's report
carries the chain head (last id and hash): a later rewrite of the whole chain from some
point on is caught against an old report (`refund-bots audit verify --head ID:HASH`).

The chain is computed over data that survives erasure of personal data: the free-text
`detail` (which may quote a customer) enters the chain only as a salted hash
(`detail_hash`). Erasing a customer replaces the text and drops the salt, keeps the hash,
and the chain still verifies (`erase_detail`).

Records are chained in id order, one writer at a time: on SQLite every write transaction
is serialised already (BEGIN IMMEDIATE); on PostgreSQL the first audit record of a
transaction takes an advisory transaction lock held until commit.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from bots.queue.base import Store
from bots.queue.schema import AuditRow, utcnow

GENESIS = "0" * 64  # the prev_hash of the first record
ERASED = "[erased]"  # what an erased detail reads
CHAIN_LOCK_ID = 7_316_846_514  # pg_advisory_xact_lock key: "refund-bots audit chain"
_HEAD = "audit_chain_head"  # Session.info key: the head while this transaction appends


def masked(text: str) -> str:
    """Cards, CVVs and credentials hidden: agents' comments and notes quote customers too."""
    from bots.intake.extract import mask_secrets  # lazily: the queue needs it only here

    return mask_secrets(text) if text else text


def audit(s: Session, case_id: int | None, run_id: str | None, actor: str, before: str | None,
          after: str | None, event_name: str, detail: str, subject: str | None = None) -> None:
    """Append one record to the trail (chained) in the caller's transaction."""
    row = {"case_id": case_id, "run_id": run_id, "actor": masked(actor[:200]), "from_state": before,
           "to_state": after, "event": event_name, "detail": masked(detail), "subject": subject}
    chain_rows(s, [row])
    s.add(AuditRow(**row))


def chain_rows(s: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Fill in time, salt and hashes of records about to be inserted, in this order.

    For bulk inserts (`insert(AuditRow)` with a list of dicts): the caller must insert
    exactly these rows, in this order, in this transaction.
    """
    head = _head(s)
    salts = secrets.token_hex(16 * len(rows))  # one read of the system's CSPRNG, not one a row
    times: dict[datetime, str | None] = {}  # a batch's records share their time
    for n, row in enumerate(rows):
        at = row.setdefault("at", utcnow())
        row.setdefault("subject", None)
        row["salt"] = salts[32 * n:32 * n + 32]
        row["detail_hash"] = detail_hash(row["salt"], row.get("detail") or "")
        row["prev_hash"] = head
        if at not in times:
            times[at] = _iso(at)
        row["row_hash"] = head = _hash(row.get, times[at])
    s.info[_HEAD] = head


def _head(s: Session) -> str:
    """The chain's last hash, taking the chain lock on the first append of a transaction."""
    head = s.info.get(_HEAD)
    if head is not None:
        return str(head)
    lock_chain(s)
    s.flush()
    last = s.scalar(select(AuditRow.row_hash).order_by(AuditRow.id.desc()).limit(1))
    return last or GENESIS


def lock_chain(s: Session) -> None:
    """Take the chain's lock now, until commit (PostgreSQL; on SQLite every write
    transaction is serialised already).

    For a transaction that reads what its records will be about and must not have another
    writer of them in between (the break register: two reports opening the same break).
    The register's other writers (assigning, resolving) take it first too, before they
    read the break: all take the chain lock, then a break's row, so none deadlocks
    another. (A record's own lock comes after the session has flushed its changes: too
    late for that; a person resolving a break a report was closing deadlocked.)
    """
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CHAIN_LOCK_ID})


def detail_hash(salt: str, detail: str) -> str:
    return hashlib.sha256(f"{salt}\x00{detail}".encode()).hexdigest()


def record_hash(row: Any) -> str:
    """The hash of a record's chained content (a dict or an AuditRow)."""
    get = row.get if isinstance(row, dict) else lambda k: getattr(row, k)
    return _hash(get, _iso(get("at")))


def _hash(get: Callable[[str], Any], at: str | None) -> str:
    content = [get("prev_hash"), at, get("case_id"), get("run_id"), get("actor"),
               get("from_state"), get("to_state"), get("event"), get("subject"),
               get("detail_hash")]
    return hashlib.sha256(_COMPACT.encode(content).encode()).hexdigest()


# json.dumps(content, separators=(",", ":")), without building an encoder for every record
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


# -- verification ------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainHead:
    last_id: int
    hash: str
    records: int

    def __str__(self) -> str:
        return f"{self.last_id}:{self.hash}"


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    records: int
    head: ChainHead | None
    first_bad_id: int | None = None
    problem: str = ""


def verify_rows(rows: Iterator[AuditRow], *, expect_head: tuple[int, str] | None = None
                ) -> ChainReport:
    """Walk the chain in id order; name the first record edited, deleted or inserted."""
    prev_hash, prev_prev, prev_id = GENESIS, None, None
    count = 0
    seen_head = expect_head is None
    for row in rows:
        count += 1
        problem = _check_row(row)
        if problem:
            return ChainReport(False, count, None, row.id, f"record {row.id} {problem}")
        if row.prev_hash != prev_hash:
            if prev_id is not None and row.prev_hash == prev_prev:
                return ChainReport(False, count, None, prev_id,
                                   f"record {prev_id} was inserted: record {row.id} follows "
                                   f"the record before it")
            where = f"after record {prev_id}" if prev_id is not None else "at the start"
            return ChainReport(False, count, None, row.id,
                               f"record {row.id} does not follow record {prev_id}: records "
                               f"were deleted {where} (ids {(prev_id or 0) + 1}-{row.id - 1}), "
                               f"or record {prev_id} was rewritten")
        if expect_head is not None and row.id == expect_head[0]:
            if row.row_hash != expect_head[1]:
                return ChainReport(False, count, None, row.id,
                                   f"record {row.id} is not the one the report saw: the chain "
                                   f"was rewritten from record {row.id} or earlier")
            seen_head = True
        prev_prev, prev_hash, prev_id = prev_hash, row.row_hash or "", row.id
    head = ChainHead(prev_id, prev_hash, count) if prev_id is not None else None
    if not seen_head and expect_head is not None:
        return ChainReport(False, count, head, expect_head[0],
                           f"record {expect_head[0]} (the head a report saw) is gone: records "
                           f"at the end of the trail were deleted")
    return ChainReport(True, count, head)


def _check_row(row: AuditRow) -> str:
    if not row.row_hash or not row.prev_hash or not row.detail_hash:
        return "has no hash: inserted outside refund-bots"
    if row.salt is not None and detail_hash(row.salt, row.detail or "") != row.detail_hash:
        return "was edited: its detail does not match its hash"
    if row.salt is None and row.detail != ERASED:
        return "was edited: its detail was changed after erasure"
    if record_hash(row) != row.row_hash:
        return "was edited or inserted by hand: its content does not match its hash"
    return ""


class AuditTrail(Store):
    def audit_trail(self, case_id: int) -> list[AuditRow]:
        with self.session() as s:
            return list(s.scalars(
                select(AuditRow).where(AuditRow.case_id == case_id).order_by(AuditRow.id)
            ))

    def subject_trail(self, subject: str) -> list[AuditRow]:
        with self.session() as s:
            return list(s.scalars(
                select(AuditRow).where(AuditRow.subject == subject).order_by(AuditRow.id)))

    def audit_between(self, start: datetime, end: datetime) -> list[AuditRow]:
        with self.session() as s:
            return list(s.scalars(select(AuditRow).where(AuditRow.at >= start,
                                                         AuditRow.at < end)
                                  .order_by(AuditRow.id)))

    def chain_head(self) -> ChainHead | None:
        with self.session() as s:
            row = s.execute(select(AuditRow.id, AuditRow.row_hash)
                            .order_by(AuditRow.id.desc()).limit(1)).first()
            if row is None:
                return None
            total = s.scalar(select(AuditRow.id).order_by(AuditRow.id.desc()).limit(1)) or 0
            return ChainHead(row[0], row[1] or "", total)

    def verify_chain(self, expect_head: tuple[int, str] | None = None) -> ChainReport:
        """Read the whole trail in id order (streamed) and check every link."""
        with self.engine.connect() as conn, Session(bind=conn) as s:
            rows = s.scalars(select(AuditRow).order_by(AuditRow.id)
                             .execution_options(yield_per=5000))
            return verify_rows(iter(rows), expect_head=expect_head)


def erase_detail(s: Session, row: AuditRow, replacement: str = ERASED) -> None:
    """Remove a record's free text for erasure; its chained hash stays, so does the chain."""
    row.detail, row.salt = replacement, None
