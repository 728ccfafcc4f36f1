"""sla_rollup_targets (app/models/sla_rollup.py): the targets each (tenant, template, version)
of the SLA rollup was judged against, so that a refresh finds the pairs to rebuild after an
override changed from this small table instead of reading the whole rollup every 300 s.

A new, empty table only: no lock on anything that exists but a brief one on tenants (the
foreign key), no rewrite. No backfill here: the first refresh that finds it empty while
sla_rollup is not records the targets of every rollup row once, in its own transaction
(app/analytics/sla_rollup_repository.py), so rows written meanwhile by workers still on the
previous code are not missed.

Revision ID: 0025
Revises: 0024
"""

import sqlalchemy as sa

from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

TABLE = "sla_rollup_targets"


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")  # the FK to tenants takes a brief lock there
    op.create_table(
        TABLE,
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column(
            "tenant_id",
            sa.Uuid(),
            sa.ForeignKey(
                "tenants.id", ondelete="CASCADE", name=op.f("fk_sla_rollup_targets_tenant_id_tenants")
            ),
            nullable=False,
        ),
        sa.Column("template_id", sa.Uuid(), nullable=False),
        sa.Column("template_version_id", sa.Uuid(), nullable=False),
        sa.Column("target", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sla_rollup_targets")),
        if_not_exists=True,
    )
    op.create_index(
        "ux_sla_rollup_targets",
        TABLE,
        ["tenant_id", "template_id", "template_version_id", "target"],
        unique=True,
        postgresql_nulls_not_distinct=True,
        if_not_exists=True,
    )


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.drop_table(TABLE, if_exists=True)
