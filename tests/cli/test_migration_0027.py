"""Migration 0027 (analytics_rollup_state.estimates_from) adds the column without rewriting the
table, backfills it from refreshed_from (the moment the estimates then described), downgrades
and upgrades again."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import asyncpg

from alembic import command
from app.migrate import alembic_config, upgrade_async
from tests.cli.test_migration_0009 import blank_db, columns  # noqa: F401 (fixture)

FILE = "SELECT relfilenode FROM pg_class WHERE oid = 'analytics_rollup_state'::regclass"
REFRESHED = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)


async def test_0027_adds_estimates_from_backfilled_and_downgrades(
    blank_db: str,  # noqa: F811
) -> None:
    await upgrade_async(blank_db, "0026")
    conn = await asyncpg.connect(blank_db)
    try:
        await conn.execute(
            "INSERT INTO analytics_rollup_state (id, complete_until, refreshed_from) "
            "VALUES (1, $1, $2)",
            date(2026, 12, 1),
            REFRESHED,
        )
        before = await conn.fetchval(FILE)
        assert "estimates_from" not in await columns(conn, "analytics_rollup_state")
    finally:
        await conn.close()
    await upgrade_async(blank_db, "0027")
    conn = await asyncpg.connect(blank_db)
    try:
        assert await conn.fetchval(FILE) == before  # no rewrite
        assert await conn.fetchval("SELECT estimates_from FROM analytics_rollup_state") == (
            REFRESHED
        )
    finally:
        await conn.close()
    await asyncio.to_thread(command.downgrade, alembic_config(blank_db), "0026")
    conn = await asyncpg.connect(blank_db)
    try:
        assert "estimates_from" not in await columns(conn, "analytics_rollup_state")
    finally:
        await conn.close()
    await upgrade_async(blank_db, "0027")
    conn = await asyncpg.connect(blank_db)
    try:
        assert await conn.fetchval("SELECT estimates_from FROM analytics_rollup_state") == (
            REFRESHED
        )
    finally:
        await conn.close()
