"""Migration 0020 (ai_usage.attempts) adds a nullable JSONB column without rewriting the table
(its file stays the same: safe on a large ai_usage), and downgrades and upgrades again."""

from __future__ import annotations

import asyncio

import asyncpg

from alembic import command
from app.migrate import alembic_config, upgrade_async
from tests.cli.test_migration_0009 import blank_db, columns  # noqa: F401 (fixture)

FILE = "SELECT relfilenode FROM pg_class WHERE oid = 'ai_usage'::regclass"


async def test_0020_adds_attempts_without_a_rewrite_and_downgrades(
    blank_db: str,  # noqa: F811
) -> None:
    await upgrade_async(blank_db, "0019")
    conn = await asyncpg.connect(blank_db)
    try:
        before = await conn.fetchval(FILE)
        assert "attempts" not in await columns(conn, "ai_usage")
    finally:
        await conn.close()
    await upgrade_async(blank_db, "0020")
    conn = await asyncpg.connect(blank_db)
    try:
        assert await conn.fetchval(FILE) == before  # no table rewrite
        kind = await conn.fetchrow(
            "SELECT data_type, is_nullable, column_default FROM information_schema.columns "
            "WHERE table_name = 'ai_usage' AND column_name = 'attempts'"
        )
        assert tuple(kind) == ("jsonb", "YES", None)
    finally:
        await conn.close()
    await asyncio.to_thread(command.downgrade, alembic_config(blank_db), "0019")
    conn = await asyncpg.connect(blank_db)
    try:
        assert "attempts" not in await columns(conn, "ai_usage")
    finally:
        await conn.close()
    await upgrade_async(blank_db, "0020")
