"""Migration 0026 (template_versions.sla only for blocks that pass SlaSpec's bounds) regenerates
the column of existing versions (a block failing today's bounds becomes NULL, a valid one
stays, specs are kept), rebuilds ix_template_versions_sla CONCURRENTLY (valid), completes when
run again after stopping part way, downgrades (every block read again) and upgrades again,
and at head leaves the expression app/models/template.py declares (SLA_SQL)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg

from alembic import command
from app.migrate import alembic_config, upgrade_async
from app.models.template import SLA_SQL
from tests.cli.test_migration_0009 import blank_db  # noqa: F401 (fixture)

VALID = {"max_duration_seconds": 60.0, "min_success_rate": None, "window_seconds": 86400}
# Each fails today's bounds: a window under 300 s; min_runs under 1 (a duration target with
# it); no target at all; a key SlaSpec does not know.
INVALID = [
    {"max_duration_seconds": 60.0, "min_success_rate": None, "window_seconds": 10, "min_runs": 10},
    {"max_duration_seconds": 60.0, "min_runs": 0},
    {"max_duration_seconds": None, "min_success_rate": None},
    {"max_duration_seconds": 60.0, "max_queue_seconds": 5},
]
SPECS: list[dict[str, Any]] = [{}, {"sla": None}, {"sla": VALID}, *({"sla": b} for b in INVALID)]
# A generated column's expression as PostgreSQL deparses it.
EXPRESSION = (
    "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a "
    "ON a.attrelid = d.adrelid AND a.attnum = d.adnum "
    "WHERE d.adrelid = to_regclass($1) AND a.attname = 'sla'"
)
INDEX = (
    "SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i "
    "WHERE i.indexrelid = to_regclass('ix_template_versions_sla')"
)


async def slas(conn: asyncpg.Connection) -> list[Any]:
    rows = await conn.fetch("SELECT sla FROM template_versions ORDER BY version")
    return [None if r["sla"] is None else json.loads(r["sla"]) for r in rows]


async def index_valid(conn: asyncpg.Connection) -> bool | None:
    row = await conn.fetchrow(INDEX)
    if row is None:
        return None
    assert row[1].endswith("(template_id) WHERE (sla IS NOT NULL)"), row[1]
    return bool(row[0])


async def test_0026_regenerates_sla_for_valid_blocks_only_and_downgrades(
    blank_db: str,  # noqa: F811
) -> None:
    await upgrade_async(blank_db, "0025")
    template = uuid.uuid4()
    conn = await asyncpg.connect(blank_db)
    try:
        await conn.execute(
            "INSERT INTO templates (id, name, title, description, tags, visibility, "
            "latest_version, created_at, updated_at) "
            "VALUES ($1, 'a', 't', '', '{}', 'PUBLIC', $2, now(), now())",
            template,
            len(SPECS),
        )
        for version, spec in enumerate(SPECS, start=1):
            await conn.execute(
                "INSERT INTO template_versions (id, template_id, version, status, spec, "
                "created_at) VALUES ($1, $2, $3, 'PUBLISHED', $4::jsonb, now())",
                uuid.uuid4(),
                template,
                version,
                json.dumps(spec),
            )
        # Before: SQL reads every block, valid or not.
        assert await slas(conn) == [None, None, VALID, *INVALID]
        specs = await conn.fetch("SELECT id, spec FROM template_versions ORDER BY version")
    finally:
        await conn.close()

    await upgrade_async(blank_db, "0026")
    conn = await asyncpg.connect(blank_db)
    try:
        assert await slas(conn) == [None, None, VALID, None, None, None, None]
        assert await conn.fetch("SELECT id, spec FROM template_versions ORDER BY version") == specs
        assert await index_valid(conn) is True
        # The new column has statistics (ANALYZE): one of seven versions has an sla.
        null_frac = await conn.fetchval(
            "SELECT null_frac FROM pg_stats WHERE tablename = 'template_versions' "
            "AND attname = 'sla'"
        )
        assert null_frac is not None and abs(null_frac - 6 / 7) < 0.01, null_frac
        # A later write is judged on its own: a block made valid gets its column back.
        await conn.execute(
            "UPDATE template_versions SET spec = jsonb_set(spec, '{sla,window_seconds}', "
            "'300') WHERE version = 4"
        )
        assert (await slas(conn))[3] == {**INVALID[0], "window_seconds": 300}
    finally:
        await conn.close()

    # Steps safe to run again: an upgrade that stopped after step 1 (committed) or in step 2
    # (an INVALID index left behind) completes when run again.
    await asyncio.to_thread(command.stamp, alembic_config(blank_db), "0025")
    conn = await asyncpg.connect(blank_db)
    try:
        await conn.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = "
            "to_regclass('ix_template_versions_sla')"
        )
    finally:
        await conn.close()
    await upgrade_async(blank_db, "0026")
    conn = await asyncpg.connect(blank_db)
    try:
        assert await index_valid(conn) is True
        assert (await slas(conn))[4:] == [None, None, None]
    finally:
        await conn.close()

    await asyncio.to_thread(command.downgrade, alembic_config(blank_db), "0025")
    conn = await asyncpg.connect(blank_db)
    try:
        assert await slas(conn) == [
            None,
            None,
            VALID,
            {**INVALID[0], "window_seconds": 300},
            *INVALID[1:],
        ]
        assert await index_valid(conn) is True
        assert await conn.fetchval(EXPRESSION, "template_versions") == (
            "NULLIF((spec -> 'sla'::text), 'null'::jsonb)"
        )
    finally:
        await conn.close()

    # At head, the database's expression is the model's: a scratch table generated with
    # SLA_SQL deparses to the same text (the last migration to set the column, 0026 or a
    # later one that changes a bound, must leave it so).
    await upgrade_async(blank_db, "head")
    conn = await asyncpg.connect(blank_db)
    try:
        await conn.execute(
            "CREATE TEMP TABLE sla_model (spec JSONB, "
            f"sla JSONB GENERATED ALWAYS AS ({SLA_SQL}) STORED)"
        )
        model = await conn.fetchval(EXPRESSION, "sla_model")
        assert model is not None and "min_runs" in model
        assert await conn.fetchval(EXPRESSION, "template_versions") == model
    finally:
        await conn.close()
