"""Analytics at scale: each analytics query on 1,000,000 executions and 10,000,000 events.

Standalone and in-process, like execution_filters: a fresh database on the stack's PostgreSQL
(migrated, dropped at the end), filled by SQL (`INSERT ... SELECT` over `generate_series`,
not the ORM), then VACUUM ANALYZE:
- N executions (1,000,000 by default) over the last 90 days across 10 tenants (half of them
  for the first, a pro tenant; the others free, pro, premium and enterprise), running the 7
  standard templates, params `{"region": eu|us|ap, "customer": "c<0..4999>"}`, statuses
  mostly COMPLETED (5% FAILED, 2% CANCELLED, 0.2% RUNNING), durations 1-600 s;
- EVENTS_PER_RUN (10) events per execution: CREATED, four steps' STEP_STARTED and
  STEP_COMPLETED (with the `usage` a completion records: files, data, email, http) and the end;
- an AI usage row for every third execution (cost, tokens, a model or a baseline; a third
  of the inputs recur, with the repeat gaps AiRepository.add_usage records, so
  aiRecommendations has repeats to weigh);
- an SLA block on the standard templates' versions (runs over 300 s breach: about half), and
  13 private templates of the measured tenant (without runs) for a page of 20 costEstimates.

Each query of QUERIES is timed REPEATS times through the service the resolver calls (its
checks included), p50/p95 in milliseconds; the platform's fields get a PlatformPrincipal as a
platform credential (`wfsp_...`) resolves to. To add one: a (name, call) pair whose call takes
(session, facts) and returns an awaitable. bench/sla.py (a year of one tenant's runs, the
SLA worker's rounds) and bench/ai_recommendations.py (a year of dense AI usage) measure those
two features on their own shapes.

    .venv/bin/python -m bench.analytics 1000000
    .venv/bin/python -m bench.analytics 1000000 --only tenantComparison --only capacity
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.capacity import CapacityService
from app.analytics.comparison import TenantComparison, TenantRankBy
from app.analytics.forecast import ForecastService
from app.analytics.recommendations import RecommendationService
from app.analytics.rollup_repository import CHANGE_MARGIN, ROLLUP_CHUNK_DAYS, RollupRepository
from app.analytics.service import RollupService, StatsService, UsageService
from app.analytics.sla import SlaReportService
from app.analytics.sla_rollup import SlaRollupRefresh
from app.analytics.storage_usage import StorageGauge
from app.db import make_engine, make_sessionmaker
from app.executions.service import ExecutionFilter
from app.log_config import configure
from app.models import Execution, RollupState
from app.seed import seed_templates
from app.settings import Settings
from app.templates.service import TemplateService
from app.templates.standard import STANDARD_TEMPLATES
from app.tenants.service import PlatformPrincipal, TenantService
from bench.ai_gateway import ADMIN_DB, fresh_database
from bench.harness import percentile

DAYS = 90
EVENTS_PER_RUN = 10
REPEATS = 10
TIERS = ["pro", "free", "pro", "premium", "enterprise", "free", "pro", "premium", "free", "pro"]
# Per tenant: its share of the executions (the first holds half).
SHARES = [0.5] + [0.5 / (len(TIERS) - 1)] * (len(TIERS) - 1)

EXECUTIONS = """
INSERT INTO executions (id, tenant_id, template_id, template_version_id, params, status,
    progress, workflow_id, last_seq, created_at, updated_at, started_at, finished_at)
SELECT gen_random_uuid(), $1, ($2::uuid[])[1 + i % 7], ($3::uuid[])[1 + i % 7],
    jsonb_build_object('region', (ARRAY['eu', 'us', 'ap'])[1 + i % 3],
        'customer', 'c' || (i * 7 % 5000)),
    status, 100.0, $4::text || '-' || i, 10, at, at, at + interval '1 second',
    CASE WHEN status = 'RUNNING' THEN NULL
         ELSE at + interval '1 second' + (1 + (i::bigint * 7919) % 600) * interval '1 second' END
FROM generate_series(1, $5::int) AS i,
    LATERAL (SELECT $6::timestamptz - i * $7::interval AS at,
        CASE WHEN i % 500 = 0 THEN 'RUNNING' WHEN i % 20 = 1 THEN 'FAILED'
             WHEN i % 50 = 2 THEN 'CANCELLED' ELSE 'COMPLETED' END AS status) AS t
"""
STEPS = ("files.read", "data.transform", "email.send", "http.request")
EVENTS = f"""
INSERT INTO execution_events (execution_id, seq, key, type, status, progress, step_id,
    message, payload, at)
SELECT e.id, s, 'e' || s,
    CASE WHEN s = 1 THEN 'CREATED' WHEN s = {EVENTS_PER_RUN} THEN 'COMPLETED'
         WHEN s % 2 = 0 THEN 'STEP_STARTED' ELSE 'STEP_COMPLETED' END,
    'RUNNING', s * 10.0,
    CASE WHEN s BETWEEN 2 AND 9 THEN 'step' || ((s - 2) / 2) END,
    CASE WHEN s BETWEEN 2 AND 9 AND s % 2 = 0 THEN (ARRAY{list(STEPS)!r})[1 + (s - 2) / 2] END,
    CASE s WHEN 3 THEN '{{"usage": {{"bytes_written": 1024, "emails_sent": 0, "http_calls": 0}}}}'
           WHEN 5 THEN '{{"usage": {{"bytes_written": 0, "emails_sent": 0, "http_calls": 0}}}}'
           WHEN 7 THEN '{{"usage": {{"bytes_written": 0, "emails_sent": 2, "http_calls": 0}}}}'
           WHEN 9 THEN '{{"usage": {{"bytes_written": 0, "emails_sent": 0, "http_calls": 1}}}}'
           ELSE '{{}}' END::jsonb,
    e.created_at + s * interval '1 second'
FROM executions e, generate_series(1, {EVENTS_PER_RUN}) AS s
"""
# The executions' indexes that back no constraint (dropped during the load, made again after).
SECONDARY_INDEXES = """
SELECT i.relname AS name, pg_get_indexdef(i.oid) AS definition
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
WHERE x.indrelid = 'executions'::regclass
    AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.oid)
"""
# Dropped while the events load and added back after (one index build and one join to check
# the foreign key instead of 10 million index insertions and trigger calls: minutes faster).
EVENT_CONSTRAINTS = [
    ("pk_execution_events", "PRIMARY KEY (id)"),
    ("uq_execution_events_execution_id_key", "UNIQUE (execution_id, key)"),
    ("uq_execution_events_execution_id_seq", "UNIQUE (execution_id, seq)"),
    (
        "fk_execution_events_execution_id_executions",
        "FOREIGN KEY (execution_id) REFERENCES executions (id) ON DELETE CASCADE",
    ),
]
AI_USAGE = """
INSERT INTO ai_usage (tenant_id, execution_id, step_id, task, provider, model, input_tokens,
    output_tokens, cost_usd, saved_usd, latency_ms, cached, fallback_reason, outcome,
    input_hash, repeat_gap_seconds, at)
SELECT tenant_id, id, 'step2', 'generate_text', provider, 'gpt-6-luna',
    200 + n % 300, 50 + n % 100, (n % 1000) / 1000000.0, 0, 300, false,
    CASE WHEN paid_ok THEN NULL ELSE 'BUDGET' END, CASE WHEN paid_ok THEN 'OK' ELSE 'FALLBACK' END,
    input_hash,
    -- what AiRepository.add_usage records: seconds since the input's previous paid OK call
    CASE WHEN paid_ok THEN extract(epoch FROM at - lag(at) OVER (
        PARTITION BY tenant_id, input_hash, paid_ok ORDER BY at))::int END,
    at
FROM (
    SELECT e.tenant_id, e.id, n, n % 4 <> 0 AS paid_ok,
        CASE WHEN n % 4 = 0 THEN 'baseline' ELSE 'openai' END AS provider,
        -- a third of the inputs recur (a pool of 2,000 per tenant), the rest are unique
        md5('input' || CASE WHEN n % 9 = 0 THEN (n % 2000)::text ELSE 'u' || n END) AS input_hash,
        e.created_at + interval '3 seconds' AS at
    FROM (SELECT e.*, row_number() OVER () AS n FROM executions e) e
    WHERE n % 3 = 0
) a
"""
# Every standard template gets SLA targets (template_versions.sla is a generated column of
# spec -> 'sla' within SlaSpec's bounds: it follows): runs over 300 s from creation to end
# breach (about half here).
SLA = """{"max_duration_seconds": 300, "min_success_rate": 0.95, "window_seconds": 86400,
    "min_runs": 10}"""
PRIVATE_TEMPLATES = 13  # with the 7 standard ones: a page of 20 costEstimates


async def generate(url: str, n: int) -> dict[str, Any]:
    """The tenants and their rows; returns what the queries need and the seconds spent."""
    engine = make_engine(url, pool_size=2)
    sessions = make_sessionmaker(engine)
    await seed_templates(sessions)
    async with sessions() as session:
        tenants = [
            await TenantService(session).create_tenant(f"bench-{i}-{uuid.uuid4().hex[:6]}", tier)
            for i, tier in enumerate(TIERS)
        ]
        await session.commit()
    async with sessions() as session:
        service = TemplateService(session)
        private = []
        for k in range(PRIVATE_TEMPLATES):
            spec = {**STANDARD_TEMPLATES[k % len(STANDARD_TEMPLATES)], "name": f"bench-own-{k}"}
            template, _, _ = await service.publish(
                spec, tenant_id=tenants[0].id, visibility="PRIVATE"
            )
            private.append(template.id)
        await session.commit()
    await engine.dispose()
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    seconds: dict[str, float] = {}
    try:
        templates = await conn.fetch(
            "SELECT t.id, v.id AS version_id FROM templates t JOIN template_versions v "
            "ON v.template_id = t.id AND v.version = t.latest_version "
            "WHERE t.tenant_id IS NULL ORDER BY t.name LIMIT 7"
        )
        ids, versions = [r["id"] for r in templates], [r["version_id"] for r in templates]
        now = datetime.now(UTC)
        await conn.execute("SET maintenance_work_mem = '512MB'")
        t0 = time.monotonic()
        # The secondary indexes are built once after the load, not row by row during it.
        indexes = await conn.fetch(SECONDARY_INDEXES)
        for index in indexes:
            await conn.execute(f'DROP INDEX "{index["name"]}"')
        for i, tenant in enumerate(tenants):
            count = max(int(n * SHARES[i]), 1)
            every = timedelta(days=DAYS) / count
            await conn.execute(EXECUTIONS, tenant.id, ids, versions, f"b{i}", count, now, every)
        for index in indexes:
            await conn.execute(index["definition"])
        seconds["executions"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        for name, _ in reversed(EVENT_CONSTRAINTS):
            await conn.execute(f"ALTER TABLE execution_events DROP CONSTRAINT {name}")
        await conn.execute(EVENTS)
        for name, definition in EVENT_CONSTRAINTS:
            await conn.execute(f"ALTER TABLE execution_events ADD CONSTRAINT {name} {definition}")
        seconds["events"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        await conn.execute(AI_USAGE)
        seconds["ai_usage"] = round(time.monotonic() - t0, 1)
        await conn.execute(
            "UPDATE template_versions SET spec = jsonb_set(spec, '{sla}', $2::jsonb) "
            "WHERE template_id = ANY($1::uuid[])",
            ids,
            SLA,
        )
        t0 = time.monotonic()
        await conn.execute(
            "VACUUM ANALYZE executions, execution_events, ai_usage, ai_usage_daily, "
            "ai_usage_repeats_daily, template_versions"
        )
        seconds["vacuum"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        chunks = await refresh_rollup(url)
        await conn.execute("VACUUM ANALYZE execution_rollup")
        seconds["rollup"] = round(time.monotonic() - t0, 1)
        counts = {
            table: await conn.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
            for table in ("executions", "execution_events", "ai_usage")
        }
        execution_id = await conn.fetchval(
            "SELECT id FROM executions WHERE tenant_id = $1 AND status = 'COMPLETED' LIMIT 1",
            tenants[0].id,
        )
    finally:
        await conn.close()
    return {
        "tenant": tenants[0].id,
        "template_id": ids[0],
        "page": [*ids, *private],
        "execution_id": execution_id,
        "now": now,
        "seconds": seconds,
        "counts": counts,
        "chunks": chunks,
    }


async def refresh_rollup(url: str) -> list[float]:
    """What the analytics rollup schedule does (the first time: every past day, chunk after
    chunk, each committed); the seconds of each chunk."""
    engine = make_engine(url, pool_size=1)
    took: list[float] = []
    try:
        more = True
        while more:
            t0 = time.monotonic()
            async with make_sessionmaker(engine)() as session:
                more = (await RollupService(session).refresh()).more
                await session.commit()
            took.append(round(time.monotonic() - t0, 1))
    finally:
        await engine.dispose()
    return took


Call = Callable[[AsyncSession, dict[str, Any]], Awaitable[Any]]
SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]


def stats(days: int, group_by: str, *, platform: bool = False, **filter: Any) -> Call:
    async def call(s: AsyncSession, facts: dict[str, Any]) -> Any:
        service = StatsService(s)
        until = facts["now"]
        request = ExecutionFilter(**{k: v(facts) if callable(v) else v for k, v in filter.items()})
        tenant = None if platform else facts["tenant"]
        scope = await service.scope(
            tenant, until - timedelta(days=days), until, group_by, request, SETTINGS
        )
        return len((await service.execution_stats(scope)).buckets)

    return call


def template_usage(days: int) -> Call:
    async def call(s: AsyncSession, facts: dict[str, Any]) -> Any:
        until = facts["now"]
        report = await UsageService(s).template(
            facts["tenant"], facts["template_id"], until - timedelta(days=days), until
        )
        return report.runs.executions

    return call


async def execution_usage(s: AsyncSession, facts: dict[str, Any]) -> Any:
    return len((await UsageService(s).execution(facts["tenant"], facts["execution_id"])).steps)


def _template(facts: dict[str, Any]) -> Any:
    return facts["template_id"]


async def cost_forecast(s: AsyncSession, facts: dict[str, Any]) -> Any:
    return (await ForecastService(s).cost_forecast(facts["tenant"], facts["now"])).history_days


def cost_estimates(page: bool) -> Call:
    """Template.costEstimate of one template, or of a page of them (the resolver's DataLoader
    asks for the page's templates in one call)."""

    async def call(s: AsyncSession, facts: dict[str, Any]) -> Any:
        templates = facts["page"] if page else [facts["template_id"]]
        keys = [(t, TIERS[0]) for t in templates]
        found = await ForecastService(s).cost_estimates(facts["tenant"], keys)
        return sum(e.based_on_runs for e in found)

    return call


# What a platform credential (`wfsp_...`) resolves to; the services take no more.
OPERATOR = PlatformPrincipal(uuid.UUID(int=1), "bench")
# Storage is measured from files under this root; the bench's tenants have none there.
GAUGE = StorageGauge(
    SETTINGS.model_copy(
        update={"storage_root": Path(tempfile.gettempdir()) / "wfs-bench-analytics-files"}
    )
)


def comparison(days: int) -> Call:
    async def call(s: AsyncSession, facts: dict[str, Any]) -> Any:
        until = facts["now"]
        _, _, page = await TenantComparison(s, GAUGE).page(
            OPERATOR, until - timedelta(days=days), until, TenantRankBy.P95_DURATION, 20, None
        )
        return len(page.items)

    return call


async def capacity_plan(s: AsyncSession, facts: dict[str, Any]) -> Any:
    return len((await CapacityService(s).plan(OPERATOR, facts["now"], None, 90)).forecast)


def sla_report(days: int, *, one: bool) -> Call:
    async def call(s: AsyncSession, facts: dict[str, Any]) -> Any:
        until = facts["now"]
        template = facts["template_id"] if one else None
        found = await SlaReportService(s).report(
            facts["tenant"], until - timedelta(days=days), until, template
        )
        return sum(r.stats.runs for r in found)

    return call


def recommendations(days: int) -> Call:
    async def call(s: AsyncSession, facts: dict[str, Any]) -> Any:
        until = facts["now"]
        report = await RecommendationService(s).recommend(
            facts["tenant"], until - timedelta(days=days), until, SETTINGS
        )
        return len(report.recommendations)

    return call


async def rollup_refresh(s: AsyncSession, facts: dict[str, Any]) -> Any:
    """What the schedule runs every ANALYTICS_ROLLUP_SECONDS once the days are rolled up,
    after one execution changed: that day rebuilt, every template's cost estimates
    recomputed; rolled back after."""
    await s.execute(
        update(Execution).where(Execution.id == facts["execution_id"]).values(updated_at=func.now())
    )
    return (await RollupService(s).refresh()).estimates


async def idle_rollup_refresh(s: AsyncSession, facts: dict[str, Any]) -> Any:
    """The same when nothing changed since the last refresh (its start moved past every
    change, in this transaction only): the cost estimates are kept."""
    await s.execute(update(RollupState).values(refreshed_from=func.now() + CHANGE_MARGIN))
    return (await RollupService(s).refresh()).estimates


async def sla_rollup_refresh(s: AsyncSession, facts: dict[str, Any]) -> Any:
    """The SLA rollup's part of that refresh alone (nothing new: the scan for rows judged
    against a target no longer in force), rolled back after."""
    started = await RollupRepository(s).now()
    return (await SlaRollupRefresh(s).refresh(started, started.astimezone(UTC).date())).rows


QUERIES: list[tuple[str, Call]] = [
    ("executionStats DAY, 90 days", stats(90, "DAY")),
    ("executionStats WEEK, 90 days", stats(90, "WEEK")),
    ("executionStats DAY, 30 days", stats(30, "DAY")),
    ("executionStats TEMPLATE, 30 days", stats(30, "TEMPLATE")),
    ("executionStats STATUS, 30 days", stats(30, "STATUS")),
    ("executionStats TIER, 90 days", stats(90, "TIER")),
    ("executionStats DAY, 7 days", stats(7, "DAY")),
    ("executionStats DAY 30 d, templateId", stats(30, "DAY", template_id=_template)),
    ("executionStats DAY 30 d, FAILED", stats(30, "DAY", statuses=["FAILED"])),
    (
        "executionStats DAY 30 d, paramsContains 33%",
        stats(30, "DAY", params_contains={"region": "eu"}),
    ),
    (
        "executionStats DAY 30 d, paramsContains 0.02%",
        stats(30, "DAY", params_contains={"customer": "c42"}),
    ),
    ("platform: executionStats TIER, 90 days", stats(90, "TIER", platform=True)),
    ("platform: executionStats DAY, 30 days", stats(30, "DAY", platform=True)),
    ("execution resourceUsage", execution_usage),
    ("templateResourceUsage, 7 days", template_usage(7)),
    ("templateResourceUsage, 30 days", template_usage(30)),
    ("costForecast", cost_forecast),
    ("Template.costEstimate, one template", cost_estimates(page=False)),
    ("Template.costEstimate, a page of 20 templates", cost_estimates(page=True)),
    ("platform: tenantComparison, 7 days", comparison(7)),
    ("platform: tenantComparison, 30 days", comparison(30)),
    ("platform: tenantComparison, 90 days", comparison(90)),
    ("platform: capacityPlan, horizonDays 90", capacity_plan),
    ("slaReport, 31 days, all templates", sla_report(31, one=False)),
    ("slaReport, 31 days, one template", sla_report(31, one=True)),
    ("slaReport, 366 days, all templates", sla_report(366, one=False)),
    ("slaReport, 366 days, one template", sla_report(366, one=True)),
    ("aiRecommendations, 30 days", recommendations(30)),
    ("aiRecommendations, 366 days", recommendations(366)),
    ("analytics rollup refresh after a change (cost estimates recomputed)", rollup_refresh),
    ("analytics rollup refresh, nothing changed (cost estimates kept)", idle_rollup_refresh),
    ("  of which the SLA rollup's part", sla_rollup_refresh),
]


def chosen(only: list[str] | None) -> list[tuple[str, Call]]:
    """The QUERIES whose name contains one of `only` (case-insensitive); all without it."""
    if not only:
        return QUERIES
    return [(n, c) for n, c in QUERIES if any(o.lower() in n.lower() for o in only)]


async def measure(
    url: str, facts: dict[str, Any], repeats: int, only: list[str] | None = None
) -> list[dict[str, Any]]:
    engine = make_engine(url, pool_size=2)
    sessions = make_sessionmaker(engine)
    rows = []
    try:
        for name, call in chosen(only):
            times, answer = [], None
            for _ in range(repeats):
                async with sessions() as s:
                    t0 = time.perf_counter()
                    answer = await call(s, facts)
                    times.append((time.perf_counter() - t0) * 1000)
            rows.append(
                {
                    "query": name,
                    "answer": answer,
                    "p50 ms": round(percentile(times, 50), 1),
                    "p95 ms": round(percentile(times, 95), 1),
                    "max ms": round(max(times), 1),
                }
            )
    finally:
        await engine.dispose()
    return rows


async def run(
    size: int = 1_000_000,
    *,
    admin_db: str = ADMIN_DB,
    repeats: int = REPEATS,
    only: list[str] | None = None,
) -> dict:
    """Scenario of `make bench`: {"scenario", "rows": [one per query], "notes"}; `only`
    times the queries whose name contains one of those strings."""
    configure("warning")
    async with fresh_database(admin_db) as url:
        facts = await generate(url, size)
        rows = await measure(url, facts, repeats, only)
    counts, spent = facts["counts"], facts["seconds"]
    notes = [
        f"{counts['executions']:,} executions over {DAYS} days across {len(TIERS)} tenants "
        f"(the measured one: {int(size * SHARES[0]):,}), {counts['execution_events']:,} events, "
        f"{counts['ai_usage']:,} AI usage rows; made in "
        + ", ".join(f"{k} {v} s" for k, v in spent.items()),
        f"the first rollup refresh in {len(facts['chunks'])} committed chunks of up to "
        f"{ROLLUP_CHUNK_DAYS} days: " + ", ".join(f"{c} s" for c in facts["chunks"]),
        f"{repeats} repeats per query, in ms, through the services the resolvers call "
        "(answer: buckets, steps, executions or runs counted, forecast days, history days, "
        "tenants ranked, recommendations)",
        f"{os.cpu_count()} cores, Python {platform.python_version()}",
    ]
    return {"scenario": "analytics", "rows": rows, "notes": notes}


if __name__ == "__main__":
    from bench.run import table

    parser = argparse.ArgumentParser(prog="python -m bench.analytics")
    parser.add_argument("size", type=int, nargs="?", default=1_000_000)
    parser.add_argument("admin_db", nargs="?", default=ADMIN_DB)
    parser.add_argument(
        "--only",
        action="append",
        metavar="TEXT",
        help="time only the queries whose name contains TEXT (case-insensitive; repeatable)",
    )
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args()
    result = asyncio.run(
        run(args.size, admin_db=args.admin_db, repeats=args.repeats, only=args.only)
    )
    print(table(result["rows"]))
    for note in result["notes"]:
        print(f"  {note}")
