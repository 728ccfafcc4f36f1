"""analytics_rollup_state.estimates_from: the moment template_cost_estimates describes, apart
from the rollup's own refreshed_from. Since the rollups catch up in chunks (a first fill or a
long outage: several committed chunks, the estimates recomputed by the last one only),
refreshed_from moves with each chunk while the estimates stay those of the last refresh that
caught up; Template.costEstimate's `asOf` reads this column so it never names a moment the
estimates do not describe.

A nullable column on a one-row table: no rewrite, a brief lock. Backfilled from
refreshed_from (before chunks, every refresh wrote or kept current estimates).

Revision ID: 0027
Revises: 0026
"""

from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(
        "ALTER TABLE analytics_rollup_state ADD COLUMN IF NOT EXISTS estimates_from "
        "TIMESTAMP WITH TIME ZONE"
    )
    op.execute(
        "UPDATE analytics_rollup_state SET estimates_from = refreshed_from "
        "WHERE estimates_from IS NULL"
    )


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("ALTER TABLE analytics_rollup_state DROP COLUMN IF EXISTS estimates_from")
