"""Migration 0019 (executions.tier, the rollup keyed by tier, template_cost_estimates): adds
the columns without touching the rows (executions keep NULL, rolled-up rows '' = "the
tenant's tier now"), swaps the rollup's primary key for one with tier built CONCURRENTLY,
downgrades (emptying the rollup for its next refresh) and upgrades again."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date

import asyncpg

from alembic import command
from app.migrate import alembic_config, upgrade_async
from tests.cli.test_migration_0009 import blank_db, columns  # noqa: F401 (fixture)

ALL = uuid.UUID(int=0)


async def primary_key(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'execution_rollup'::regclass "
        "AND i.indisprimary AND i.indisvalid ORDER BY array_position(i.indkey, a.attnum)"
    )
    return [r["attname"] for r in rows]


async def test_0019_adds_the_tier_and_keeps_rolled_up_rows(blank_db: str) -> None:  # noqa: F811
    await upgrade_async(blank_db, "0018")
    conn = await asyncpg.connect(blank_db)
    try:
        tenant = uuid.uuid4()
        await conn.execute(
            "INSERT INTO tenants (id, name, tier, created_at) VALUES ($1, 'm19', 'pro', now())",
            tenant,
        )
        await conn.execute(
            "INSERT INTO execution_rollup VALUES ($1, $2, $3, 'COMPLETED', 7, 3, 1, 0.5)",
            tenant,
            date(2026, 11, 1),
            ALL,
        )
    finally:
        await conn.close()

    await upgrade_async(blank_db, "0019")
    conn = await asyncpg.connect(blank_db)
    try:
        assert "tier" in await columns(conn, "executions")
        assert await primary_key(conn) == [
            *("tenant_id", "day", "template_id", "status", "duration_bucket", "tier")
        ]
        row = await conn.fetchrow("SELECT runs, tier FROM execution_rollup")
        assert (row["runs"], row["tier"]) == (3, "")  # kept: counted at the tenant's tier
        # A day's runs of two tiers are two rows now.
        await conn.execute(
            "INSERT INTO execution_rollup VALUES ($1, $2, $3, 'COMPLETED', 7, 2, 0, 0, 'free')",
            tenant,
            date(2026, 11, 1),
            ALL,
        )
        assert {"template_id", "tier", "tenant_id", "runs"} <= await columns(
            conn, "template_cost_estimates"
        )
    finally:
        await conn.close()

    await asyncio.to_thread(command.downgrade, alembic_config(blank_db), "0018")
    conn = await asyncpg.connect(blank_db)
    try:
        assert "tier" not in await columns(conn, "executions")
        assert await primary_key(conn) == [
            *("tenant_id", "day", "template_id", "status", "duration_bucket")
        ]
        # Emptied, state included: the next refresh rolls every day up again.
        assert await conn.fetchval("SELECT count(*) FROM execution_rollup") == 0
    finally:
        await conn.close()
    await upgrade_async(blank_db, "head")
