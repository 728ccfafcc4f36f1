"""Migration 0016 (SLAs) upgrades existing versions (their `sla` column is computed from the
stored spec), allows SLA_BREACH notifications, and downgrades and upgrades again."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg

from alembic import command
from app.migrate import alembic_config, upgrade_async
from tests.cli.test_migration_0009 import blank_db, columns  # noqa: F401 (fixture)

SLA = {"max_duration_seconds": 60}


async def test_0016_computes_existing_versions_slas_and_downgrades(
    blank_db: str,  # noqa: F811
) -> None:
    await upgrade_async(blank_db, "0015")
    template = uuid.uuid4()
    conn = await asyncpg.connect(blank_db)
    try:
        await conn.execute(
            "INSERT INTO templates (id, name, title, description, tags, visibility, "
            "latest_version, created_at, updated_at) "
            "VALUES ($1, 'a', 't', '', '{}', 'PUBLIC', 3, now(), now())",
            template,
        )
        for version, spec in ((1, {}), (2, {"sla": None}), (3, {"sla": SLA})):
            await conn.execute(
                "INSERT INTO template_versions (id, template_id, version, status, spec, "
                "created_at) VALUES ($1, $2, $3, 'PUBLISHED', $4::jsonb, now())",
                uuid.uuid4(),
                template,
                version,
                json.dumps(spec),
            )
    finally:
        await conn.close()

    await upgrade_async(blank_db, "0016")
    conn = await asyncpg.connect(blank_db)
    try:
        slas = await conn.fetch("SELECT sla FROM template_versions ORDER BY version")
        assert [None if r["sla"] is None else json.loads(r["sla"]) for r in slas] == [
            None,
            None,  # a spec dumped without a block has JSON null: SQL NULL here
            SLA,
        ]
        tenant = uuid.uuid4()
        await conn.execute(
            "INSERT INTO tenants (id, name, tier, created_at) VALUES ($1, 't', 'pro', now())",
            tenant,
        )
        await conn.execute(
            "INSERT INTO notifications (tenant_id, seq, type, data, created_at) "
            "VALUES ($1, 1, 'SLA_BREACH', '{}', now())",
            tenant,
        )
    finally:
        await conn.close()

    await asyncio.to_thread(command.downgrade, alembic_config(blank_db), "0015")
    conn = await asyncpg.connect(blank_db)
    try:
        assert "sla" not in await columns(conn, "template_versions")
        assert await conn.fetchval("SELECT count(*) FROM notifications") == 0
        assert await conn.fetchval("SELECT to_regclass('sla_breaches')") is None
    finally:
        await conn.close()
    await upgrade_async(blank_db, "head")
