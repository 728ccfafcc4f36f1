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
  cascades here too). Existing rows are summed into it here, after the trigger exists and
  outside the trigger's transaction: CREATE TRIGGER's lock holds every AI usage insert until
  its transaction commits, and AI usage is recorded after the provider was paid (an insert
  held for minutes times the activity out, and its retry pays again). So the trigger and the
  boundary of the rows it did not see (max(id)) commit in one short transaction, and the rows
  up to the boundary are summed in batches of BATCH ids, each its own transaction, with the
  progress in a table (ai_usage_daily_backfill) that a re-run continues from.
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


def daily_upsert(rows: str) -> str:
    """Add the groups of the ai_usage rows in `rows` (a table or CTE) to ai_usage_daily."""
    return (
        f"INSERT INTO ai_usage_daily AS d ({COLUMNS}) {GROUPED.format(rows=rows)} "
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


def repeats_upsert(rows: str) -> str:
    """Add the repeats among the ai_usage rows in `rows` to ai_usage_repeats_daily."""
    return (
        f"INSERT INTO ai_usage_repeats_daily AS r ({REPEAT_COLUMNS}) {REPEATS.format(rows=rows)} "
        "ON CONFLICT (tenant_id, day, task, bucket) DO UPDATE SET "
        "repeats = r.repeats + EXCLUDED.repeats, cost_usd = r.cost_usd + EXCLUDED.cost_usd"
    )


# The backfill's progress while 0017 runs: one row, the highest ai_usage id the trigger did not
# see (`boundary`) and the highest id summed in so far. Dropped with the version stamp.
PROGRESS = "ai_usage_daily_backfill"
BATCH = 50_000
# One batch: the next BATCH rows (by id, on the primary key) after done_through up to the
# boundary, summed into both rollups, done_through moved to the last of them; the number of
# rows summed (0: done). The progress row is locked first, so two runs take turns.
BACKFILL = f"""
WITH progress AS (SELECT boundary, done_through FROM {PROGRESS} FOR UPDATE),
batch AS (
    SELECT u.* FROM ai_usage u, progress p
    WHERE u.id > p.done_through AND u.id <= p.boundary ORDER BY u.id LIMIT {BATCH}
),
daily AS ({daily_upsert("batch")}),
repeats AS ({repeats_upsert("batch")}),
moved AS (
    UPDATE {PROGRESS} SET done_through = (SELECT max(id) FROM batch)
    WHERE EXISTS (SELECT FROM batch)
)
SELECT count(*) FROM batch
"""


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
    # 3. A short transaction: the trigger, and the boundary of what it did not see. CREATE
    # TRIGGER waits for the transactions inserting into ai_usage to end and keeps new ones out
    # until this commits, so every row with an id up to max(id) read after it is committed,
    # and every later row gets a higher id (the sequence hands out ids in order, cache 1) and
    # fires the trigger. Done once: a run that finds the progress row (an earlier one stopped
    # in step 4) keeps that trigger and boundary.
    op.execute(
        "CREATE OR REPLACE FUNCTION ai_usage_daily_add() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {daily_upsert('added')}; {repeats_upsert('added')}; RETURN NULL; END $$"
    )
    op.execute(
        f"CREATE TABLE IF NOT EXISTS {PROGRESS} "
        "(boundary bigint NOT NULL, done_through bigint NOT NULL)"
    )
    if op.get_bind().scalar(sa.text(f"SELECT count(*) FROM {PROGRESS}")) == 0:
        op.execute("DROP TRIGGER IF EXISTS ai_usage_daily_add ON ai_usage")
        op.execute(
            "CREATE TRIGGER ai_usage_daily_add AFTER INSERT ON ai_usage REFERENCING NEW TABLE "
            "AS added FOR EACH STATEMENT EXECUTE FUNCTION ai_usage_daily_add()"
        )
        # The rollups are empty: nothing wrote them before this trigger. (Not emptied here to
        # be sure: that would lock them, and nothing else here needs to.)
        op.execute(f"INSERT INTO {PROGRESS} SELECT coalesce(max(id), 0), 0 FROM ai_usage")
    # 4. The rows up to the boundary summed in, BATCH at a time, each batch one statement (its
    # own transaction here) that adds its sums and moves done_through together: writers go on,
    # and a run that stops half way goes on from the last batch when run again.
    with op.get_context().autocommit_block():
        while op.get_bind().scalar(sa.text(BACKFILL)):
            pass
    # 5. With the version stamp: the backfill is complete.
    op.execute(f"DROP TABLE {PROGRESS}")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS ai_usage_daily_add ON ai_usage")
    op.execute("DROP FUNCTION IF EXISTS ai_usage_daily_add()")
    op.execute(f"DROP TABLE IF EXISTS {PROGRESS}")
    op.drop_table("ai_usage_repeats_daily", if_exists=True)
    op.drop_table("ai_usage_daily", if_exists=True)
    with op.get_context().autocommit_block():
        for name in INDEXES:
            op.drop_index(name, table_name="ai_usage", postgresql_concurrently=True, if_exists=True)
    op.execute(
        "ALTER TABLE ai_usage DROP COLUMN IF EXISTS repeat_gap_seconds, "
        "DROP COLUMN IF EXISTS input_hash"
    )
