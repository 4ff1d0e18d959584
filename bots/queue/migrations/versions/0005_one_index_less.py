"""Cases lose `ix_cases_state`, which two other indexes already cover.

`ix_cases_due` (state, next_attempt_at) and `ix_cases_lease` (state, locked_until) both
lead with `state`, so either answers a lookup by state alone as well; the single-column
index only cost its upkeep on every case stored or moved (intake stores tens of
thousands at once).

Revision ID: 0005_one_index_less
Revises: 0003_console
"""

from __future__ import annotations

from alembic import op

revision = "0005_one_index_less"
down_revision = "0003_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_cases_state", table_name="cases")


def downgrade() -> None:
    op.create_index("ix_cases_state", "cases", ["state"], unique=False)
