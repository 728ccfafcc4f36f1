"""AI usage for aiRecommendations (app/analytics/recommendations.py):

- ai_usage.input_hash: a keyed fingerprint of each call's normalised input (app/ai/input_hash.py),
  never the text; existing rows keep null (their inputs were never recorded).
- ai_usage.repeat_gap_seconds: for a paid, validated call with a fingerprint, the seconds since
  the previous such call of the same tenant, task, model and input (set by
  AiRepository.add_usage, which finds that call through ix_ai_usage_repeats); null for the first.
  ix_ai_usage_repeat_gaps holds just those rows per tenant and time, covering what the repeat
  count reads for the partial days at a window's edges.
- ai_usage_daily: per tenant, UTC day, task, provider and model, the counts and sums the other
  recommendations read (a year of a busy tenant is a few thousand rows instead of a million).
  A statement-level trigger adds each INSERT's rows to it, one grouped upsert per statement
  (a bulk INSERT ... SELECT costs one, not one per row), so every writer keeps it current.
  ai_usage rows are never updated in what it counts nor deleted but with their tenant (which
  cascades here too). Existing rows are summed into it here.
- ai_usage_repeats_daily: the same trigger counts the repeats (rows with a gap) per tenant, UTC
  day, task and gap bucket: bucket k holds gaps <= GAP_BOUNDS[k] (and above the previous
  bound), the last one the longer gaps. The bounds are the cache TTLs aiRecommendations
  suggests and the built-in ones (app/models/ai_usage.py REPEAT_GAP_BOUNDS, the same list).

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

COUNTS = ("calls", "passed", "invalid", "paid", "budget_fallbacks")
SUMS = ("paid_cost_usd", "cost_usd")
# What one group of ai_usage rows adds to its ai_usage_daily row (`rows` is the source).
GROUPED = """
SELECT tenant_id, (at AT TIME ZONE 'UTC')::date, task, provider, model,
    count(*),
    count(*) FILTER (WHERE outcome = 'OK' AND NOT cached AND provider <> 'baseline'),
    count(*) FILTER (WHERE fallback_reason = 'INVALID_OUTPUT' AND provider <> 'baseline'),
    count(*) FILTER (WHERE NOT cached AND provider <> 'baseline'),
    count(*) FILTER (WHERE fallback_reason = 'BUDGET'),
    coalesce(sum(cost_usd) FILTER (WHERE NOT cached AND provider <> 'baseline'), 0),
    coalesce(sum(cost_usd), 0)
FROM {rows}
GROUP BY 1, 2, 3, 4, 5
ORDER BY 1, 2, 3, 4, 5
"""
COLUMNS = "tenant_id, day, task, provider, model, " + ", ".join(COUNTS + SUMS)
UPSERT = (
    f"INSERT INTO ai_usage_daily AS d ({COLUMNS}) {GROUPED.format(rows='added')} "
    "ON CONFLICT (tenant_id, day, task, provider, model) DO UPDATE SET "
    + ", ".join(f"{c} = d.{c} + EXCLUDED.{c}" for c in COUNTS + SUMS)
)
# Seconds; a copy of app/models/ai_usage.py REPEAT_GAP_BOUNDS as of this revision.
GAP_BOUNDS = (300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400, 172800, 604800, 1209600)
GAP_BOUNDS += (2592000,)
BUCKET = (
    "CASE "
    + " ".join(f"WHEN repeat_gap_seconds <= {b} THEN {k}" for k, b in enumerate(GAP_BOUNDS))
    + f" ELSE {len(GAP_BOUNDS)} END"
)
REPEATS = f"""
SELECT tenant_id, (at AT TIME ZONE 'UTC')::date, task, {BUCKET}, count(*), sum(cost_usd)
FROM {{rows}}
WHERE repeat_gap_seconds IS NOT NULL
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4
"""
REPEAT_COLUMNS = "tenant_id, day, task, bucket, repeats, cost_usd"
REPEAT_UPSERT = (
    f"INSERT INTO ai_usage_repeats_daily AS r ({REPEAT_COLUMNS}) {REPEATS.format(rows='added')} "
    "ON CONFLICT (tenant_id, day, task, bucket) DO UPDATE SET "
    "repeats = r.repeats + EXCLUDED.repeats, cost_usd = r.cost_usd + EXCLUDED.cost_usd"
)


# name -> (columns, INCLUDE columns, partial index predicate), on ai_usage
INDEXES: dict[str, tuple[list[str], list[str], str]] = {
    "ix_ai_usage_repeats": (
        ["tenant_id", "task", "model", "input_hash", "at"],
        [],
        "input_hash IS NOT NULL AND NOT cached AND outcome = 'OK'",
    ),
    "ix_ai_usage_repeat_gaps": (
        ["tenant_id", "at"],
        ["task", "repeat_gap_seconds", "cost_usd"],
        "repeat_gap_seconds IS NOT NULL",
    ),
}


def upgrade() -> None:
    # 1. Columns and tables (each step may find itself done by an earlier, failed run).
    op.execute(
        "ALTER TABLE ai_usage ADD COLUMN IF NOT EXISTS input_hash varchar(64), "
        "ADD COLUMN IF NOT EXISTS repeat_gap_seconds integer"
    )
    op.create_table(
        "ai_usage_daily",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("task", sa.String(length=40), nullable=False),
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        *(sa.Column(c, sa.BigInteger(), nullable=False) for c in COUNTS),
        *(sa.Column(c, sa.Numeric(18, 6), nullable=False) for c in SUMS),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_ai_usage_daily_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "day", "task", "provider", "model", name=op.f("pk_ai_usage_daily")
        ),
        if_not_exists=True,
    )
    op.create_table(
        "ai_usage_repeats_daily",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("task", sa.String(length=40), nullable=False),
        sa.Column("bucket", sa.SmallInteger(), nullable=False),
        sa.Column("repeats", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Numeric(18, 6), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_ai_usage_repeats_daily_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "day", "task", "bucket", name=op.f("pk_ai_usage_repeats_daily")
        ),
        if_not_exists=True,
    )
    # 2. The indexes CONCURRENTLY (writers go on), a failed build's INVALID index dropped first,
    # as in 0010 and 0015; this commits step 1.
    with op.get_context().autocommit_block():
        for name, (columns, include, where) in INDEXES.items():
            invalid = op.get_bind().scalar(
                sa.text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:n)"),
                {"n": name},
            )
            if invalid:
                op.drop_index(
                    name, table_name="ai_usage", postgresql_concurrently=True, if_exists=True
                )
            op.create_index(
                name,
                "ai_usage",
                columns,
                postgresql_include=include,
                postgresql_where=sa.text(where),
                postgresql_concurrently=True,
                if_not_exists=True,
            )
    # 3. One transaction (with the version stamp): the trigger first, whose lock keeps writers
    # out until the commit, then the rows already there summed in; nothing is missed or counted
    # twice. The backfill reads ai_usage once (seconds at a million rows).
    op.execute(
        "CREATE OR REPLACE FUNCTION ai_usage_daily_add() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {UPSERT}; {REPEAT_UPSERT}; RETURN NULL; END $$"
    )
    op.execute("DROP TRIGGER IF EXISTS ai_usage_daily_add ON ai_usage")
    op.execute(
        "CREATE TRIGGER ai_usage_daily_add AFTER INSERT ON ai_usage "
        "REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION ai_usage_daily_add()"
    )
    op.execute("DELETE FROM ai_usage_daily")
    op.execute(f"INSERT INTO ai_usage_daily ({COLUMNS}) {GROUPED.format(rows='ai_usage')}")
    # (no row had a gap before this revision: ai_usage_repeats_daily starts empty)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS ai_usage_daily_add ON ai_usage")
    op.execute("DROP FUNCTION IF EXISTS ai_usage_daily_add()")
    op.drop_table("ai_usage_repeats_daily", if_exists=True)
    op.drop_table("ai_usage_daily", if_exists=True)
    with op.get_context().autocommit_block():
        for name in INDEXES:
            op.drop_index(
                name, table_name="ai_usage", postgresql_concurrently=True, if_exists=True
            )
    op.execute(
        "ALTER TABLE ai_usage DROP COLUMN IF EXISTS repeat_gap_seconds, "
        "DROP COLUMN IF EXISTS input_hash"
    )
