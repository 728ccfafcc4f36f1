"""Migration 0013 (webhook delivery indexes, webhook secrets encrypted at rest) upgrades,
downgrades and upgrades again."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from cryptography.fernet import Fernet

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


async def stored_secret(url: str, webhook_id: uuid.UUID) -> str:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT secret FROM webhooks WHERE id = $1", webhook_id)
    finally:
        await conn.close()


async def test_0013_encrypts_the_secrets_stored_in_clear_and_back(
    blank_db: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A webhook made before 0013 has its secret in clear; after it, the column holds a Fernet
    token that WEBHOOK_SECRET_KEY opens to the same secret; downgrading puts it back."""
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("WEBHOOK_SECRET_KEY", key)
    await upgrade_async(blank_db, "0012")
    tenant_id, webhook_id, secret = uuid.uuid4(), uuid.uuid4(), "whsec_" + "A" * 43 + "="
    conn = await asyncpg.connect(blank_db)
    try:
        await conn.execute(
            "INSERT INTO tenants (id, name, tier, created_at) VALUES ($1, 'old', 'pro', now())",
            tenant_id,
        )
        await conn.execute(
            "INSERT INTO webhooks (id, tenant_id, url, events, secret, enabled, last_seq, "
            "created_at) VALUES ($1, $2, 'https://example.com/h', '{execution.failed}', $3, "
            "true, 0, now())",
            webhook_id,
            tenant_id,
            secret,
        )
    finally:
        await conn.close()
    await upgrade_async(blank_db, "0013")
    sealed = await stored_secret(blank_db, webhook_id)
    assert secret not in sealed and Fernet(key).decrypt(sealed.encode()).decode() == secret
    await asyncio.to_thread(command.downgrade, alembic_config(blank_db), "0012")
    assert await stored_secret(blank_db, webhook_id) == secret
