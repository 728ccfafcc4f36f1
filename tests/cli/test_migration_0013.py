"""Migration 0013 (webhook delivery indexes) upgrades, downgrades and upgrades again."""

from __future__ import annotations

import asyncio

import asyncpg

from alembic import command
from app.migrate import alembic_config, upgrade_async
from tests.cli.test_migration_0009 import blank_db  # noqa: F401 (fixture)

INDEXES = {
    "ix_webhook_deliveries_tenant_id",
    "ix_webhook_deliveries_finished",
    "ix_webhook_deliveries_redelivery_of",
    "ix_webhook_deliveries_pending",
}


async def index_columns(url: str) -> dict[str, str]:
    """Index name -> its definition, of webhook_deliveries."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'webhook_deliveries'"
        )
    finally:
        await conn.close()
    return {r["indexname"]: r["indexdef"] for r in rows}


async def test_0013_adds_the_indexes_and_downgrades(blank_db: str) -> None:  # noqa: F811
    await upgrade_async(blank_db, "0012")
    before = await index_columns(blank_db)
    assert not INDEXES & before.keys()
    await upgrade_async(blank_db, "0013")
    after = await index_columns(blank_db)
    assert INDEXES <= after.keys()
    assert "(tenant_id, created_at, id)" in after["ix_webhook_deliveries_unstarted"]
    await asyncio.to_thread(command.downgrade, alembic_config(blank_db), "0012")
    assert await index_columns(blank_db) == before
    await upgrade_async(blank_db, "head")
    assert INDEXES <= (await index_columns(blank_db)).keys()
