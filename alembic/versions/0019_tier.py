"""executions.tier (the tier a run was created, then started, at), carried into
execution_rollup, and template_cost_estimates (Template.costEstimate per template and tier,
refreshed by the analytics rollup schedule).

Locks, as executions takes writes while this runs (steps safe to run again):
1. One transaction with lock_timeout 5 s (a lock queued behind a long transaction would stall
   every writer queued behind it; the step fails instead: run it again):
   - executions.tier, nullable without a default: a catalog change, no rewrite, no scan.
     Executions created before it keep NULL (no backfill): readers count them at their
     tenant's current tier, as before.
   - execution_rollup.tier, NOT NULL DEFAULT '' (UNKNOWN_TIER): a constant default is a
     catalog change too (PostgreSQL 11+), no rewrite. The rows already rolled up keep '', which
     readers count at the tenant's current tier, as they count the rows' NULL.
   - template_cost_estimates (empty; filled by the next rollup refresh).
2. Outside a transaction: the rollup's new key (with tier) built CONCURRENTLY as a unique
   index (an INVALID one left by a failed build is dropped first), then swapped in as the
   primary key in one ALTER (brief ACCESS EXCLUSIVE lock on execution_rollup, no build).

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

NEW_KEY = "uq_execution_rollup_tier"
KEY = ("tenant_id", "day", "template_id", "status", "duration_bucket")


def _primary_key_columns() -> list[str]:
    rows = op.get_bind().execute(
        sa.text(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'execution_rollup'::regclass "
            "AND i.indisprimary"
        )
    )
    return [r[0] for r in rows]


def upgrade() -> None:
    # 1. One transaction, never queued long behind another one's lock.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("ALTER TABLE executions ADD COLUMN IF NOT EXISTS tier VARCHAR(20)")
    op.execute(
        "ALTER TABLE execution_rollup ADD COLUMN IF NOT EXISTS tier VARCHAR(20) "
        "NOT NULL DEFAULT ''"
    )
    op.create_table(
        "template_cost_estimates",
        sa.Column("template_id", sa.Uuid(), nullable=False),
        sa.Column("tier", sa.String(length=20), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("p50_usd", sa.Float(), nullable=True),
        sa.Column("p95_usd", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name=op.f("fk_template_cost_estimates_template_id_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "template_id", "tier", "tenant_id", name=op.f("pk_template_cost_estimates")
        ),
        if_not_exists=True,
    )
    # 2. This commits step 1; each statement then runs on its own.
    with op.get_context().autocommit_block():
        if "tier" in _primary_key_columns():
            return
        invalid = op.get_bind().scalar(
            sa.text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:n)"),
            {"n": NEW_KEY},
        )
        if invalid:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {NEW_KEY}")
        op.execute(
            f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {NEW_KEY} "
            f"ON execution_rollup ({', '.join(KEY)}, tier)"
        )
        op.execute("SET lock_timeout = '5s'")
        op.execute(
            "ALTER TABLE execution_rollup DROP CONSTRAINT pk_execution_rollup, "
            f"ADD CONSTRAINT pk_execution_rollup PRIMARY KEY USING INDEX {NEW_KEY}"
        )
        op.execute("RESET lock_timeout")


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.drop_table("template_cost_estimates", if_exists=True)
    # The old key cannot hold a day's runs of two tiers apart: the rollup is emptied and its
    # next refresh rebuilds every day (as the first refresh of a database does).
    op.execute("DELETE FROM analytics_rollup_state")
    op.execute("DELETE FROM execution_rollup")
    op.execute("DELETE FROM step_usage_rollup")
    op.execute("ALTER TABLE execution_rollup DROP CONSTRAINT pk_execution_rollup")
    op.execute("ALTER TABLE execution_rollup DROP COLUMN IF EXISTS tier")
    op.execute(f"ALTER TABLE execution_rollup ADD CONSTRAINT pk_execution_rollup PRIMARY KEY ({', '.join(KEY)})")
    op.execute("ALTER TABLE executions DROP COLUMN IF EXISTS tier")
