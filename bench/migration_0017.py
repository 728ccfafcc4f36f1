"""Migration 0017 on a database holding N ai_usage rows (1,000,000 by default) while a writer
inserts AI usage rows one by one, as the gateway does: how long the upgrade takes, how long
the writer's inserts waited (the trigger's transaction holds them; the batched backfill after it
must not), and what the one-statement backfill that 0017 used to run inside the trigger's
transaction costs on the same rows (the time every AI usage insert would have waited).

Standalone: a fresh database on DATABASE_URL's server, migrated to 0016, rows made by SQL
(`INSERT ... SELECT` over generate_series: 4 tenants, 6 tasks, 90 days), VACUUM ANALYZE, then
the upgrade to 0017 beside the writer; dropped at the end. Afterwards the rollup is checked:
its calls add up to the rows of ai_usage (every row counted once).

    DATABASE_URL=postgresql://... .venv/bin/python -m bench.migration_0017 1000000
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import platform
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from app.migrate import PROJECT_ROOT, upgrade_async
from bench.ai_gateway import ADMIN_DB
from bench.harness import percentile

TENANTS = 4
GENERATE = """
INSERT INTO ai_usage (tenant_id, task, provider, model, input_tokens, output_tokens, cost_usd,
    saved_usd, latency_ms, cached, fallback_reason, outcome, at)
SELECT ($1::uuid[])[1 + i % array_length($1::uuid[], 1)],
    (ARRAY['generate_text', 'classify_content', 'summarize', 'extract_entities',
           'personalize_content', 'optimize_timing'])[1 + i % 6],
    'openai', CASE WHEN i % 10 = 3 THEN 'gpt-6-luna' ELSE 'gpt-6.2-sol' END, 1000, 50,
    0.003, 0, 800, i % 5 = 1, NULL, CASE WHEN i % 5 = 1 THEN 'CACHED' ELSE 'OK' END,
    $3::timestamptz - (i % 129600) * interval '1 minute'
FROM generate_series(1, $2) AS i
"""
WRITE = """
INSERT INTO ai_usage (tenant_id, task, provider, model, input_tokens, output_tokens, cost_usd,
    saved_usd, latency_ms, cached, fallback_reason, outcome, at)
VALUES ($1, 'summarize', 'openai', 'gpt-6.2-sol', 1000, 50, 0.003, 0, 800, false, NULL, 'OK', now())
"""


def migration_0017() -> Any:
    """The revision's module (its file name is no Python identifier)."""
    path = Path(PROJECT_ROOT) / "alembic" / "versions" / "0017_recs.py"
    spec = importlib.util.spec_from_file_location("migration_0017", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@asynccontextmanager
async def database_at_0016(admin_db: str) -> AsyncIterator[str]:
    name = f"wfs_bench_{uuid.uuid4().hex[:10]}"
    admin = admin_db.replace("+asyncpg", "")
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    base, _, query = admin.partition("?")
    url = base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    try:
        await upgrade_async(url, "0016")
        yield url
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def writer(url: str, tenant: uuid.UUID, stop: asyncio.Event, waits: list[float]) -> None:
    conn = await asyncpg.connect(url)
    try:
        while not stop.is_set():
            t0 = time.perf_counter()
            await conn.execute(WRITE, tenant)
            waits.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.005)
    finally:
        await conn.close()


async def run(size: int = 1_000_000, *, admin_db: str = ADMIN_DB) -> dict:
    """{"scenario", "rows": [one per measure], "notes"}."""
    async with database_at_0016(admin_db) as url:
        conn = await asyncpg.connect(url)
        try:
            tenants = [uuid.uuid4() for _ in range(TENANTS)]
            for i, tenant in enumerate(tenants):
                await conn.execute(
                    "INSERT INTO tenants (id, name, tier, created_at) "
                    "VALUES ($1, $2, 'premium', now())",
                    tenant,
                    f"bench-0017-{i}-{tenant.hex[:6]}",
                )
            t0 = time.monotonic()
            await conn.execute(GENERATE, tenants, size, datetime.now(UTC))
            await conn.execute("VACUUM ANALYZE ai_usage")
            made = time.monotonic() - t0
            # What the old 0017 ran inside the trigger's transaction, timed as a read.
            grouped = migration_0017().GROUPED.format(rows="ai_usage")
            t0 = time.perf_counter()
            await conn.execute(f"SELECT count(*) FROM ({grouped}) g")
            one_statement = time.perf_counter() - t0

            waits_before: list[float] = []
            stop = asyncio.Event()
            baseline = asyncio.create_task(writer(url, tenants[0], stop, waits_before))
            await asyncio.sleep(2)
            stop.set()
            await baseline

            waits: list[float] = []
            stop = asyncio.Event()
            writing = asyncio.create_task(writer(url, tenants[0], stop, waits))
            t0 = time.perf_counter()
            await upgrade_async(url, "0017")
            upgrade = time.perf_counter() - t0
            stop.set()
            await writing
            calls = await conn.fetchval("SELECT sum(calls) FROM ai_usage_daily")
            total = await conn.fetchval("SELECT count(*) FROM ai_usage")
            assert calls == total, (calls, total)
        finally:
            await conn.close()
    rows = [
        {
            "measure": "single-row AI usage insert, before the upgrade (2 s)",
            "inserts": len(waits_before),
            "p50 ms": round(percentile(waits_before, 50), 2),
            "p99 ms": round(percentile(waits_before, 99), 2),
            "max ms": round(max(waits_before), 1),
        },
        {
            "measure": f"the same during the upgrade to 0017 ({upgrade:.1f} s)",
            "inserts": len(waits),
            "p50 ms": round(percentile(waits, 50), 2),
            "p99 ms": round(percentile(waits, 99), 2),
            "max ms": round(max(waits), 1),
        },
        {
            "measure": "the old 0017's one-statement backfill (held every insert)",
            "inserts": "-",
            "p50 ms": "-",
            "p99 ms": "-",
            "max ms": round(one_statement * 1000, 1),
        },
    ]
    notes = [
        f"{size:,} ai_usage rows over 90 days, {TENANTS} tenants, made and analyzed in "
        f"{made:.1f} s; after the upgrade ai_usage_daily's calls add up to all {total:,} rows",
        "the old backfill timed as a read of its GROUP BY (without writing the rollup): a lower "
        "bound of how long its transaction held AI usage inserts",
        f"{os.cpu_count()} cores, Python {platform.python_version()}",
    ]
    return {"scenario": "migration_0017", "rows": rows, "notes": notes}


if __name__ == "__main__":
    from bench.run import table

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    result = asyncio.run(run(size))
    print(table(result["rows"]))
    for note in result["notes"]:
        print(f"  {note}")
