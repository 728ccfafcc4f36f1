"""Migration 0023 (sla_rollup, sla_rollup_state) creates new, empty tables only: executions
keeps its file (no rewrite); it downgrades and upgrades again."""

from __future__ import annotations

import asyncio

import asyncpg

from alembic import command
from app.migrate import alembic_config, upgrade_async
from tests.cli.test_migration_0009 import blank_db, columns  # noqa: F401 (fixture)

FILE = "SELECT relfilenode FROM pg_class WHERE oid = 'executions'::regclass"
TABLES = ("sla_rollup", "sla_rollup_state")


async def test_0023_adds_the_sla_rollup_tables_and_downgrades(
    blank_db: str,  # noqa: F811
) -> None:
    await upgrade_async(blank_db, "0022")
    conn = await asyncpg.connect(blank_db)
    try:
        before = await conn.fetchval(FILE)
        assert not await columns(conn, "sla_rollup")
    finally:
        await conn.close()
    await upgrade_async(blank_db, "0023")
    conn = await asyncpg.connect(blank_db)
    try:
        assert await conn.fetchval(FILE) == before  # executions untouched
        assert {"tenant_id", "day", "template_id", "template_version_id", "target"} <= (
            await columns(conn, "sla_rollup")
        )
        assert await columns(conn, "sla_rollup_state") == {
            "id",
            "complete_until",
            "refreshed_from",
        }
        indexes = await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE tablename = $1", TABLES[0]
        )
        assert {r["indexname"] for r in indexes} == {
            "pk_sla_rollup",
            "ix_sla_rollup_tenant_template_day",
        }
    finally:
        await conn.close()
    await asyncio.to_thread(command.downgrade, alembic_config(blank_db), "0022")
    conn = await asyncpg.connect(blank_db)
    try:
        for table in TABLES:
            assert not await columns(conn, table)
    finally:
        await conn.close()
    await upgrade_async(blank_db, "0023")
