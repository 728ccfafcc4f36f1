"""Filtered execution lists at scale: the first page and the count of each filter shape of
`executions(filter: ...)`, on one tenant with N executions (1,000,000 by default) among
other tenants' executions.

Standalone and in-process, like ai_gateway: a fresh database on the stack's PostgreSQL
(migrated, dropped at the end). The rows are made by SQL (`INSERT ... SELECT` over
`generate_series`, not the ORM): one execution every 30 s going back from now (a million
span about a year), running the standard templates, with params
`{"region": eu|us|ap, "customer": "c<0..4999>", "priority": 0..9}`, statuses mostly
COMPLETED (2% FAILED, 1% CANCELLED, 0.1% RUNNING, 0.1% PAUSED), and three other tenants with
N/20 each over the same period. Then VACUUM ANALYZE (what autovacuum leaves behind).

Each shape is timed through ExecutionService (the code the resolver calls): the filter's
check and the first page of 20, a later page (`after` the first page's end cursor, with the
previous-page probe), the last page (`last: 20`), the capped count the API answers
(totalCount, up to COUNT_CAP) and, for the record, the exact count. p50/p95 over the
repeats, in milliseconds.

    .venv/bin/python -m bench.execution_filters 1000000
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

from app.db import make_engine, make_sessionmaker
from app.executions.repository import ExecutionRepository
from app.executions.service import COUNT_CAP, ExecutionFilter, ExecutionService
from app.log_config import configure
from app.pagination import window
from app.seed import seed_templates
from app.settings import Settings
from app.tenants.service import TenantService
from bench.ai_gateway import ADMIN_DB, fresh_database
from bench.harness import percentile

OTHER_TENANTS = 3
STEP = timedelta(seconds=30)  # one execution of the measured tenant every 30 s
REPEATS = 20
GENERATE = """
INSERT INTO executions (id, tenant_id, template_id, template_version_id, params, status,
    progress, workflow_id, last_seq, created_at, updated_at, started_at, finished_at)
SELECT gen_random_uuid(), $1,
    CASE WHEN i % 10000 = 3 THEN $8::uuid ELSE ($3::uuid[])[1 + i % cardinality($3)] END,
    CASE WHEN i % 10000 = 3 THEN $9::uuid ELSE ($4::uuid[])[1 + i % cardinality($4)] END,
    jsonb_build_object('region', (ARRAY['eu', 'us', 'ap'])[1 + i % 3],
        'customer', 'c' || (i * 7 % 5000), 'priority', i % 10),
    CASE WHEN i % 1000 = 0 THEN 'RUNNING' WHEN i % 1000 = 500 THEN 'PAUSED'
         WHEN i % 50 = 1 THEN 'FAILED' WHEN i % 100 = 2 THEN 'CANCELLED'
         ELSE 'COMPLETED' END,
    100.0, $2::text || '-' || i, 5, at, at, at, at + interval '20 seconds'
FROM generate_series(1, $7::int) AS i,
    LATERAL (SELECT $5::timestamptz - i * $6::interval AS at) AS t
"""


async def generate(url: str, n: int) -> dict[str, Any]:
    """The measured tenant (N executions) and OTHER_TENANTS others (N/20 each); returns the
    measured tenant's id, template ids and names and the seconds the inserts took."""
    engine = make_engine(url, pool_size=2)
    sessions = make_sessionmaker(engine)
    await seed_templates(sessions)
    async with sessions() as session:
        tenants = [
            await TenantService(session).create_tenant(f"bench-{i}-{uuid.uuid4().hex[:6]}", "pro")
            for i in range(1 + OTHER_TENANTS)
        ]
        await session.commit()
    await engine.dispose()
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        templates = await conn.fetch(
            "SELECT t.id, t.name, v.id AS version_id FROM templates t "
            "JOIN template_versions v ON v.template_id = t.id AND v.version = t.latest_version "
            "ORDER BY t.name LIMIT 6"
        )
        # Five common templates, and a rare one (0.01% of the runs).
        ids = [r["id"] for r in templates[:5]]
        versions = [r["version_id"] for r in templates[:5]]
        rare = (templates[5]["id"], templates[5]["version_id"])
        now = datetime.now(UTC)
        t0 = time.monotonic()
        for i, tenant in enumerate(tenants):
            count, step = (n, STEP) if i == 0 else (max(n // 20, 1), STEP * 20)
            await conn.execute(
                GENERATE, tenant.id, f"bench-{i}", ids, versions, now, step, count, *rare
            )
        inserted = time.monotonic() - t0
        t0 = time.monotonic()
        await conn.execute("VACUUM ANALYZE executions")
        vacuumed = time.monotonic() - t0
    finally:
        await conn.close()
    return {
        "tenant": tenants[0].id,
        "small_tenant": tenants[1].id,
        "template_id": ids[0],
        "failing_template_id": ids[1],  # FAILED ones are i % 50 == 1: templates[1]
        "template_name": templates[1]["name"],
        "rare_template_name": templates[5]["name"],
        "now": now,
        "insert_seconds": round(inserted, 1),
        "vacuum_seconds": round(vacuumed, 1),
    }


def shapes(facts: dict[str, Any]) -> dict[str, ExecutionFilter]:
    now: datetime = facts["now"]
    return {
        "no filter": ExecutionFilter(),
        "status RUNNING (0.1%)": ExecutionFilter(statuses=["RUNNING"]),
        "status FAILED+CANCELLED (3%)": ExecutionFilter(statuses=["FAILED", "CANCELLED"]),
        "templateId (20%)": ExecutionFilter(template_id=facts["template_id"]),
        "small tenant: templateId (20%)": ExecutionFilter(template_id=facts["template_id"]),
        "templateName (20%)": ExecutionFilter(template_name=facts["template_name"]),
        "templateName (0.01%)": ExecutionFilter(template_name=facts["rare_template_name"]),
        "one day, a week ago": ExecutionFilter(
            started_after=now - timedelta(days=8), started_before=now - timedelta(days=7)
        ),
        "startedAfter 30 days ago": ExecutionFilter(started_after=now - timedelta(days=30)),
        "startedBefore 300 days ago": ExecutionFilter(started_before=now - timedelta(days=300)),
        'paramsContains {"customer"} (0.02%)': ExecutionFilter(params_contains={"customer": "c42"}),
        'paramsContains {"region"} (33%)': ExecutionFilter(params_contains={"region": "eu"}),
        "FAILED + templateId + 30 days": ExecutionFilter(
            statuses=["FAILED"],
            template_id=facts["failing_template_id"],
            started_after=now - timedelta(days=30),
        ),
        "RUNNING/PAUSED + region": ExecutionFilter(
            statuses=["RUNNING", "PAUSED"], params_contains={"region": "eu"}
        ),
    }


async def timed(call: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = await call
    return (time.perf_counter() - t0) * 1000, result


async def measure(url: str, facts: dict[str, Any], repeats: int) -> list[dict[str, Any]]:
    engine = make_engine(url, pool_size=2)
    sessions = make_sessionmaker(engine)
    settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
    rows = []
    try:
        for name, request in shapes(facts).items():
            # The small tenant's executions share templates with the big one's.
            tenant = facts["small_tenant" if name.startswith("small") else "tenant"]
            first, later, capped, exact, backward = [], [], [], [], []
            matched = shown = 0
            for _ in range(repeats):
                async with sessions() as s:
                    service = ExecutionService(s)
                    # As the resolver: the filter checked (a template name resolved), a page.
                    t0 = time.perf_counter()
                    criteria = await service.criteria(tenant, request, settings)
                    page = await service.list_page(tenant, criteria, window(20, None, None, None))
                    first.append((time.perf_counter() - t0) * 1000)
                    shown = len(page.items)
                    end = page.cursors[-1] if page.cursors else None
                    if end is not None:
                        ms, _ = await timed(
                            service.list_page(tenant, criteria, window(20, end, None, None))
                        )
                        later.append(ms)
                    ms, _ = await timed(
                        service.list_page(tenant, criteria, window(None, None, 20, None))
                    )
                    backward.append(ms)
                    ms, _ = await timed(service.count(tenant, criteria))
                    capped.append(ms)
                    ms, matched = await timed(
                        ExecutionRepository(s).count_for_tenant(tenant, criteria, cap=10**9)
                    )
                    exact.append(ms)
            rows.append(
                {
                    "filter": name,
                    "matches": matched,
                    "page rows": shown,
                    "first page p50": _ms(first, 50),
                    "first page p95": _ms(first, 95),
                    "page 2 p50": _ms(later, 50),
                    "last page p50": _ms(backward, 50),
                    f"totalCount (cap {COUNT_CAP:,}) p50": _ms(capped, 50),
                    "totalCount p95": _ms(capped, 95),
                    "exact count p50": _ms(exact, 50),
                }
            )
    finally:
        await engine.dispose()
    return rows


def _ms(values: list[float], pct: float) -> float | None:
    return round(percentile(values, pct), 1) if values else None


async def run(size: int = 1_000_000, *, admin_db: str = ADMIN_DB, repeats: int = REPEATS) -> dict:
    """Scenario of `make bench`: {"scenario", "rows": [one per filter shape], "notes"}."""
    configure("warning")
    async with fresh_database(admin_db) as url:
        facts = await generate(url, size)
        rows = await measure(url, facts, repeats)
    notes = [
        f"one tenant with {size:,} executions (one per 30 s) and {OTHER_TENANTS} others with "
        f"{max(size // 20, 1):,} each; made in {facts['insert_seconds']} s by INSERT ... SELECT, "
        f"VACUUM ANALYZE {facts['vacuum_seconds']} s",
        f"{repeats} repeats per shape, in ms, through ExecutionService (the resolver's code) "
        "on one connection: first page (20), page 2 (after page 1's end cursor, with the "
        "hasPreviousPage probe), last page (last: 20), totalCount as the API counts it, and "
        "an uncapped count for comparison",
        f"{os.cpu_count()} cores, Python {platform.python_version()}",
    ]
    return {"scenario": "execution_filters", "rows": rows, "notes": notes}


if __name__ == "__main__":
    from bench.run import table

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    result = asyncio.run(run(size))
    print(table(result["rows"]))
    for note in result["notes"]:
        print(f"  {note}")
