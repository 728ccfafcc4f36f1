"""analytics rollup: execution_rollup (runs per tenant, UTC day, template, status and duration
bucket, with AI-enhanced runs and AI cost) and analytics_rollup_state, for executionStats
(app/models/analytics.py). Filled by the first refresh (the analytics rollup schedule).

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
    op.create_table(
        "execution_rollup",
        sa.Column(
            "tenant_id",
            sa.Uuid(),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("template_id", sa.Uuid(), primary_key=True),
        sa.Column("status", sa.String(length=10), primary_key=True),
        sa.Column("duration_bucket", sa.SmallInteger(), primary_key=True),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("ai_runs", sa.Integer(), nullable=False),
        sa.Column("ai_cost_usd", sa.Numeric(18, 6), nullable=False),
    )
    op.create_table(
        "analytics_rollup_state",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("complete_until", sa.Date(), nullable=False),
        sa.Column("refreshed_from", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("analytics_rollup_state")
    op.drop_table("execution_rollup")
