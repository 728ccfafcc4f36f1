"""Migration 0010 (indexes of filtered execution lists) builds its indexes CONCURRENTLY, outside
Alembic's transaction, and downgrades and upgrades again."""

from __future__ import annotations

import asyncio

import asyncpg

from alembic import command
from app.migrate import alembic_config, upgrade_async
from tests.cli.test_migration_0009 import blank_db  # noqa: F401 (fixture)

INDEXES = {"ix_executions_tenant_template_created", "ix_executions_params"}


async def valid_indexes(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = 'executions'::regclass AND i.indisvalid"
        )
    finally:
        await conn.close()
    return {r["relname"] for r in rows}


async def test_0010_builds_valid_indexes_and_downgrades(blank_db: str) -> None:  # noqa: F811
    await upgrade_async(blank_db, "0009")
    assert not INDEXES & await valid_indexes(blank_db)
    await upgrade_async(blank_db, "0010")
    assert INDEXES <= await valid_indexes(blank_db)
    await asyncio.to_thread(command.downgrade, alembic_config(blank_db), "0009")
    assert not INDEXES & await valid_indexes(blank_db)
    await upgrade_async(blank_db, "head")
    assert INDEXES <= await valid_indexes(blank_db)


async def test_0010_rebuilds_an_index_a_failed_build_left_invalid(blank_db: str) -> None:  # noqa: F811
    """A failed CREATE INDEX CONCURRENTLY leaves an INVALID index under the name; before, a rerun
    (if_not_exists) kept it, and the filters went without their index for good."""
    await upgrade_async(blank_db, "0009")
    conn = await asyncpg.connect(blank_db)
    try:  # what a cancelled build leaves: the name taken, the index invalid (and not ours)
        for name in INDEXES:
            await conn.execute(f"CREATE INDEX {name} ON executions (status)")
            await conn.execute(
                f"UPDATE pg_index SET indisvalid = false WHERE indexrelid = '{name}'::regclass"
            )
    finally:
        await conn.close()
    assert not INDEXES & await valid_indexes(blank_db)
    await upgrade_async(blank_db, "0010")
    assert INDEXES <= await valid_indexes(blank_db)
    conn = await asyncpg.connect(blank_db)
    try:
        params = await conn.fetchval("SELECT pg_get_indexdef('ix_executions_params'::regclass)")
    finally:
        await conn.close()
    assert "gin (params jsonb_path_ops)" in params
