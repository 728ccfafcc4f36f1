"""Migration 0022 adds executions.ai_cost_usd / ai_answered_calls without rewriting the table
and fills them from the ai_usage rows already there, outside the trigger's transaction and in
batches: every usage row is added to its execution exactly once, whether it was there before
the upgrade (the backfill, over several batches), inserted after the trigger exists but before
the backfill reached it (the trigger), or inserted while a run was stopped half way and then
run again (which goes on from its last batch). Down and up again gives the same figures.

The test holds a SHARE lock on executions where it needs the migration to wait (the backfill's
batches update it; the trigger's transaction does not touch it), and stops the run by
cancelling the batch that waits for that lock. To be sure the first batch waits, the trigger's
transaction is itself held until that lock is taken: by an open insert into ai_usage (of a row
without an execution, which locks nothing in executions), which CREATE TRIGGER waits for."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy.exc import DBAPIError

from alembic import command
from app.migrate import alembic_config, upgrade_async
from tests.cli.test_migration_0009 import blank_db, columns  # noqa: F401 (fixture)
from tests.cli.test_migration_0017 import wait_for

BEFORE = 100_001  # three backfill batches (0022 BATCH = 50,000)
# The revision 0022 follows (0021 when written; wherever the chain puts it).
PREVIOUS = str(ScriptDirectory.from_config(alembic_config("")).get_revision("0022").down_revision)
RUNS = 300
COLUMNS = (
    "tenant_id, execution_id, task, provider, model, input_tokens, output_tokens, cost_usd, "
    "saved_usd, latency_ms, cached, fallback_reason, outcome, at"
)
# i-th row: the executions in turn (every 7th run has none: their columns stay NULL), every
# 50th row without an execution; baseline, cached, budget and invalid-output rows.
INSERT = f"""
INSERT INTO ai_usage ({COLUMNS})
SELECT $1, CASE WHEN i % 50 <> 0 THEN ($2::uuid[])[1 + i % array_length($2::uuid[], 1)] END,
    'summarize', CASE WHEN i % 7 = 0 THEN 'baseline' ELSE 'openai' END, 'm', 0, 0,
    (i % 1000) / 1000000.0, 0, 0, i % 5 = 0,
    CASE WHEN i % 11 = 0 THEN 'BUDGET' WHEN i % 13 = 0 THEN 'INVALID_OUTPUT' END,
    CASE WHEN i % 11 = 0 OR i % 13 = 0 THEN 'FALLBACK' ELSE 'OK' END, $3::timestamptz
FROM generate_series($4::int, $5::int) i
"""
# The figures computed here, independently of the migration's and the trigger's SQL.
EXPECTED = """
SELECT e.id, sum(u.cost_usd),
    sum(CASE WHEN u.provider <> 'baseline' AND u.fallback_reason IS NULL THEN 1
        WHEN u.id IS NOT NULL THEN 0 END)
FROM executions e LEFT JOIN ai_usage u ON u.execution_id = e.id GROUP BY e.id
"""
STORED = "SELECT id, ai_cost_usd, ai_answered_calls FROM executions"
FILE = "SELECT relfilenode FROM pg_class WHERE oid = 'executions'::regclass"


async def assert_added_once(conn: asyncpg.Connection) -> None:
    stored = {tuple(r) for r in await conn.fetch(STORED)}
    assert stored == {tuple(r) for r in await conn.fetch(EXPECTED)}
    assert sum(r[1] is None for r in stored) == RUNS // 7 + 1  # runs without usage: NULL
    assert sum(r[2] or 0 for r in stored) > 0


async def seed(conn: asyncpg.Connection) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A tenant, a template and its version, RUNS executions; returns the tenant and the
    executions that get usage (not every 7th)."""
    tenant, template, version = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await conn.execute(
        "INSERT INTO tenants (id, name, tier, created_at) VALUES ($1, $2, 'pro', now())",
        tenant,
        f"t{tenant.hex}",
    )
    await conn.execute(
        "INSERT INTO templates (id, tenant_id, name, title, description, tags, visibility, "
        "latest_version, created_at, updated_at) "
        "VALUES ($1, $2, 'mig22', 't', '', '{}', 'PRIVATE', 1, now(), now())",
        template,
        tenant,
    )
    await conn.execute(
        "INSERT INTO template_versions (id, template_id, version, status, spec, created_at) "
        "VALUES ($1, $2, 1, 'PUBLISHED', '{}', now())",
        version,
        template,
    )
    runs = [uuid.uuid4() for _ in range(RUNS)]
    await conn.executemany(
        "INSERT INTO executions (id, tenant_id, template_id, template_version_id, params, "
        "status, progress, workflow_id, last_seq, created_at, updated_at) "
        "VALUES ($1, $2, $3, $4, '{}', 'RUNNING', 0, $5, 0, now(), now())",
        [(r, tenant, template, version, f"wf-{r}") for r in runs],
    )
    return tenant, [r for i, r in enumerate(runs) if i % 7]


async def test_0022_backfill_adds_every_usage_row_once_across_trigger_and_rerun(
    blank_db: str,  # noqa: F811
) -> None:
    await upgrade_async(blank_db, PREVIOUS)
    now = datetime.now(UTC)
    conn = await asyncpg.connect(blank_db)
    other = await asyncpg.connect(blank_db)
    inserter = await asyncpg.connect(blank_db)
    try:
        tenant, used = await seed(conn)
        await conn.execute(INSERT, tenant, used, now, 1, BEFORE)
        file = await conn.fetchval(FILE)

        # An insert left open: CREATE TRIGGER waits for it (lock_timeout 5 s).
        open_insert = inserter.transaction()
        await open_insert.start()
        await inserter.execute(INSERT, tenant, used, now, 50, 50)  # no execution
        run = asyncio.create_task(upgrade_async(blank_db, "0022"))
        await wait_for(
            other,
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'executions'::regclass "
            "AND attname = 'ai_cost_usd'",
        )
        tx = conn.transaction()
        await tx.start()
        await conn.execute("LOCK TABLE executions IN SHARE MODE")
        await open_insert.commit()
        boundary = await conn.fetchval("SELECT max(id) FROM ai_usage")
        await wait_for(other, "SELECT to_regclass('ai_usage_run_backfill') IS NOT NULL")
        await wait_for(other, "SELECT count(*) FROM ai_usage_run_backfill")
        progress = await conn.fetchrow("SELECT boundary, done_through FROM ai_usage_run_backfill")
        assert tuple(progress) == (boundary, 0)
        # Between the trigger's commit and the backfill: the trigger adds these.
        await conn.execute(INSERT, tenant, used, now, 200_001, 201_000)
        await tx.commit()

        # Let one batch through, then hold and stop the run at the next one.
        tx = conn.transaction()
        await tx.start()
        await conn.execute("LOCK TABLE executions IN SHARE MODE")
        done = await conn.fetchval("SELECT done_through FROM ai_usage_run_backfill")
        assert 0 < done < boundary
        waiting = await wait_for(
            other,
            "SELECT pid FROM pg_locks WHERE relation = 'executions'::regclass AND NOT granted",
        )
        assert await other.fetchval("SELECT pg_cancel_backend($1)", waiting)
        await conn.execute(INSERT, tenant, used, now, 300_001, 301_000)
        await tx.commit()
        with pytest.raises(DBAPIError, match="cancel"):
            await run
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == PREVIOUS
        # Stopped half way: the trigger adds what comes now, the re-run the rest up to the
        # boundary, none of the first batch again.
        await conn.execute(INSERT, tenant, used, now, 400_001, 401_000)
        await upgrade_async(blank_db, "0022")

        assert await conn.fetchval("SELECT version_num FROM alembic_version") == "0022"
        assert await conn.fetchval("SELECT to_regclass('ai_usage_run_backfill')") is None
        assert await conn.fetchval(FILE) == file  # no table rewrite
        await assert_added_once(conn)
        # And the trigger goes on after the upgrade.
        await conn.execute(INSERT, tenant, used, now, 500_001, 500_500)
        await assert_added_once(conn)

        # Down: the columns and the trigger go; up again: the backfill alone fills them.
        await asyncio.to_thread(command.downgrade, alembic_config(blank_db), PREVIOUS)
        assert not {"ai_cost_usd", "ai_answered_calls"} & await columns(conn, "executions")
        await conn.execute(INSERT, tenant, used, now, 600_001, 600_100)  # no trigger now
        await upgrade_async(blank_db, "0022")
        await assert_added_once(conn)
        total = await conn.fetchval("SELECT sum(ai_cost_usd) FROM executions")
        assert total == await conn.fetchval(
            "SELECT sum(cost_usd) FROM ai_usage WHERE execution_id IS NOT NULL"
        )
        assert total > Decimal(0)
    finally:
        await inserter.close()
        await other.close()
        await conn.close()
