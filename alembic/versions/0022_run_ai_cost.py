"""executions.ai_cost_usd and executions.ai_answered_calls: each run's AI usage summed on its
row (the cost of its ai_usage rows; how many of them a model answered: not the baseline, not
a fallback), so executionStats and the rollup refresh read a run's AI figures from the row
instead of probing or joining ai_usage per run.

A statement-level trigger (ai_usage_add_to_run) adds each INSERT's rows to their executions, one
grouped UPDATE per statement, so every writer keeps them exact (parallel AI steps of one run
add under the row's lock; a bulk INSERT ... SELECT costs one statement). It locks the
executions in id order, before the ai_usage_daily_add trigger (0017) upserts its rows (triggers
fire in name order, hence the name): every usage insert takes its locks in the same order, the
recorder (which locks one execution row FOR NO KEY UPDATE and touches neither rollup) only ever
waits, so nothing deadlocks, and an insert waiting for a run's row holds no daily row that the
tenant's other inserts need. ai_usage rows are never updated in what is summed nor deleted but
with their tenant (whose executions go too); a deleted execution's usage rows stay, with
execution_id set to NULL. Usage rows without an execution add nothing.

Locks and steps, as executions and ai_usage take writes while this runs (each step may find
itself done by an earlier, failed run):
1. The columns, nullable without a default: a catalog change, no rewrite, no scan (lock_timeout
   5 s: queued behind a long transaction, the ALTER would stall every reader of executions).
2. A short transaction: the trigger, and the boundary of the rows it did not see (max(id)).
   CREATE TRIGGER waits for the transactions inserting into ai_usage and holds new ones until
   this commits, so every row up to the boundary is committed and every later row fires the
   trigger (ids come from the sequence in order). Done once, as in 0017: a re-run that finds
   the progress row keeps that trigger and boundary.
3. The rows up to the boundary added in batches of BATCH ids, each batch one statement (its own
   transaction) that adds its sums and moves the progress together: writers go on, and a run
   that stops goes on from its last batch. Adding (not setting) is what lets the trigger count
   the rows after the boundary meanwhile.
4. The progress table dropped with the version stamp.

Revision ID: 0022
Revises: 0021
"""

import sqlalchemy as sa

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

TRIGGER = "ai_usage_add_to_run"
PROGRESS = "ai_usage_run_backfill"
BATCH = 50_000


def sums_of(rows: str) -> str:
    """Two CTEs over the ai_usage rows in `rows` (a table or CTE name): `sums`, their cost and
    answered calls per execution, and `locked`, those executions locked in id order (the sort
    is applied before the lock)."""
    return f"""
sums AS (
    SELECT execution_id, sum(cost_usd) AS cost,
        count(*) FILTER (WHERE provider <> 'baseline' AND fallback_reason IS NULL) AS answered
    FROM {rows} WHERE execution_id IS NOT NULL GROUP BY execution_id
),
locked AS (
    SELECT e.id FROM executions e JOIN sums s ON s.execution_id = e.id
    ORDER BY e.id FOR NO KEY UPDATE OF e
)"""


# The sums added to the locked executions. Under READ COMMITTED an update of a row another
# transaction changed meanwhile re-reads that row, so concurrent additions all count.
ADD = """
UPDATE executions e SET ai_cost_usd = coalesce(e.ai_cost_usd, 0) + s.cost,
    ai_answered_calls = coalesce(e.ai_answered_calls, 0) + s.answered
FROM sums s, locked l WHERE e.id = s.execution_id AND l.id = e.id
"""
# What the trigger runs for each INSERT statement (`added`: its new rows).
ADD_INSERTED = f"WITH {sums_of('added')} {ADD}"
# One batch: the next BATCH rows (by id) after done_through up to the boundary, added to their
# executions, done_through moved to the last of them; the number of rows read (0: done). The
# progress row is locked first, so two runs take turns.
BACKFILL = f"""
WITH progress AS (SELECT boundary, done_through FROM {PROGRESS} FOR UPDATE),
batch AS (
    SELECT u.id, u.execution_id, u.cost_usd, u.provider, u.fallback_reason
    FROM ai_usage u, progress p
    WHERE u.id > p.done_through AND u.id <= p.boundary ORDER BY u.id LIMIT {BATCH}
),
{sums_of("batch")},
added AS ({ADD}),
moved AS (
    UPDATE {PROGRESS} SET done_through = (SELECT max(id) FROM batch)
    WHERE EXISTS (SELECT FROM batch)
)
SELECT count(*) FROM batch
"""


def upgrade() -> None:
    # 1. The columns, committed on their own (the trigger's transaction must not hold
    # executions' ACCESS EXCLUSIVE lock while it waits for ai_usage's inserters).
    with op.get_context().autocommit_block():
        op.execute("SET lock_timeout = '5s'")
        op.execute(
            "ALTER TABLE executions ADD COLUMN IF NOT EXISTS ai_cost_usd numeric(18, 6), "
            "ADD COLUMN IF NOT EXISTS ai_answered_calls integer"
        )
        op.execute("RESET lock_timeout")
    # 2. A short transaction: the trigger and the boundary of what it did not see.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(
        f"CREATE OR REPLACE FUNCTION {TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {ADD_INSERTED}; RETURN NULL; END $$"
    )
    op.execute(
        f"CREATE TABLE IF NOT EXISTS {PROGRESS} "
        "(boundary bigint NOT NULL, done_through bigint NOT NULL)"
    )
    if op.get_bind().scalar(sa.text(f"SELECT count(*) FROM {PROGRESS}")) == 0:
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON ai_usage")
        op.execute(
            f"CREATE TRIGGER {TRIGGER} AFTER INSERT ON ai_usage REFERENCING NEW TABLE AS added "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {TRIGGER}()"
        )
        # The columns are NULL everywhere: nothing wrote them before this trigger.
        op.execute(f"INSERT INTO {PROGRESS} SELECT coalesce(max(id), 0), 0 FROM ai_usage")
    # 3. The rows up to the boundary, BATCH at a time, each batch its own transaction.
    with op.get_context().autocommit_block():
        while op.get_bind().scalar(sa.text(BACKFILL)):
            pass
    # 4. With the version stamp: the backfill is complete.
    op.execute(f"DROP TABLE {PROGRESS}")


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON ai_usage")
    op.execute(f"DROP FUNCTION IF EXISTS {TRIGGER}()")
    op.execute(f"DROP TABLE IF EXISTS {PROGRESS}")
    op.execute(
        "ALTER TABLE executions DROP COLUMN IF EXISTS ai_answered_calls, "
        "DROP COLUMN IF EXISTS ai_cost_usd"
    )
