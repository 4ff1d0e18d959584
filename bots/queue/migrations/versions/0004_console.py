"""The ops console: users and roles, four-eyes proposals, sent alerts.

- users: who may log in to the console and decide (passwords as scrypt hashes);
- decision_proposals: a decision above the four-eyes amount waiting for a second user;
- alerts: one row per alert condition and period, so that a condition alerts once.

Revision ID: 0003_console
Revises: 0003_breaks
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_console"
down_revision = "0003_breaks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("username", sa.String(length=50), nullable=False, unique=True),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("password_hash", sa.String(length=300), nullable=False),
        sa.Column("active", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("password_changed_at", sa.String(length=32), nullable=False),
    )
    op.create_table(
        "decision_proposals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("decision", sa.String(length=20), nullable=False),
        sa.Column("amount", sa.String(length=32), nullable=True),
        sa.Column("pays", sa.String(length=32), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False, server_default=""),
        sa.Column("proposed_by", sa.String(length=50), nullable=False),
        sa.Column("case_version", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False, server_default="pending"),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("decided_by", sa.String(length=50), nullable=True),
        sa.Column("decided_at", sa.String(length=32), nullable=True),
    )
    op.create_index("ix_decision_proposals_case_id", "decision_proposals", ["case_id"])
    op.create_index("ix_decision_proposals_state", "decision_proposals", ["state"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(length=200), nullable=False, unique=True),
        sa.Column("condition", sa.String(length=60), nullable=False),
        sa.Column("at", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False, server_default=""),
        sa.Column("link", sa.Text(), nullable=False, server_default=""),
        sa.Column("delivered", sa.Text(), nullable=False, server_default="{}"),
    )
    op.create_index("ix_alerts_condition", "alerts", ["condition"])


def downgrade() -> None:
    op.drop_index("ix_alerts_condition", "alerts")
    op.drop_table("alerts")
    op.drop_index("ix_decision_proposals_state", "decision_proposals")
    op.drop_index("ix_decision_proposals_case_id", "decision_proposals")
    op.drop_table("decision_proposals")
    op.drop_table("users")
