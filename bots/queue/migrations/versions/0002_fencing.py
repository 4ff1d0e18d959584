"""Fenced leases, in-flight submits, many runners, a retrying outbox, doubts and priority.

- cases.lease_token: the fencing token every runner write carries;
- cases.priority (angry/urgent first), cases.follows (a follow-up on a finished case);
- refund_intents.submit_started_at / remaining_before / customer_email: the in-flight
  grace, the ambiguous-balance check and the per-customer limit over pending intents;
- requests.doubts / language; runs.owner; notifications.next_attempt_at / facts (the
  transactional outbox);
- indexes for the claim, lease and outbox queries; longer runner identities.

SQLite does not enforce VARCHAR lengths and cannot add a foreign key to an existing table
without rebuilding it, so there those two changes are left out (they change nothing there).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.add_column("cases", sa.Column("lease_token", sa.Integer(), nullable=False,
                                     server_default="0"))
    op.add_column("cases", sa.Column("priority", sa.Integer(), nullable=False,
                                     server_default="0"))
    op.add_column("cases", sa.Column("follows", sa.Integer(), nullable=True))
    op.create_index("ix_cases_due", "cases", ["state", "next_attempt_at"])
    op.create_index("ix_cases_lease", "cases", ["state", "locked_until"])
    op.create_index("ix_cases_customer_email", "cases", ["customer_email"])

    op.add_column("requests", sa.Column("doubts", sa.Text(), nullable=False,
                                        server_default="[]"))
    op.add_column("requests", sa.Column("language", sa.String(length=8), nullable=True))

    op.add_column("refund_intents", sa.Column("submit_started_at", sa.String(length=32),
                                              nullable=True))
    op.add_column("refund_intents", sa.Column("remaining_before", sa.String(length=32),
                                              nullable=True))
    op.add_column("refund_intents", sa.Column("submit_answered_at", sa.String(length=32),
                                              nullable=True))
    op.add_column("refund_intents", sa.Column("customer_email", sa.String(length=320),
                                              nullable=True))
    op.create_index("ix_refund_intents_customer_email", "refund_intents", ["customer_email"])
    op.create_index("ix_intents_state_resolved", "refund_intents", ["state", "resolved_at"])

    op.add_column("runs", sa.Column("owner", sa.String(length=200), nullable=True))

    op.add_column("notifications", sa.Column("next_attempt_at", sa.String(length=32),
                                             nullable=True))
    op.add_column("notifications", sa.Column("facts", sa.Text(), nullable=True))
    op.create_index("ix_notifications_due", "notifications", ["state", "next_attempt_at"])

    if not sqlite:
        op.create_foreign_key("fk_cases_follows", "cases", "cases", ["follows"], ["id"])
        op.alter_column("cases", "locked_by", type_=sa.String(length=200))
        op.alter_column("audit", "actor", type_=sa.String(length=200))


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if not sqlite:
        op.drop_constraint("fk_cases_follows", "cases", type_="foreignkey")
    op.drop_index("ix_notifications_due", "notifications")
    op.drop_column("notifications", "facts")
    op.drop_column("notifications", "next_attempt_at")
    op.drop_column("runs", "owner")
    op.drop_index("ix_intents_state_resolved", "refund_intents")
    op.drop_index("ix_refund_intents_customer_email", "refund_intents")
    for column in ("customer_email", "submit_answered_at", "remaining_before",
                   "submit_started_at"):
        op.drop_column("refund_intents", column)
    op.drop_column("requests", "language")
    op.drop_column("requests", "doubts")
    op.drop_index("ix_cases_customer_email", "cases")
    op.drop_index("ix_cases_lease", "cases")
    op.drop_index("ix_cases_due", "cases")
    for column in ("follows", "priority", "lease_token"):
        op.drop_column("cases", column)
