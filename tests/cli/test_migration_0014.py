"""Migration 0014 (template actors) upgrades a database holding templates made through API
keys, filling the new columns from the key ids; downgrades back; upgrades again."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from alembic import command
from app.migrate import alembic_config, upgrade_async
from tests.cli.test_migration_0009 import blank_db, columns  # noqa: F401 (fixture)

ACTORS = {
    "templates": "created_by",
    "template_versions": "published_by",
    "template_shares": "granted_by",
    "template_acceptances": "accepted_by",
}


async def seed(url: str) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """At 0013: a template of tenant `pub` made and published with its key, shared with
    tenant `use` by that key and accepted by `use`'s key; and a second template whose creator
    is unknown (no key id). Returns (template id, publisher's key id, consumer's key id)."""
    pub, use, template, unknown = (uuid.uuid4() for _ in range(4))
    pub_key, use_key = uuid.uuid4(), uuid.uuid4()
    conn = await asyncpg.connect(url)
    try:
        for tenant, key, name in ((pub, pub_key, "pub"), (use, use_key, "use")):
            await conn.execute(
                "INSERT INTO tenants (id, name, tier, created_at) VALUES ($1, $2, 'pro', now())",
                tenant,
                name,
            )
            await conn.execute(
                "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, role, created_at) "
                "VALUES ($1, $2, 'k', $3, $4, 'admin', now())",
                key,
                tenant,
                key.hex[:8],
                key.hex * 2,
            )
        for template_id, key_id, name in ((template, pub_key, "a"), (unknown, None, "b")):
            await conn.execute(
                "INSERT INTO templates (id, tenant_id, name, title, description, tags, "
                "visibility, latest_version, created_by_key_id, created_at, updated_at) "
                "VALUES ($1, $2, $3, 't', '', '{}', 'SHARED', 1, $4, now(), now())",
                template_id,
                pub,
                name,
                key_id,
            )
        await conn.execute(
            "INSERT INTO template_versions (id, template_id, version, status, spec, "
            "published_by_key_id, created_at) VALUES ($1, $2, 1, 'PUBLISHED', '{}', $3, now())",
            uuid.uuid4(),
            template,
            pub_key,
        )
        await conn.execute(
            "INSERT INTO template_shares (template_id, tenant_id, granted_at, granted_by_key_id) "
            "VALUES ($1, $2, now(), $3)",
            template,
            use,
            pub_key,
        )
        await conn.execute(
            "INSERT INTO template_acceptances (tenant_id, template_id, version, accepted_at, "
            "accepted_by_key_id) VALUES ($1, $2, 1, now(), $3)",
            use,
            template,
            use_key,
        )
    finally:
        await conn.close()
    return template, pub_key, use_key


async def actors(url: str) -> dict[str, list[str | None]]:
    """Each table's actor column over its rows, ordered by the key id column (NULLs last)."""
    conn = await asyncpg.connect(url)
    try:
        return {
            table: [
                r[0]
                for r in await conn.fetch(
                    f"SELECT {column} FROM {table} ORDER BY {column}_key_id NULLS LAST"
                )
            ]
            for table, column in ACTORS.items()
        }
    finally:
        await conn.close()


async def test_0014_backfills_the_actors_from_key_ids_and_downgrades(
    blank_db: str,  # noqa: F811
) -> None:
    await upgrade_async(blank_db, "0013")
    template, pub_key, use_key = await seed(blank_db)
    await upgrade_async(blank_db, "0014")
    assert await actors(blank_db) == {
        "templates": [f"key:{pub_key}", None],  # the template made without a key stays unknown
        "template_versions": [f"key:{pub_key}"],
        "template_shares": [f"key:{pub_key}"],
        "template_acceptances": [f"key:{use_key}"],
    }

    await asyncio.to_thread(command.downgrade, alembic_config(blank_db), "0013")
    conn = await asyncpg.connect(blank_db)
    try:
        for table, column in ACTORS.items():
            assert column not in await columns(conn, table)
            assert f"{column}_key_id" in await columns(conn, table)  # the key ids stay
        assert (
            await conn.fetchval("SELECT created_by_key_id FROM templates WHERE id = $1", template)
            == pub_key
        )
    finally:
        await conn.close()

    await upgrade_async(blank_db, "head")
    assert (await actors(blank_db))["template_acceptances"] == [f"key:{use_key}"]
