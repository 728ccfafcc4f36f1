"""Template.costEstimate at scale: ForecastService.cost_estimates (the resolver's code: one
read of template_cost_estimates for a page) for one template with N completed runs (300,000
by default) in the last 90 days across 300 premium tenants, each run with one AI usage row,
as the measured tenant and as a tenant with no runs; then a page of 7 such templates (N/7
runs each).

Standalone: a fresh database on DATABASE_URL's server (migrated, dropped at the end), rows made
by SQL (`INSERT ... SELECT` over generate_series), VACUUM ANALYZE. p50/p95 over the repeats, in
milliseconds, and what the estimate says (basedOnRuns rounded when other tenants' runs count).
The estimates are computed by the analytics rollup refresh (as the schedule runs it), timed
once after the load: that is where the walk of each template's runs now goes.

    DATABASE_URL=postgresql://... .venv/bin/python -m bench.cost_estimate 300000
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from app.analytics.forecast import ForecastService
from app.db import make_engine, make_sessionmaker
from bench.ai_gateway import ADMIN_DB, fresh_database
from bench.analytics import refresh_rollup
from bench.harness import percentile

TENANTS = 300
TEMPLATES = 7
REPEATS = 10
RUNS = """
WITH made AS (
    SELECT gen_random_uuid() AS id, ($1::uuid[])[1 + i % array_length($1::uuid[], 1)] AS tenant,
        ($2::uuid[])[1 + i % array_length($2::uuid[], 1)] AS template,
        ($3::uuid[])[1 + i % array_length($3::uuid[], 1)] AS version,
        $5::timestamptz - (i % 129000) * interval '1 minute' AS at, i
    FROM generate_series(1, $4) AS i
), runs AS (
    INSERT INTO executions (id, tenant_id, template_id, template_version_id, params, status,
        progress, workflow_id, last_seq, created_at, started_at, finished_at, updated_at)
    SELECT id, tenant, template, version, '{}', 'COMPLETED', 1, 'bench-' || id, 0, at, at,
        at + interval '30 seconds', at
    FROM made RETURNING id, tenant_id, created_at
)
INSERT INTO ai_usage (tenant_id, execution_id, task, provider, model, input_tokens,
    output_tokens, cost_usd, saved_usd, latency_ms, cached, outcome, at)
SELECT tenant_id, id, 'summarize', 'openai', 'gpt-6.2-sol', 1000, 50,
    0.001 + (hashtext(id::text) & 1023) / 100000.0, 0, 800, false, 'OK', created_at
FROM runs
"""


async def generate(url: str, n: int) -> dict[str, Any]:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        tenants = [uuid.uuid4() for _ in range(TENANTS + 1)]  # the last one runs nothing
        await conn.executemany(
            "INSERT INTO tenants (id, name, tier, created_at) VALUES ($1, $2, 'premium', now())",
            [(t, f"bench-estimate-{t.hex[:10]}") for t in tenants],
        )
        templates, versions = [uuid.uuid4() for _ in range(TEMPLATES + 1)], []
        for i, template in enumerate(templates):
            await conn.execute(
                "INSERT INTO templates (id, name, title, description, tags, visibility, "
                "latest_version, created_at, updated_at) "
                "VALUES ($1, $2, 't', '', '{}', 'PUBLIC', 1, now(), now())",
                template,
                f"bench-estimate-{i}-{template.hex[:6]}",
            )
            versions.append(uuid.uuid4())
            await conn.execute(
                "INSERT INTO template_versions (id, template_id, version, status, spec, "
                "created_at) VALUES ($1, $2, 1, 'PUBLISHED', '{}', now())",
                versions[-1],
                template,
            )
        now = datetime.now(UTC)
        t0 = time.monotonic()
        # The measured template alone, then the page's seven sharing N.
        await conn.execute(RUNS, tenants[:-1], templates[:1], versions[:1], n, now)
        await conn.execute(RUNS, tenants[:-1], templates[1:], versions[1:], n, now)
        await conn.execute("VACUUM ANALYZE executions, ai_usage")
        made = time.monotonic() - t0
    finally:
        await conn.close()
    t0 = time.monotonic()
    await refresh_rollup(url)
    refreshed = time.monotonic() - t0
    return {
        "tenants": tenants,
        "templates": templates,
        "now": now,
        "made": made,
        "refreshed": refreshed,
    }


async def measure(url: str, facts: dict[str, Any], repeats: int) -> list[dict[str, Any]]:
    engine = make_engine(url, pool_size=2)
    sessions = make_sessionmaker(engine)
    tenants, templates = facts["tenants"], facts["templates"]
    cases = [
        ("one template, as a tenant with runs", tenants[0], templates[:1]),
        ("one template, as a tenant without runs", tenants[-1], templates[:1]),
        (f"a page of {TEMPLATES} templates (one statement)", tenants[0], templates[1:]),
    ]
    rows = []
    try:
        for name, caller, wanted in cases:
            times: list[float] = []
            for _ in range(repeats):
                async with sessions() as s:
                    t0 = time.perf_counter()
                    reports = await ForecastService(s).cost_estimates(
                        caller, [(t, "premium") for t in wanted]
                    )
                    times.append((time.perf_counter() - t0) * 1000)
            rows.append(
                {
                    "query": name,
                    "p50 ms": round(percentile(times, 50), 1),
                    "p95 ms": round(percentile(times, 95), 1),
                    "basedOnRuns": reports[0].based_on_runs,
                    "p50 USD": reports[0].p50_usd,
                }
            )
    finally:
        await engine.dispose()
    return rows


async def run(size: int = 300_000, *, admin_db: str = ADMIN_DB, repeats: int = REPEATS) -> dict:
    """{"scenario", "rows": [one per case], "notes"}."""
    async with fresh_database(admin_db) as url:
        facts = await generate(url, size)
        rows = await measure(url, facts, repeats)
    notes = [
        f"{size:,} completed runs of the measured template and {size:,} over the page's "
        f"{TEMPLATES} templates, {TENANTS} premium tenants, 90 days, one AI usage row each; made "
        f"and analyzed in {facts['made']:.1f} s",
        f"{repeats} repeats, through ForecastService.cost_estimates (the resolver's code); "
        f"the first rollup refresh, which computes every estimate, took "
        f"{facts['refreshed']:.1f} s",
        f"{os.cpu_count()} cores, Python {platform.python_version()}",
    ]
    return {"scenario": "cost_estimate", "rows": rows, "notes": notes}


if __name__ == "__main__":
    from bench.run import table

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    result = asyncio.run(run(size))
    print(table(result["rows"]))
    for note in result["notes"]:
        print(f"  {note}")
