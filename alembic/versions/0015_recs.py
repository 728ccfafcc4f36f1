"""ai_usage.input_hash: a keyed fingerprint of each AI call's normalised input
(app/ai/input_hash.py), so aiRecommendations can tell which inputs recur. Existing rows keep
null (their inputs were never recorded). The partial index serves the recurrence scan: paid
calls of one tenant with a fingerprint, by task, model and fingerprint, in time order.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ai_usage", sa.Column("input_hash", sa.String(length=64), nullable=True))
    op.create_index(
        "ix_ai_usage_repeats",
        "ai_usage",
        ["tenant_id", "task", "model", "input_hash", "at"],
        postgresql_where=sa.text("input_hash IS NOT NULL AND NOT cached"),
    )


def downgrade() -> None:
    op.drop_index("ix_ai_usage_repeats", table_name="ai_usage")
    op.drop_column("ai_usage", "input_hash")
