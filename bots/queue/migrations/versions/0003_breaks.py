"""The open-break register and the hash-chained audit trail (issue 15).

- `breaks`: every reconciliation break, open until a person resolves or writes it off;
- `audit.subject` (what a record is about besides a case: `break:B-000003`), so
  `audit.case_id` may be empty;
- `audit.salt`, `detail_hash`, `prev_hash`, `row_hash`: the hash chain (see
  bots/queue/audit.py); existing records are chained here, in id order.

SQLite cannot drop a NOT NULL in place: the audit table is rebuilt (batch mode).

Revision ID: 0003_breaks
Revises: 0002
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

from bots.queue.audit import GENESIS, detail_hash, record_hash

revision = "0003_breaks"
down_revision = "0002"
branch_labels = None
depends_on = None

_TEXT32 = sa.String(length=32)


def upgrade() -> None:
    op.create_table(
        "breaks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("break_key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=60), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("case_ref", sa.String(length=20), nullable=True),
        sa.Column("order_number", sa.String(length=64), nullable=True),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("refund_id", sa.String(length=64), nullable=True),
        sa.Column("transaction_id", sa.String(length=64), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("ledger_amount", _TEXT32, nullable=True),
        sa.Column("portal_amount", _TEXT32, nullable=True),
        sa.Column("business_day", sa.String(length=10), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=True),
        sa.Column("first_seen_at", _TEXT32, nullable=False),
        sa.Column("first_seen_run", sa.String(length=64), nullable=True),
        sa.Column("last_seen_at", _TEXT32, nullable=False),
        sa.Column("last_seen_run", sa.String(length=64), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("resolved_by", sa.String(length=100), nullable=True),
        sa.Column("resolved_at", _TEXT32, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("break_key"),
    )
    op.create_index("ix_breaks_state", "breaks", ["state"])
    with op.batch_alter_table("audit") as batch:
        batch.alter_column("case_id", existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column("subject", sa.String(length=60), nullable=True))
        batch.add_column(sa.Column("salt", _TEXT32, nullable=True))
        batch.add_column(sa.Column("detail_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("row_hash", sa.String(length=64), nullable=True))
    op.create_index("ix_audit_subject", "audit", ["subject"])
    _chain_existing()


def _chain_existing() -> None:
    """Chain the records written before the chain existed, in id order."""
    conn = op.get_bind()
    audit = sa.table("audit", sa.column("id"), sa.column("case_id"), sa.column("at"),
                     sa.column("run_id"), sa.column("actor"), sa.column("from_state"),
                     sa.column("to_state"), sa.column("event"), sa.column("detail"),
                     sa.column("subject"), sa.column("salt"), sa.column("detail_hash"),
                     sa.column("prev_hash"), sa.column("row_hash"))
    from datetime import datetime

    head = GENESIS
    rows = conn.execute(sa.select(audit).order_by(audit.c.id)).mappings().all()
    for r in rows:
        row = dict(r)
        row["at"] = datetime.fromisoformat(row["at"]) if row["at"] else None
        row["salt"] = secrets.token_hex(16)
        row["detail_hash"] = detail_hash(row["salt"], row["detail"] or "")
        row["prev_hash"] = head
        row["row_hash"] = head = record_hash(row)
        conn.execute(sa.update(audit).where(audit.c.id == row["id"]).values(
            salt=row["salt"], detail_hash=row["detail_hash"], prev_hash=row["prev_hash"],
            row_hash=row["row_hash"]))


def downgrade() -> None:
    op.drop_index("ix_audit_subject", "audit")
    with op.batch_alter_table("audit") as batch:
        for column in ("row_hash", "prev_hash", "detail_hash", "salt", "subject"):
            batch.drop_column(column)
    op.drop_index("ix_breaks_state", "breaks")
    op.drop_table("breaks")
