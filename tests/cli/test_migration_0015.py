"""Migration 0015 (the planning views' platform-wide indexes) builds them CONCURRENTLY, valid,
downgrades and upgrades again; the partial finished_at index is usable by the peak-hour query
as the repository spells it (FINISHED_SQL: the same statuses as the index predicate)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg

from alembic import command
from app.migrate import alembic_config, upgrade_async
from app.models.execution import FINISHED_SQL
from tests.cli.test_migration_0009 import blank_db  # noqa: F401 (fixture)

INDEXES = {"ix_executions_created", "ix_executions_finished", "ix_ai_usage_at"}


async def valid_indexes(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid IN ('executions'::regclass, 'ai_usage'::regclass) AND i.indisvalid"
        )
    finally:
        await conn.close()
    return {r["relname"] for r in rows}


async def test_0015_builds_valid_indexes_the_peak_query_can_use(blank_db: str) -> None:  # noqa: F811
    await upgrade_async(blank_db, "0014")
    assert not INDEXES & await valid_indexes(blank_db)
    await upgrade_async(blank_db, "0015")
    assert INDEXES <= await valid_indexes(blank_db)

    conn = await asyncpg.connect(blank_db)
    try:
        created = await conn.fetchval("SELECT pg_get_indexdef('ix_executions_created'::regclass)")
        assert "INCLUDE (tenant_id, status, started_at, finished_at)" in created
        await conn.execute("SET enable_seqscan = off")  # an empty table: ask what is usable
        plan = await conn.fetch(
            "EXPLAIN SELECT date_trunc('hour', finished_at, 'UTC'), count(*) FROM executions "
            f"WHERE finished_at >= $1 AND finished_at < $2 AND {FINISHED_SQL} GROUP BY 1",
            datetime(2026, 1, 1, tzinfo=UTC),
            datetime(2026, 1, 29, tzinfo=UTC),
        )
    finally:
        await conn.close()
    assert "ix_executions_finished" in "\n".join(r[0] for r in plan), plan

    await asyncio.to_thread(command.downgrade, alembic_config(blank_db), "0014")
    assert not INDEXES & await valid_indexes(blank_db)
    await upgrade_async(blank_db, "head")
    assert INDEXES <= await valid_indexes(blank_db)
