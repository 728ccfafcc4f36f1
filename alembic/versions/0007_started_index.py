"""partial index for the reconciler's scan of executions whose workflow should be alive

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

STARTED_SQL = "status IN ('RUNNING', 'PAUSED') OR (status = 'PENDING' AND run_id IS NOT NULL)"


def upgrade() -> None:
    op.create_index(
        "ix_executions_started",
        "executions",
        ["created_at", "id"],
        unique=False,
        postgresql_where=sa.text(STARTED_SQL),
    )


def downgrade() -> None:
    op.drop_index("ix_executions_started", table_name="executions")
