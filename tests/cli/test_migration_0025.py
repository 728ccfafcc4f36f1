"""Migration 0025 (sla_rollup_targets) creates a new, empty table only (sla_rollup keeps its
file); its unique index treats NULL targets as equal; it downgrades and upgrades again."""

from __future__ import annotations

import asyncio

import asyncpg

from alembic import command
from app.migrate import alembic_config, upgrade_async
from tests.cli.test_migration_0009 import blank_db, columns  # noqa: F401 (fixture)

FILE = "SELECT relfilenode FROM pg_class WHERE oid = 'sla_rollup'::regclass"


async def test_0025_adds_the_sla_rollup_targets_table_and_downgrades(
    blank_db: str,  # noqa: F811
) -> None:
    await upgrade_async(blank_db, "0024")
    conn = await asyncpg.connect(blank_db)
    try:
        before = await conn.fetchval(FILE)
        assert not await columns(conn, "sla_rollup_targets")
    finally:
        await conn.close()
    await upgrade_async(blank_db, "0025")
    conn = await asyncpg.connect(blank_db)
    try:
        assert await conn.fetchval(FILE) == before
        assert await columns(conn, "sla_rollup_targets") == {
            "id",
            "tenant_id",
            "template_id",
            "template_version_id",
            "target",
        }
        indexdef = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ux_sla_rollup_targets'"
        )
        assert "UNIQUE" in indexdef and "NULLS NOT DISTINCT" in indexdef, indexdef
    finally:
        await conn.close()
    await asyncio.to_thread(command.downgrade, alembic_config(blank_db), "0024")
    conn = await asyncpg.connect(blank_db)
    try:
        assert not await columns(conn, "sla_rollup_targets")
    finally:
        await conn.close()
    await upgrade_async(blank_db, "0025")
