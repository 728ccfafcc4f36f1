"""sla_breaches (started_at): the index the SLA breach retention purge reads
(SLA_BREACH_RETENTION_DAYS, app/sla/retention.py). Every other index on sla_breaches leads
with a tenant or an execution; without this one each upkeep round's "oldest breaches" query
would scan the whole table.

Built CONCURRENTLY (the table takes writes from the SLA sweep and the recorder while it is
indexed), and a failed build's INVALID index dropped first, as in 0010 and 0015.

Revision ID: 0024
Revises: 0023
"""

import sqlalchemy as sa

from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

INDEX = "ix_sla_breaches_started_at"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        invalid = op.get_bind().scalar(
            sa.text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:n)"),
            {"n": INDEX},
        )
        if invalid:
            op.drop_index(
                INDEX, table_name="sla_breaches", postgresql_concurrently=True, if_exists=True
            )
        op.create_index(
            INDEX,
            "sla_breaches",
            ["started_at"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(INDEX, table_name="sla_breaches", postgresql_concurrently=True, if_exists=True)
