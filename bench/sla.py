"""SLA queries at scale: `slaReport` (all templates, one template, the breached runs' pages)
and the worker's SLA round, on one tenant with N executions (1,000,000 by default) among
other tenants' executions.

The rows are bench/execution_filters.py's (one run every 30 s going back from now, a million
span about a year; every run took 20 s; 2% FAILED, 1% CANCELLED, 0.1% RUNNING, 0.1% PAUSED),
then the five common templates' latest versions get an `sla` block by SQL (the generated
column follows): the first `max_duration_seconds: 15` (every run breaches: the breached page
is full), the others 60 (none breaches: the page scans the window to find nothing), every
one `min_success_rate: 0.99` over a 7-day window; the measured tenant overrides the second
template. VACUUM ANALYZE before measuring. Timed through the services the resolvers and the
worker call; p50/p95 over the repeats, in ms; EXPLAIN (ANALYZE) of the all-templates report
is printed to show the indexes used.

    .venv/bin/python -m bench.sla 1000000
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
from datetime import timedelta
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.dialects import postgresql

from app.analytics.sla import SlaReportService
from app.analytics.sla_repository import run_stats_query
from app.db import make_engine, make_sessionmaker
from app.log_config import configure
from app.models.base import utcnow
from app.sla.service import SlaMonitor
from bench.ai_gateway import ADMIN_DB, fresh_database
from bench.execution_filters import generate
from bench.harness import percentile

REPEATS = 10


async def add_targets(url: str, facts: dict[str, Any]) -> list[Any]:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        templates = await conn.fetch(
            "SELECT t.id FROM templates t JOIN template_versions v ON v.template_id = t.id "
            "AND v.version = t.latest_version ORDER BY t.name LIMIT 5"
        )
        ids = [r["id"] for r in templates]
        for i, template_id in enumerate(ids):
            block = (
                f'{{"max_duration_seconds": {15 if i == 0 else 60}, "min_success_rate": 0.99, '
                '"window_seconds": 604800, "min_runs": 10}'
            )
            await conn.execute(
                "UPDATE template_versions SET spec = jsonb_set(spec, '{sla}', $2::jsonb) "
                "WHERE template_id = $1",
                template_id,
                block,
            )
        await conn.execute(
            "INSERT INTO template_slas (tenant_id, template_id, max_duration_seconds, "
            "min_success_rate, window_seconds, min_runs, updated_at) "
            "VALUES ($1, $2, 30, 0.95, 86400, 10, now())",
            facts["tenant"],
            ids[1],
        )
        await conn.execute("VACUUM ANALYZE template_versions")
        await conn.execute("VACUUM ANALYZE executions")
    finally:
        await conn.close()
    return ids


async def timed(call: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = await call
    return (time.perf_counter() - t0) * 1000, result


def _ms(values: list[float], pct: float) -> float:
    return round(percentile(values, pct), 1)


async def measure(url: str, facts: dict[str, Any], ids: list[Any], repeats: int) -> list[dict]:
    engine = make_engine(url, pool_size=2)
    sessions = make_sessionmaker(engine)
    tenant = facts["tenant"]
    now = utcnow()
    shapes: list[tuple[str, Any]] = []
    for days in (1, 7, 31):
        since = now - timedelta(days=days)

        def all_templates(s: Any, since: Any = since) -> Any:
            return SlaReportService(s).report(tenant, since, now)

        def one_template(s: Any, since: Any = since) -> Any:
            return SlaReportService(s).report(tenant, since, now, ids[0])

        shapes.append((f"slaReport, all templates, {days} d", all_templates))
        shapes.append((f"slaReport, one template, {days} d", one_template))

    async def page(s: Any, template_id: Any, days: int) -> Any:
        service = SlaReportService(s)
        (report,) = await service.report(tenant, now - timedelta(days=days), now, template_id)
        return await service.breached_runs(tenant, report, 20, None)

    shapes.append(("breaches page 1 (all breach), 31 d", lambda s: page(s, ids[0], 31)))
    shapes.append(("breaches page 1 (none breach), 31 d", lambda s: page(s, ids[2], 31)))
    rows = []
    try:
        for name, call in shapes:
            times = []
            for _ in range(repeats):
                async with sessions() as s:
                    ms, result = await timed(call(s))
                    times.append(ms)
            size = len(result.items) if hasattr(result, "items") else len(result)
            rows.append(
                {"query": name, "rows": size, "p50 ms": _ms(times, 50), "p95 ms": _ms(times, 95)}
            )
        monitor = SlaMonitor(sessions, None)
        for name, job in (
            ("SLA round: open runs past target", monitor.sweep_open),
            ("SLA round: success rates", monitor.evaluate_rates),
        ):
            times = []
            for _ in range(repeats):
                ms, found = await timed(job(utcnow()))
                times.append(ms)
            rows.append(
                {
                    "query": name,
                    "rows": len(found),
                    "p50 ms": _ms(times, 50),
                    "p95 ms": _ms(times, 95),
                }
            )
        async with sessions() as s:
            statement = _report_statement(tenant, now - timedelta(days=31), now)
            plan = await s.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + statement))
            print("\n".join(r[0] for r in plan))
    finally:
        await engine.dispose()
    return rows


def _report_statement(tenant: Any, since: Any, until: Any) -> str:
    """The all-templates report's statement with its values inlined, for EXPLAIN."""
    query = run_stats_query(tenant, since, until, until, None)
    return str(query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))


async def run(size: int = 1_000_000, *, admin_db: str = ADMIN_DB, repeats: int = REPEATS) -> dict:
    configure("warning")
    async with fresh_database(admin_db) as url:
        facts = await generate(url, size)
        ids = await add_targets(url, facts)
        rows = await measure(url, facts, ids, repeats)
    notes = [
        f"one tenant with {size:,} executions (one per 30 s) and 3 others with "
        f"{max(size // 20, 1):,} each; inserted in {facts['insert_seconds']} s",
        f"{repeats} repeats, in ms, through SlaReportService / SlaMonitor on one connection",
        f"{os.cpu_count()} cores, Python {platform.python_version()}",
    ]
    return {"scenario": "sla", "rows": rows, "notes": notes}


if __name__ == "__main__":
    from bench.run import table

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    result = asyncio.run(run(size))
    print(table(result["rows"]))
    for note in result["notes"]:
        print(f"  {note}")
