"""Migration 0017 sums the ai_usage rows already there into the per-day rollups outside the
trigger's transaction, in batches: every row is counted exactly once, whether it was there
before the upgrade (summed by the backfill, over several batches), inserted after the trigger
exists but before the backfill reached it (summed by the trigger), or inserted while a run was
stopped half way and then run again (which goes on from its last batch).

The test holds a SHARE lock on ai_usage_daily where it needs the migration to wait (the
backfill's batches write it; the trigger's transaction does not touch it), and stops the run by
cancelling the batch that waits for that lock."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError

from app.migrate import upgrade_async
from tests.cli.test_migration_0009 import blank_db  # noqa: F401 (fixture)

BEFORE = 120_001  # three backfill batches (0017 BATCH = 50,000)
COLUMNS = (
    "tenant_id, task, provider, model, input_tokens, output_tokens, cost_usd, saved_usd, "
    "latency_ms, cached, fallback_reason, outcome, at"
)
# i-th row: two tenants, three tasks, baseline/cached/budget/invalid rows, four UTC days.
ROW = """
(ARRAY[$1::uuid, $2::uuid])[1 + i % 2], (ARRAY['a', 'b', 'c'])[1 + i % 3],
CASE WHEN i % 7 = 0 THEN 'baseline' ELSE 'openai' END, 'm', 0, 0, (i % 100) / 1000.0, 0, 0,
i % 5 = 0,
CASE WHEN i % 11 = 0 THEN 'BUDGET' WHEN i % 13 = 0 THEN 'INVALID_OUTPUT' END,
CASE WHEN i % 11 = 0 OR i % 13 = 0 THEN 'FALLBACK' ELSE 'OK' END,
$3::timestamptz - (i % 4) * interval '1 day' - (i % 60) * interval '1 minute'
"""
INSERT = f"INSERT INTO ai_usage ({COLUMNS}) SELECT {ROW} FROM generate_series($4::int, $5::int) i"
# After 0017's columns exist: some rows repeat an earlier input (a gap, in seconds).
INSERT_GAPS = (
    f"INSERT INTO ai_usage ({COLUMNS}, repeat_gap_seconds) SELECT {ROW}, "
    "CASE WHEN i % 3 = 0 THEN (i * 97) % 3000000 END FROM generate_series($4::int, $5::int) i"
)
# The rollups computed here, independently of the migration's and the trigger's SQL.
EXPECTED_DAILY = """
SELECT tenant_id, (at AT TIME ZONE 'UTC')::date AS day, task, provider, model,
    count(*) AS calls,
    sum(CASE WHEN outcome = 'OK' AND NOT cached AND provider <> 'baseline' THEN 1 ELSE 0 END)
        AS passed,
    sum(CASE WHEN fallback_reason = 'INVALID_OUTPUT' AND provider <> 'baseline' THEN 1 ELSE 0
        END) AS invalid,
    sum(CASE WHEN NOT cached AND provider <> 'baseline' THEN 1 ELSE 0 END) AS paid,
    sum(CASE WHEN fallback_reason = 'BUDGET' THEN 1 ELSE 0 END) AS budget_fallbacks,
    sum(CASE WHEN NOT cached AND provider <> 'baseline' THEN cost_usd ELSE 0 END)
        AS paid_cost_usd,
    sum(cost_usd) AS cost_usd
FROM ai_usage GROUP BY 1, 2, 3, 4, 5
"""
DAILY = (
    "SELECT tenant_id, day, task, provider, model, calls, passed, invalid, paid, "
    "budget_fallbacks, paid_cost_usd, cost_usd FROM ai_usage_daily"
)
BOUNDS = (300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400, 172800, 604800, 1209600, 2592000)
EXPECTED_REPEATS = f"""
SELECT tenant_id, (at AT TIME ZONE 'UTC')::date AS day, task,
    (SELECT count(*) FROM unnest(ARRAY{list(BOUNDS)}) b WHERE b < repeat_gap_seconds) AS bucket,
    count(*) AS repeats, sum(cost_usd) AS cost_usd
FROM ai_usage WHERE repeat_gap_seconds IS NOT NULL GROUP BY 1, 2, 3, 4
"""
REPEATS = "SELECT tenant_id, day, task, bucket, repeats, cost_usd FROM ai_usage_repeats_daily"


async def rows(conn: asyncpg.Connection, query: str) -> set[tuple[object, ...]]:
    return {tuple(r) for r in await conn.fetch(query)}


async def assert_counted_once(conn: asyncpg.Connection) -> None:
    daily = await rows(conn, DAILY)
    assert daily == await rows(conn, EXPECTED_DAILY)
    assert sum(r[5] for r in daily) == await conn.fetchval("SELECT count(*) FROM ai_usage")
    repeats = await rows(conn, REPEATS)
    assert repeats == await rows(conn, EXPECTED_REPEATS)
    assert len(repeats) > 1


async def wait_for(conn: asyncpg.Connection, query: str) -> object:
    for _ in range(4000):
        value = await conn.fetchval(query)
        if value:
            return value
        await asyncio.sleep(0.005)
    raise AssertionError(f"never true: {query}")


async def test_0017_backfill_counts_every_row_once_across_trigger_and_rerun(
    blank_db: str,  # noqa: F811
) -> None:
    await upgrade_async(blank_db, "0016")
    tenants = (uuid.uuid4(), uuid.uuid4())
    now = datetime.now(UTC)
    conn = await asyncpg.connect(blank_db)
    other = await asyncpg.connect(blank_db)
    try:
        for tenant in tenants:
            await conn.execute(
                "INSERT INTO tenants (id, name, tier, created_at) VALUES ($1, $2, 'pro', now())",
                tenant,
                f"t{tenant.hex}",
            )
        await conn.execute(INSERT, *tenants, now, 1, BEFORE)
        boundary = await conn.fetchval("SELECT max(id) FROM ai_usage")

        run = asyncio.create_task(upgrade_async(blank_db, "0017"))
        # Hold the backfill as soon as its table exists (step 1 commits it before the index
        # builds; the trigger's transaction does not touch it).
        await wait_for(conn, "SELECT to_regclass('ai_usage_daily') IS NOT NULL")
        tx = conn.transaction()
        await tx.start()
        await conn.execute("LOCK TABLE ai_usage_daily IN SHARE MODE")
        # Waited for from the other connection: CREATE INDEX CONCURRENTLY waits for every
        # transaction that ran a statement while it builds, this one too.
        await wait_for(other, "SELECT to_regclass('ai_usage_daily_backfill') IS NOT NULL")
        progress = await conn.fetchrow("SELECT boundary, done_through FROM ai_usage_daily_backfill")
        assert tuple(progress) == (boundary, 0)
        # Between the trigger's commit and the backfill: the trigger counts these.
        await conn.execute(INSERT_GAPS, *tenants, now, 200_001, 201_000)
        await tx.commit()

        # Let one batch through, then hold and stop the run at the next one.
        tx = conn.transaction()
        await tx.start()
        await conn.execute("LOCK TABLE ai_usage_daily IN SHARE MODE")
        done = await conn.fetchval("SELECT done_through FROM ai_usage_daily_backfill")
        assert 0 < done < boundary
        waiting = await wait_for(
            other,
            "SELECT pid FROM pg_locks WHERE relation = 'ai_usage_daily'::regclass AND NOT granted",
        )
        assert await other.fetchval("SELECT pg_cancel_backend($1)", waiting)
        await conn.execute(INSERT_GAPS, *tenants, now, 300_001, 301_000)
        await tx.commit()
        with pytest.raises(DBAPIError, match="cancel"):
            await run
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == "0016"
        # Stopped half way: the trigger counts what comes now, the re-run the rest up to the
        # boundary, none of the first batch again.
        await conn.execute(INSERT_GAPS, *tenants, now, 400_001, 401_000)
        await upgrade_async(blank_db, "0017")

        assert await conn.fetchval("SELECT version_num FROM alembic_version") == "0017"
        assert await conn.fetchval("SELECT to_regclass('ai_usage_daily_backfill')") is None
        await assert_counted_once(conn)
        assert await conn.fetchval("SELECT count(*) FROM ai_usage") == BEFORE + 3000
        # And the trigger goes on after the upgrade.
        await conn.execute(INSERT_GAPS, *tenants, now, 500_001, 500_500)
        await assert_counted_once(conn)
    finally:
        await other.close()
        await conn.close()
