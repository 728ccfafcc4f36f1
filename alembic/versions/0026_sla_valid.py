"""template_versions.sla is a version's `sla` block only while it passes SlaSpec's bounds, else
NULL: SQL (the open-run sweep, slaReport, the SLA rollup, the targets cap) then finds no target
where Python's SlaSpec.stored finds none. Before, SQL read `max_duration_seconds` of any
block, so a block that failed today's bounds (window_seconds 10, say) had runs swept as
breaching and judged in reports while the recorder said there was no target.

The expression is the one app/models/template.py builds as SLA_SQL from app/sla_limits.py,
written out here with this release's bounds (a migration never imports code that may
change). It
is IMMUTABLE (jsonb_typeof, ->, ->>, jsonb - text[], numeric casts, CASE) and never fails:
a value is cast only under a CASE that found it a JSON number, and to numeric, which holds
any JSON number. A string or boolean value counts as invalid (pydantic would coerce "60" or
true; a published block is a model_dump, which never holds them). tests/api/
test_sla_stored_block.py checks that it agrees with SlaSpec.stored, and
tests/cli/test_migration_0026.py that it is SLA_SQL's.

Locks (steps safe to run again):
1. One transaction with lock_timeout 5 s (a lock queued behind a long transaction would stall
   every writer queued behind it; the step fails instead: run it again). PostgreSQL 15 has no
   ALTER COLUMN ... SET EXPRESSION: one ALTER drops the column (and ix_template_versions_sla
   with it) and adds it again, GENERATED ... STORED with the new expression. That rewrites
   template_versions once, under ACCESS EXCLUSIVE: accepted, as in 0016, since the table holds
   one row per published version (thousands of rows, well under a second). The column moves
   to the end of the table's column order; every reader names its columns. Run again, it
   drops and adds again (one more rewrite, same result).
2. Outside a transaction (autocommit): ix_template_versions_sla built again CONCURRENTLY, a
   failed build's INVALID index dropped first, as 0016 and 0024 do.

Downgrade: the same two steps with 0016's expression (every block, valid or not).

Revision ID: 0026
Revises: 0025
"""

import sqlalchemy as sa

from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

INDEX = "ix_template_versions_sla"

# 0016's expression: the block whatever it holds (jsonb null, a spec without one, is NULL).
OLD_SLA_SQL = "NULLIF(spec -> 'sla', 'null'::jsonb)"


def _number(key: str, check: str, *, nullable: bool) -> str:
    """The block's `key` is a JSON number passing `check` ({n}: its numeric value), or absent
    (or JSON null, when `nullable`)."""
    n = f"((spec -> 'sla') ->> '{key}')::numeric"
    missing = "'null'" if nullable else "'absent'"
    return (
        f"CASE COALESCE(jsonb_typeof((spec -> 'sla') -> '{key}'), {missing}) "
        f"WHEN 'number' THEN ({check.format(n=n)}) WHEN {missing} THEN true ELSE false END"
    )


# SlaSpec's bounds as of this release: max_duration_seconds in (0, 2,592,000] (at least
# 5e-324, the smallest positive float: Python reads less as 0.0, and a float8 cast of it
# fails), min_success_rate in [0, 1], window_seconds an integer in [300, 2,678,400],
# min_runs an integer in [1, 100,000]; no other key; at least one target.
NEW_SLA_SQL = (
    "CASE WHEN jsonb_typeof((spec -> 'sla')) = 'object' THEN CASE WHEN "
    "(spec -> 'sla') - ARRAY['max_duration_seconds', 'min_success_rate', 'window_seconds', "
    "'min_runs'] = '{}'::jsonb"
    " AND "
    + _number("max_duration_seconds", "{n} BETWEEN 5e-324 AND 2592000.0", nullable=True)
    + " AND "
    + _number("min_success_rate", "{n} BETWEEN 0 AND 1", nullable=True)
    + " AND "
    + _number(
        "window_seconds", "{n} = trunc({n}) AND {n} BETWEEN 300 AND 2678400", nullable=False
    )
    + " AND "
    + _number("min_runs", "{n} = trunc({n}) AND {n} BETWEEN 1 AND 100000", nullable=False)
    + " AND (jsonb_typeof((spec -> 'sla') -> 'max_duration_seconds') = 'number' "
    "OR jsonb_typeof((spec -> 'sla') -> 'min_success_rate') = 'number')"
    " THEN (spec -> 'sla') END END"
)


def _regenerate(expression: str) -> None:
    """Step 1: the column dropped and added again with `expression`, in one ALTER (one
    rewrite of template_versions)."""
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(
        "ALTER TABLE template_versions DROP COLUMN IF EXISTS sla, "
        f"ADD COLUMN sla JSONB GENERATED ALWAYS AS ({expression}) STORED"
    )


def _build_index() -> None:
    """Step 2, outside the transaction: the partial index the SLA round reads, CONCURRENTLY;
    then ANALYZE: the new column has no statistics (a rewrite does not count towards
    autoanalyze, and this table seldom changes), so the planner would guess most versions
    have an `sla` and skip the index until autoanalyze happened to run."""
    with op.get_context().autocommit_block():
        invalid = op.get_bind().scalar(
            sa.text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:n)"),
            {"n": INDEX},
        )
        if invalid:
            op.drop_index(
                INDEX, table_name="template_versions", postgresql_concurrently=True, if_exists=True
            )
        op.create_index(
            INDEX,
            "template_versions",
            ["template_id"],
            postgresql_where=sa.text("sla IS NOT NULL"),
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.execute("ANALYZE template_versions")


def upgrade() -> None:
    _regenerate(NEW_SLA_SQL)
    _build_index()


def downgrade() -> None:
    _regenerate(OLD_SLA_SQL)
    _build_index()
