"""analytics rollup: execution_rollup (runs per tenant, UTC day, template, status and duration
bucket, with AI-enhanced runs and AI cost) for executionStats, step_usage_rollup (resource
usage per tenant, day, template and step) for templateResourceUsage, step_attempts (Temporal's
attempts of a step's activity, written from the second one) and analytics_rollup_state
(app/models/analytics.py). The rollups are filled by their first refresh (the analytics
rollup schedule).

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa

from alembic import op

revision = "0018"
down_revision = "0017"
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
        "step_usage_rollup",
        sa.Column(
            "tenant_id", sa.Uuid(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("template_id", sa.Uuid(), primary_key=True),
        sa.Column("step_id", sa.String(length=120), primary_key=True),
        sa.Column("activity", sa.String(length=100), nullable=True),
        *(
            sa.Column(name, sa.Integer(), nullable=False)
            for name in ("first_seq", "attempts", "retries", "completed", "recorded", "ai_calls")
        ),
        sa.Column("active_seconds", sa.Float(), nullable=False),
        *(
            sa.Column(name, sa.BigInteger(), nullable=False)
            for name in (
                "bytes_written",
                "emails_sent",
                "http_calls",
                "ai_input_tokens",
                "ai_output_tokens",
            )
        ),
        sa.Column("ai_cost_usd", sa.Numeric(18, 6), nullable=False),
    )
    op.create_table(
        "step_attempts",
        sa.Column(
            "execution_id",
            sa.Uuid(),
            sa.ForeignKey("executions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("step_id", sa.String(length=120), primary_key=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
    )
    op.create_table(
        "analytics_rollup_state",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("complete_until", sa.Date(), nullable=False),
        sa.Column("refreshed_from", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("analytics_rollup_state")
    op.drop_table("step_attempts")
    op.drop_table("step_usage_rollup")
    op.drop_table("execution_rollup")
