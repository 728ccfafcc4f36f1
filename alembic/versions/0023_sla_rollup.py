"""sla_rollup and sla_rollup_state (app/models/sla_rollup.py): the SLA daily rollup that lets
`slaReport` span up to 366 days. New, empty tables only: no lock on anything that exists, no
rewrite. No backfill here: the next analytics rollup refresh finds no sla_rollup_state and
rolls up every past day in its own transaction (1M executions: see docs/analytics.md, "SLAs");
until then the report reads every day from the executions, as before.

Revision ID: 0023
Revises: 0022
"""

import sqlalchemy as sa

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")  # the FK to tenants takes a brief lock there
    op.create_table(
        "sla_rollup",
        sa.Column(
            "tenant_id",
            sa.Uuid(),
            sa.ForeignKey(
                "tenants.id", ondelete="CASCADE", name=op.f("fk_sla_rollup_tenant_id_tenants")
            ),
            nullable=False,
        ),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("template_id", sa.Uuid(), nullable=False),
        sa.Column("template_version_id", sa.Uuid(), nullable=False),
        sa.Column("target", sa.Float(), nullable=True),
        sa.Column("ended", sa.Integer(), nullable=False),
        sa.Column("completed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("cancelled", sa.Integer(), nullable=False),
        sa.Column("breached", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "day", "template_id", "template_version_id", name=op.f("pk_sla_rollup")
        ),
        if_not_exists=True,
    )
    op.create_index(
        "ix_sla_rollup_tenant_template_day",
        "sla_rollup",
        ["tenant_id", "template_id", "day"],
        if_not_exists=True,
    )
    op.create_table(
        "sla_rollup_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("complete_until", sa.Date(), nullable=False),
        sa.Column("refreshed_from", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sla_rollup_state")),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.drop_table("sla_rollup_state", if_exists=True)
    op.drop_table("sla_rollup", if_exists=True)
