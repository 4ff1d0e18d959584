"""Baseline: the queue's schema as refund-bots 0.1 created it (before migrations).

A database created by that version (tables, no `alembic_version`) is upgraded from
nothing: this revision creates only the tables it lacks, so existing queues keep every
case.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A queue made by 0.1 has some of these tables already (the notifications table only
    # if notifications were on): create what is missing, keep what is there.
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if 'cases' not in existing:
        op.create_table('cases',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('case_key', sa.String(length=200), nullable=False),
        sa.Column('order_number', sa.String(length=64), nullable=True),
        sa.Column('customer_email', sa.String(length=320), nullable=True),
        sa.Column('customer_name', sa.String(length=200), nullable=True),
        sa.Column('state', sa.String(length=20), nullable=False),
        sa.Column('outcome', sa.String(length=20), nullable=True),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('requested_amount', sa.String(length=32), nullable=True),
        sa.Column('approved_amount', sa.String(length=32), nullable=True),
        sa.Column('currency', sa.String(length=3), nullable=True),
        sa.Column('refund_number', sa.String(length=64), nullable=True),
        sa.Column('decision', sa.Text(), nullable=True),
        sa.Column('merged_into', sa.Integer(), nullable=True),
        sa.Column('human_decision', sa.String(length=20), nullable=True),
        sa.Column('human_agent', sa.String(length=100), nullable=True),
        sa.Column('human_comment', sa.Text(), nullable=True),
        sa.Column('assigned_to', sa.String(length=100), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('next_attempt_at', sa.String(length=32), nullable=True),
        sa.Column('locked_by', sa.String(length=100), nullable=True),
        sa.Column('locked_until', sa.String(length=32), nullable=True),
        sa.Column('created_at', sa.String(length=32), nullable=False),
        sa.Column('updated_at', sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(['merged_into'], ['cases.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('case_key')
        )
        op.create_index(op.f('ix_cases_order_number'), 'cases', ['order_number'], unique=False)
        op.create_index(op.f('ix_cases_state'), 'cases', ['state'], unique=False)
    if 'locks' not in existing:
        op.create_table('locks',
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('owner', sa.String(length=200), nullable=False),
        sa.Column('expires_at', sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint('name')
        )
    if 'quarantine' not in existing:
        op.create_table('quarantine',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('channel', sa.String(length=20), nullable=False),
        sa.Column('source_id', sa.String(length=300), nullable=False),
        sa.Column('source_ref', sa.Text(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('excerpt', sa.Text(), nullable=False),
        sa.Column('run_id', sa.String(length=64), nullable=True),
        sa.Column('created_at', sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('channel', 'source_id')
        )
        op.create_index(op.f('ix_quarantine_run_id'), 'quarantine', ['run_id'], unique=False)
    if 'runs' not in existing:
        op.create_table('runs',
        sa.Column('run_id', sa.String(length=64), nullable=False),
        sa.Column('command', sa.String(length=40), nullable=False),
        sa.Column('started_at', sa.String(length=32), nullable=False),
        sa.Column('finished_at', sa.String(length=32), nullable=True),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('stats', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('run_id')
        )
    if 'audit' not in existing:
        op.create_table('audit',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('case_id', sa.Integer(), nullable=False),
        sa.Column('at', sa.String(length=32), nullable=False),
        sa.Column('run_id', sa.String(length=64), nullable=True),
        sa.Column('actor', sa.String(length=100), nullable=False),
        sa.Column('from_state', sa.String(length=20), nullable=True),
        sa.Column('to_state', sa.String(length=20), nullable=True),
        sa.Column('event', sa.String(length=40), nullable=False),
        sa.Column('detail', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ),
        sa.PrimaryKeyConstraint('id')
        )
        op.create_index(op.f('ix_audit_case_id'), 'audit', ['case_id'], unique=False)
        op.create_index(op.f('ix_audit_run_id'), 'audit', ['run_id'], unique=False)
    if 'refund_intents' not in existing:
        op.create_table('refund_intents',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('case_id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=40), nullable=False),
        sa.Column('order_number', sa.String(length=64), nullable=False),
        sa.Column('transaction_id', sa.String(length=64), nullable=False),
        sa.Column('amount', sa.String(length=32), nullable=False),
        sa.Column('state', sa.String(length=20), nullable=False),
        sa.Column('refund_number', sa.String(length=64), nullable=True),
        sa.Column('run_id', sa.String(length=64), nullable=True),
        sa.Column('created_at', sa.String(length=32), nullable=False),
        sa.Column('resolved_at', sa.String(length=32), nullable=True),
        sa.Column('resolved_run_id', sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('key')
        )
        op.create_index(op.f('ix_refund_intents_case_id'), 'refund_intents', ['case_id'], unique=False)
        op.create_index(op.f('ix_refund_intents_resolved_run_id'), 'refund_intents', ['resolved_run_id'], unique=False)
        op.create_index(op.f('ix_refund_intents_run_id'), 'refund_intents', ['run_id'], unique=False)
    if 'requests' not in existing:
        op.create_table('requests',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('channel', sa.String(length=20), nullable=False),
        sa.Column('source_id', sa.String(length=300), nullable=False),
        sa.Column('source_ref', sa.Text(), nullable=False),
        sa.Column('received_at', sa.String(length=32), nullable=False),
        sa.Column('customer_email', sa.String(length=320), nullable=True),
        sa.Column('customer_name', sa.String(length=200), nullable=True),
        sa.Column('customer_phone', sa.String(length=64), nullable=True),
        sa.Column('order_number', sa.String(length=64), nullable=True),
        sa.Column('requested_amount', sa.String(length=32), nullable=True),
        sa.Column('currency', sa.String(length=3), nullable=True),
        sa.Column('reason_category', sa.String(length=30), nullable=False),
        sa.Column('reason_text', sa.Text(), nullable=False),
        sa.Column('reply_to', sa.String(length=320), nullable=True),
        sa.Column('customer_handle', sa.String(length=200), nullable=True),
        sa.Column('auth_results', sa.Text(), nullable=True),
        sa.Column('in_reply_to', sa.String(length=400), nullable=True),
        sa.Column('run_id', sa.String(length=64), nullable=True),
        sa.Column('case_id', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('channel', 'source_id')
        )
        op.create_index(op.f('ix_requests_case_id'), 'requests', ['case_id'], unique=False)
    if 'notifications' not in existing:
        op.create_table('notifications',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('notification_id', sa.String(length=40), nullable=False),
        sa.Column('case_id', sa.Integer(), nullable=False),
        sa.Column('request_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('channel', sa.String(length=20), nullable=False),
        sa.Column('recipient', sa.String(length=320), nullable=False),
        sa.Column('subject', sa.Text(), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('message_id', sa.String(length=400), nullable=True),
        sa.Column('state', sa.String(length=20), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('run_id', sa.String(length=64), nullable=True),
        sa.Column('created_at', sa.String(length=32), nullable=False),
        sa.Column('updated_at', sa.String(length=32), nullable=False),
        sa.Column('sent_at', sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ),
        sa.ForeignKeyConstraint(['request_id'], ['requests.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('notification_id'),
        sa.UniqueConstraint('request_id', 'kind')
        )
        op.create_index(op.f('ix_notifications_case_id'), 'notifications', ['case_id'], unique=False)


def downgrade() -> None:
    for table in ("notifications", "audit", "refund_intents", "requests", "runs", "quarantine",
                  "locks", "cases"):
        op.drop_table(table)
