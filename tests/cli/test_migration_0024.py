"""Migration 0024 (sla_breaches started_at, for the retention purge) builds its index
CONCURRENTLY and valid, the purge's statement can use it, and it downgrades and upgrades again."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
from alembic.script import ScriptDirectory

from alembic import command
from app.migrate import alembic_config, upgrade_async
from tests.cli.test_migration_0009 import blank_db  # noqa: F401 (fixture)

INDEX = "ix_sla_breaches_started_at"
PURGE = (
    "EXPLAIN DELETE FROM sla_breaches WHERE id IN (SELECT id FROM sla_breaches "
    "WHERE started_at < $1 AND (kind = 'DURATION' OR ended_at < $1) LIMIT 5000)"
)


async def index_valid(url: str) -> bool | None:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(  # type: ignore[no-any-return]
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)", INDEX
        )
    finally:
        await conn.close()


async def test_0024_builds_the_retention_index_and_downgrades(blank_db: str) -> None:  # noqa: F811
    before = ScriptDirectory.from_config(alembic_config(blank_db)).get_revision("0024")
    assert before is not None and isinstance(before.down_revision, str)
    await upgrade_async(blank_db, before.down_revision)
    assert await index_valid(blank_db) is None
    await upgrade_async(blank_db, "0024")
    assert await index_valid(blank_db) is True

    conn = await asyncpg.connect(blank_db)
    try:
        await conn.execute("SET enable_seqscan = off")  # an empty table: ask what is usable
        plan = await conn.fetch(PURGE, datetime(2025, 1, 1, tzinfo=UTC))
    finally:
        await conn.close()
    assert INDEX in "\n".join(r[0] for r in plan), plan

    await asyncio.to_thread(command.downgrade, alembic_config(blank_db), before.down_revision)
    assert await index_valid(blank_db) is None
    await upgrade_async(blank_db, "head")
    assert await index_valid(blank_db) is True
