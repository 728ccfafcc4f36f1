"""aiRecommendations at scale: RecommendationService.recommend (the resolver's code) on one tenant
with N ai_usage rows (1,000,000 by default, about one per 31 s over a year) among other
tenants' rows, for a 30-day and a 366-day window.

Standalone and in-process, like execution_filters: a fresh database on the stack's PostgreSQL
(migrated, dropped at the end), rows made by SQL (`INSERT ... SELECT` over generate_series).
The measured tenant (premium) calls the six tasks; 10% of the calls go to gpt-6-luna (the
rest gpt-6.2-sol), 3% end INVALID_OUTPUT, 20% are cache hits, 1% BUDGET fallbacks; a third of the
inputs recur within minutes, the rest come from a pool of N/5 fingerprints (about five times a
year each), with repeat_gap_seconds as AiRepository.add_usage sets it. Three other tenants
have N/20 rows each with the same fingerprints. Then VACUUM ANALYZE. p50/p95 over the repeats,
in milliseconds, and the recommendations found.

    DATABASE_URL=postgresql://... .venv/bin/python -m bench.ai_recommendations 1000000

The lead's bench/analytics.py can time the same through GraphQL:
graphql/operations/AiRecommendations.graphql with {"from": <now - 30 d>, "to": <now>}.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from app.analytics.recommendations import RecommendationService
from app.db import make_engine, make_sessionmaker
from app.log_config import configure
from app.settings import Settings
from app.tenants.service import TenantService
from bench.ai_gateway import ADMIN_DB, fresh_database
from bench.harness import percentile

OTHER_TENANTS = 3
REPEATS = 10
YEAR = timedelta(days=365)
GENERATE = """
WITH generated AS (
    SELECT i,
        (ARRAY['generate_text', 'classify_content', 'summarize', 'extract_entities',
               'personalize_content', 'optimize_timing'])[1 + i % 6] AS task,
        i % 100 = 7 AS refused,
        i % 100 IN (11, 41, 71) AS invalid,
        i % 5 = 1 AND i % 100 <> 7 AS cached,
        CASE WHEN i % 10 = 3 THEN 'gpt-6-luna' ELSE 'gpt-6.2-sol' END AS model,
        -- a third of the inputs come back within minutes, the rest every ~N/5 calls
        md5('input' || CASE WHEN i % 3 = 0 THEN 'q' || (i / 30) ELSE ((i::bigint * 7919) % $3)::text
            END) AS input_hash,
        $4::timestamptz - (i * $5::interval) AS at
    FROM generate_series(1, $2) AS i
), rows AS (
    SELECT *, NOT refused AND NOT invalid AND NOT cached AS paid_ok FROM generated
)
INSERT INTO ai_usage (tenant_id, task, provider, model, input_tokens, output_tokens, cost_usd,
    saved_usd, latency_ms, cached, fallback_reason, outcome, input_hash, repeat_gap_seconds, at)
SELECT $1, task,
    CASE WHEN refused THEN 'baseline' ELSE 'openai' END,
    CASE WHEN refused THEN 'baseline' ELSE model END,
    1000, 50,
    CASE WHEN refused OR cached THEN 0 WHEN model = 'gpt-6-luna' THEN 0.00018 ELSE 0.003 END,
    CASE WHEN cached THEN 0.003 ELSE 0 END,
    800, cached,
    CASE WHEN refused THEN 'BUDGET' WHEN invalid THEN 'INVALID_OUTPUT' END,
    CASE WHEN refused OR invalid THEN 'FALLBACK' WHEN cached THEN 'CACHED' ELSE 'OK' END,
    input_hash,
    -- what AiRepository.add_usage records: seconds since the input's previous paid OK call
    CASE WHEN paid_ok THEN extract(epoch FROM at - lag(at) OVER (
        PARTITION BY task, model, input_hash, paid_ok ORDER BY at))::int END,
    at
FROM rows
"""


async def generate(url: str, n: int) -> dict[str, Any]:
    engine = make_engine(url, pool_size=2)
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        tenants = [
            await TenantService(session).create_tenant(
                f"bench-recs-{i}-{uuid.uuid4().hex[:6]}", "premium"
            )
            for i in range(1 + OTHER_TENANTS)
        ]
        await session.commit()
    await engine.dispose()
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    now = datetime.now(UTC)
    try:
        t0 = time.monotonic()
        for i, tenant in enumerate(tenants):
            count = n if i == 0 else max(n // 20, 1)
            await conn.execute(GENERATE, tenant.id, count, max(n // 5, 1), now, YEAR / count)
        inserted = time.monotonic() - t0
        t0 = time.monotonic()
        await conn.execute("VACUUM ANALYZE ai_usage, ai_usage_daily")
        vacuumed = time.monotonic() - t0
    finally:
        await conn.close()
    return {
        "tenant": tenants[0].id,
        "now": now,
        "insert_seconds": round(inserted, 1),
        "vacuum_seconds": round(vacuumed, 1),
    }


async def measure(url: str, facts: dict[str, Any], repeats: int) -> list[dict[str, Any]]:
    engine = make_engine(url, pool_size=2)
    sessions = make_sessionmaker(engine)
    settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
    now: datetime = facts["now"]
    rows = []
    try:
        for days in (30, 366):
            since = now - timedelta(days=days)
            times: list[float] = []
            found: list[str] = []
            for _ in range(repeats):
                async with sessions() as s:
                    t0 = time.perf_counter()
                    report = await RecommendationService(s).recommend(
                        facts["tenant"], since, now, settings
                    )
                    times.append((time.perf_counter() - t0) * 1000)
                found = [f"{r.kind}:{r.task or '-'}" for r in report.recommendations]
            rows.append(
                {
                    "window": f"{days} days",
                    "rows in window (approx.)": round(facts["size"] * min(days, 365) / 365),
                    "p50 ms": round(percentile(times, 50), 1),
                    "p95 ms": round(percentile(times, 95), 1),
                    "recommendations": ", ".join(found) or "none",
                }
            )
    finally:
        await engine.dispose()
    return rows


async def run(size: int = 1_000_000, *, admin_db: str = ADMIN_DB, repeats: int = REPEATS) -> dict:
    """{"scenario", "rows": [one per window], "notes"}."""
    configure("warning")
    async with fresh_database(admin_db) as url:
        facts = await generate(url, size)
        facts["size"] = size
        rows = await measure(url, facts, repeats)
    notes = [
        f"one premium tenant with {size:,} ai_usage rows over a year and {OTHER_TENANTS} others "
        f"with {max(size // 20, 1):,} each; made in {facts['insert_seconds']} s, VACUUM ANALYZE "
        f"{facts['vacuum_seconds']} s",
        f"{repeats} repeats per window, in ms, through RecommendationService.recommend (the "
        "resolver's code: the tenant's settings, the repeat scan, the per-model counts, the "
        "budget months)",
        f"{os.cpu_count()} cores, Python {platform.python_version()}",
    ]
    return {"scenario": "ai_recommendations", "rows": rows, "notes": notes}


if __name__ == "__main__":
    from bench.run import table

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    result = asyncio.run(run(size))
    print(table(result["rows"]))
    for note in result["notes"]:
        print(f"  {note}")
