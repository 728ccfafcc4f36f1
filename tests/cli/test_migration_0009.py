"""Migration 0009 (key expiry, creator, tenant suspension, platform keys) upgrades a database
holding keys from 0008, downgrades back without losing them, and upgrades again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from alembic import command
from app.migrate import alembic_config, upgrade_async
from tests.conftest import Services


@pytest.fixture
async def blank_db(services: Services) -> AsyncIterator[str]:
    name = f"wfs_mig_{uuid.uuid4().hex[:10]}"
    plain = services.admin_db_url.replace("+asyncpg", "")
    conn = await asyncpg.connect(plain)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    base, _, query = plain.partition("?")
    yield base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    conn = await asyncpg.connect(plain)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def columns(conn: asyncpg.Connection, table: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = $1", table
    )
    return {r["column_name"] for r in rows}


async def test_0009_upgrades_and_downgrades_keeping_keys(blank_db: str) -> None:
    await upgrade_async(blank_db, "0008")
    conn = await asyncpg.connect(blank_db)
    try:
        tenant_id, key_id = uuid.uuid4(), uuid.uuid4()
        await conn.execute(
            "INSERT INTO tenants (id, name, tier, created_at) VALUES ($1, 'old', 'pro', now())",
            tenant_id,
        )
        await conn.execute(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, role, created_at) "
            "VALUES ($1, $2, 'k', 'abcd1234', $3, 'admin', now())",
            key_id,
            tenant_id,
            "0" * 64,
        )

        await upgrade_async(blank_db, "0009")
        assert {"expires_at", "created_by"} <= await columns(conn, "api_keys")
        assert "suspended_at" in await columns(conn, "tenants")
        assert {"name", "prefix", "key_hash", "revoked_at", "last_used_at"} <= await columns(
            conn, "platform_keys"
        )
        old = await conn.fetchrow(
            "SELECT expires_at, created_by FROM api_keys WHERE id = $1", key_id
        )
        assert tuple(old) == (None, None)  # an existing key keeps working, as before
        assert (
            await conn.fetchval("SELECT suspended_at FROM tenants WHERE id = $1", tenant_id) is None
        )
        with pytest.raises(asyncpg.UniqueViolationError):  # hashes are unique, as for tenant keys
            for _ in range(2):
                await conn.execute(
                    "INSERT INTO platform_keys (id, name, prefix, key_hash, created_at) "
                    "VALUES (gen_random_uuid(), 'p', 'p', 'same', now())"
                )

        await asyncio.to_thread(command.downgrade, alembic_config(blank_db), "0008")
        assert not {"expires_at", "created_by"} & await columns(conn, "api_keys")
        assert "suspended_at" not in await columns(conn, "tenants")
        assert await columns(conn, "platform_keys") == set()
        assert await conn.fetchval("SELECT count(*) FROM api_keys WHERE id = $1", key_id) == 1

        await upgrade_async(blank_db)
        assert "expires_at" in await columns(conn, "api_keys")
    finally:
        await conn.close()
