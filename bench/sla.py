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
from app.analytics.sla_repository import SlaReportRepository, Span, run_stats_query
from app.analytics.sla_rollup import SlaRollupRefresh
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


def _shapes(tenant: Any, ids: list[Any], now: Any) -> list[tuple[str, Any]]:
    """(name, call(session)) of every timed question: the report through the service (rollup
    and rows), and, where main had the query (31 d), main's rows-only statements on the same
    data for comparison (the whole window as one span)."""
    shapes: list[tuple[str, Any]] = []
    for days in (1, 31, 92, 366):
        since = now - timedelta(days=days)
        for label, one in (("all templates", None), ("one template", ids[0])):

            def report(s: Any, since: Any = since, one: Any = one) -> Any:
                return SlaReportService(s).report(tenant, since, now, one)

            shapes.append((f"slaReport, {label}, {days} d", report))
            if days in (31, 366):

                def rows_only(s: Any, since: Any = since, one: Any = one) -> Any:
                    return SlaReportRepository(s).run_stats(tenant, [Span(since, now, one)], now)

                shapes.append((f"  rows only (main's statement), {label}, {days} d", rows_only))

    async def page(s: Any, template_id: Any, days: int) -> Any:
        service = SlaReportService(s)
        (report,) = await service.report(tenant, now - timedelta(days=days), now, template_id)
        return await service.breached_runs(tenant, report, 20, None)

    def rows_page(template_id: Any, days: int) -> Any:
        def call(s: Any) -> Any:
            spans = [Span(now - timedelta(days=days), now, template_id)]
            return SlaReportRepository(s).breached_runs(
                tenant, template_id, spans, now, before=None, limit=21
            )

        return call

    for days in (31, 366):
        for label, template_id in (("all breach", ids[0]), ("none breach", ids[2])):
            shapes.append(
                (
                    f"breaches page 1 ({label}), {days} d",
                    lambda s, t=template_id, d=days: page(s, t, d),
                )
            )
            if days == 31:
                shapes.append(
                    (f"  rows only (main's statement), {label}, 31 d", rows_page(template_id, 31))
                )
    return shapes


async def _timed_rows(sessions: Any, shapes: list[tuple[str, Any]], repeats: int) -> list[dict]:
    rows = []
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
    return rows


async def refresh_sla_rollup(sessions: Any) -> tuple[float, int]:
    """One SLA rollup refresh, a transaction per chunk until caught up: (ms, rows written)."""
    ms, written = 0.0, 0
    more = True
    while more:
        async with sessions() as s:
            started = (await s.execute(text("SELECT now()"))).scalar_one()
            took, chunk = await timed(SlaRollupRefresh(s).refresh(started, started.date()))
            await s.commit()
        ms, written, more = ms + took, written + chunk.rows, chunk.more
    return ms, written


async def measure(url: str, facts: dict[str, Any], ids: list[Any], repeats: int) -> list[dict]:
    engine = make_engine(url, pool_size=2)
    sessions = make_sessionmaker(engine)
    tenant = facts["tenant"]
    now = utcnow()
    try:
        ms, written = await refresh_sla_rollup(sessions)
        fills = [
            {
                "query": "SLA rollup: first refresh (fills every day)",
                "rows": written,
                "p50 ms": round(ms, 1),
                "p95 ms": None,
            }
        ]
        async with sessions() as s:
            await s.execute(text("ANALYZE sla_rollup"))
            await s.commit()
        ms, written = await refresh_sla_rollup(sessions)
        fills.append(
            {
                "query": "SLA rollup: refresh, nothing new",
                "rows": written,
                "p50 ms": round(ms, 1),
                "p95 ms": None,
            }
        )
        rows = fills + await _timed_rows(sessions, _shapes(tenant, ids, now), repeats)
        rows += await _override_changed(sessions, tenant, ids, now, repeats)
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


async def _override_changed(
    sessions: Any, tenant: Any, ids: list[Any], now: Any, repeats: int
) -> list[dict]:
    """The measured tenant overrides the first template: its year is read from the rows
    until the refresh rebuilds its rows (timed), then from the rollup again."""
    async with sessions() as s:
        await s.execute(
            text(
                "INSERT INTO template_slas (tenant_id, template_id, max_duration_seconds, "
                "window_seconds, min_runs, updated_at) VALUES (:t, :p, 25, 86400, 10, now())"
            ),
            {"t": tenant, "p": ids[0]},
        )
        await s.commit()

    def one(s: Any) -> Any:
        return SlaReportService(s).report(tenant, now - timedelta(days=366), now, ids[0])

    rows = await _timed_rows(
        sessions, [("override just set: one template, 366 d (rows)", one)], repeats
    )
    ms, written = await refresh_sla_rollup(sessions)
    rows.append(
        {
            "query": "SLA rollup: refresh after the override (one template rebuilt)",
            "rows": written,
            "p50 ms": round(ms, 1),
            "p95 ms": None,
        }
    )
    rows += await _timed_rows(sessions, [("after that refresh: one template, 366 d", one)], repeats)
    return rows


def _report_statement(tenant: Any, since: Any, until: Any) -> str:
    """main's all-templates report statement (the rows path, whole window) inlined, for EXPLAIN."""
    query = run_stats_query(tenant, [Span(since, until)], until)
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
