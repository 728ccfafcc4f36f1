"""Migration 0016 (SLAs) upgrades existing versions (their `sla` column is computed from the
stored spec), allows SLA_BREACH notifications (the check validated outside the transaction),
builds its indexes CONCURRENTLY (valid, the FK's plain one too), completes when run again after
stopping part way, and downgrades and upgrades again."""

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
        assert await built(conn) == {
            "ix_template_versions_sla": True,
            "ix_sla_breaches_execution_id": True,
        }
        # The new type check was added NOT VALID, then validated outside the transaction.
        assert await conn.fetchval(VALIDATED) is True
        # The cascade from executions finds breaches by the plain index (the unique one is
        # partial, kind = 'DURATION').
        definition = await conn.fetchval(
            "SELECT pg_get_indexdef(to_regclass('ix_sla_breaches_execution_id'))"
        )
        assert definition.endswith("(execution_id)"), definition
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

    # Steps safe to run again: an upgrade that stopped after step 1 (committed) or in step 2
    # (an INVALID index left behind) completes when run again.
    await asyncio.to_thread(command.stamp, alembic_config(blank_db), "0015")
    conn = await asyncpg.connect(blank_db)
    try:
        await conn.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = "
            "to_regclass('ix_template_versions_sla')"
        )
    finally:
        await conn.close()
    await upgrade_async(blank_db, "0016")
    conn = await asyncpg.connect(blank_db)
    try:
        assert await built(conn) == {
            "ix_template_versions_sla": True,
            "ix_sla_breaches_execution_id": True,
        }
    finally:
        await conn.close()

    await asyncio.to_thread(command.downgrade, alembic_config(blank_db), "0015")
    conn = await asyncpg.connect(blank_db)
    try:
        assert "sla" not in await columns(conn, "template_versions")
        assert await conn.fetchval("SELECT count(*) FROM notifications") == 0
        assert await conn.fetchval("SELECT to_regclass('sla_breaches')") is None
        assert await built(conn) == {}
        assert await conn.fetchval(VALIDATED) is True
    finally:
        await conn.close()
    await upgrade_async(blank_db, "head")


VALIDATED = (
    "SELECT convalidated FROM pg_constraint WHERE conname = 'ck_notifications_type' "
    "AND conrelid = 'notifications'::regclass"
)


async def built(conn: asyncpg.Connection) -> dict[str, bool]:
    """0016's CONCURRENTLY built indexes that exist -> whether they are valid."""
    rows = await conn.fetch(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname IN ('ix_template_versions_sla', 'ix_sla_breaches_execution_id')"
    )
    return {r["relname"]: r["indisvalid"] for r in rows}
