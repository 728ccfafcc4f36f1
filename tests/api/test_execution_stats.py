"""`executionStats(from, to, groupBy, filter)` over HTTP, checked against a Python computation
over rows written straight into PostgreSQL (a controlled history: creation, start and finish
times, statuses, templates, params and AI usage), for two tenants with the same history, so
another tenant's rows would show in every figure. Each test writes its rows in a period of its
own (a random Monday between 2000 and 2019), so the platform-wide answer sees only them.
"""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from temporalio.client import Client, ScheduleActionStartWorkflow

from app.analytics.service import RollupRefresh, RollupService
from app.analytics.workflow_io import ROLLUP_WORKFLOW, rollup_schedule_id
from app.api.relay import to_global_id
from app.models import AiUsage, Execution, ExecutionRollup, RollupState, Tenant
from app.models.analytics import ALL_TEMPLATES
from app.settings import Settings
from tests.api.test_execution_filters import platform_templates
from tests.api.test_platform_admin import platform_key
from tests.conftest import TenantKeys, make_tenant
from tests.security.test_sec_control import LONG, fill_slots, free_tenant, release
from tests.support import GraphQLClient
from tests.workers.test_control import call, state, until
from tests.workers.test_control import start as start_named

STATS = (
    Path(__file__).resolve().parents[2] / "graphql" / "operations" / "ExecutionStats.graphql"
).read_text()
DAY = timedelta(days=1)
FINISHED = ("COMPLETED", "FAILED", "CANCELLED")


@dataclass
class Run:
    template: int
    status: str
    created: datetime
    seconds: float | None  # start to finish, for finished runs
    region: str = "eu"
    costs: list[tuple[str, Decimal, str | None]] = field(
        default_factory=list
    )  # provider, usd, fallback
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    tier: str | None = None  # the tier the run recorded (None: created before 0019)

    @property
    def enhanced(self) -> bool:
        return any(p != "baseline" and fb is None for p, _, fb in self.costs)


def period() -> datetime:
    """A Monday 00:00 UTC no other test writes executions at."""
    return datetime(2000, 1, 3, tzinfo=UTC) + timedelta(weeks=random.randrange(1000))


def history(t0: datetime, n: int = 120) -> list[Run]:
    """n runs over the 3 weeks from t0 - 1 week, every 4 h 12 min (so each UTC day gets runs at
    different hours), with every status, two templates, two regions and AI usage on some."""
    rng = random.Random(n)
    statuses = ["COMPLETED"] * 5 + ["FAILED", "CANCELLED", "RUNNING"]
    runs = []
    for i in range(n):
        status = statuses[i % len(statuses)]
        costs: list[tuple[str, Decimal, str | None]] = []
        if i % 3 == 0:
            costs.append(("openai", Decimal(rng.randrange(1, 5000)) / 10**6, None))
        if i % 5 == 0:
            costs.append(("baseline", Decimal(0), "BUDGET"))
        runs.append(
            Run(
                template=i % 2,
                status=status,
                created=t0 - timedelta(weeks=1) + i * timedelta(hours=4, minutes=12),
                seconds=round(rng.uniform(0.5, 900), 3) if status in FINISHED else None,
                region="eu" if i % 4 else "us",
                costs=costs,
            )
        )
    return runs


async def write(sessions: Any, tenant: TenantKeys, runs: list[Run]) -> None:
    templates = await platform_templates(sessions)
    async with sessions() as s:
        tenant_id = await s.scalar(select(Tenant.id).where(Tenant.name == tenant.name))
        for run in runs:
            run.id = uuid.uuid4()
            template_id, _, version_id = templates[run.template]
            started = run.created + timedelta(seconds=1)
            s.add(
                Execution(
                    id=run.id,
                    tenant_id=tenant_id,
                    template_id=template_id,
                    template_version_id=version_id,
                    params={"region": run.region},
                    tier=run.tier,
                    status=run.status,
                    progress=0.0,
                    workflow_id=f"exec-{run.id}",
                    # Active rows as test_execution_filters writes them: the worker's loops
                    # leave a claimed row changed "in the future" alone. Rows changed since
                    # the last refresh are what it rolls up again (below).
                    run_id=None if run.status in FINISHED else f"no-such-run-{run.id}",
                    created_at=run.created,
                    updated_at=datetime.now(UTC)
                    if run.status in FINISHED
                    else datetime(2100, 1, 1, tzinfo=UTC),
                    started_at=started,
                    finished_at=started + timedelta(seconds=run.seconds)
                    if run.seconds is not None
                    else None,
                )
            )
        await s.flush()
        for run in runs:
            for provider, cost, fallback in run.costs:
                s.add(
                    AiUsage(
                        tenant_id=tenant_id,
                        execution_id=run.id,
                        task="summarize",
                        provider=provider,
                        model="m" if provider != "baseline" else "baseline",
                        cost_usd=cost,
                        fallback_reason=fallback,
                        outcome="ok",
                        at=run.created + timedelta(seconds=2),
                    )
                )
        await s.commit()
    # Executions are created "now" by the service, after the days the rollup holds; these are
    # created in the past, so their days are rolled up again, as changed ones, right away.
    await refresh(sessions)


def percentile_cont(values: list[float], q: float) -> float | None:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def percentile(values: list[float], q: float) -> float | None:
    """What executionStats answers (docs/analytics.md): percentile_cont over each duration
    replaced by the geometric middle of its bucket [1.1^k, 1.1^(k+1)); within 5% of exact."""
    middles = [1.1 ** (math.floor(math.log(max(v, 0.001), 1.1)) + 0.5) for v in values]
    answer, exact = percentile_cont(middles, q), percentile_cont(values, q)
    if answer is not None and exact is not None:
        assert abs(answer - exact) <= 0.05 * exact
    return answer


def figures(runs: list[Run]) -> dict[str, Any]:
    done = [r for r in runs if r.status in FINISHED]
    seconds = [r.seconds for r in done if r.seconds is not None]
    count = {s: sum(r.status == s for r in runs) for s in FINISHED}
    enhanced = sum(r.enhanced for r in runs)
    return {
        "total": len(runs),
        "completed": count["COMPLETED"],
        "failed": count["FAILED"],
        "cancelled": count["CANCELLED"],
        "successRate": count["COMPLETED"] / len(done) if done else None,
        "durationP50Seconds": percentile(seconds, 0.5),
        "durationP95Seconds": percentile(seconds, 0.95),
        "durationP99Seconds": percentile(seconds, 0.99),
        "aiCostUsd": sum((c for r in runs for _, c, _ in r.costs), Decimal(0)),
        "aiEnhanced": enhanced,
        "aiEnhancedShare": enhanced / len(runs) if runs else None,
    }


def same(got: dict[str, Any], want: dict[str, Any]) -> None:
    for name, value in want.items():
        actual = got[name]
        if value is None or actual is None:
            assert actual == value, (name, got, want)
        elif name == "aiCostUsd":
            assert Decimal(actual) == value, (name, got, want)
        else:
            assert abs(float(actual) - float(value)) < 1e-6, (name, got, want)


def check_buckets(
    buckets: list[dict[str, Any]], runs: list[Run], group: Any, spans: list[tuple[str, Any]]
) -> None:
    """Each bucket's current and previous figures and change, against `runs` in its spans."""
    assert [b["key"] for b in buckets] == [k for k, _ in spans]
    for bucket, (_, member) in zip(buckets, spans, strict=True):
        start, end = (datetime.fromisoformat(bucket[k]) for k in ("start", "end"))
        before = (datetime.fromisoformat(bucket[k]) for k in ("previousStart", "previousEnd"))
        p_start, p_end = before
        now = [r for r in runs if start <= r.created < end and member(r)]
        then = [r for r in runs if p_start <= r.created < p_end and member(r)]
        want_now, want_then = figures(now), figures(then)
        same(bucket["current"], want_now)
        same(bucket["previous"], want_then)
        change = bucket["change"]
        assert change["total"] == len(now) - len(then)
        assert change["totalRatio"] == (len(now) / len(then) if then else None)
        assert Decimal(change["aiCostUsd"]) == want_now["aiCostUsd"] - want_then["aiCostUsd"]
        if want_now["successRate"] is None or want_then["successRate"] is None:
            assert change["successRate"] is None
        else:
            delta = want_now["successRate"] - want_then["successRate"]
            assert abs(change["successRate"] - delta) < 1e-9


async def stats(
    client: GraphQLClient, since: datetime, until: datetime, group: str, **kw: Any
) -> Any:
    variables = {"from": since.isoformat(), "to": until.isoformat(), "groupBy": group, **kw}
    return (await client.data(STATS, variables))["executionStats"]


async def error(client: GraphQLClient, variables: dict[str, Any]) -> str:
    body = await client.raw(STATS, variables)
    assert body["data"] is None and body["errors"], body
    return str(body["errors"][0].get("extensions", {}).get("code"))


async def test_buckets_percentiles_and_trends_match_the_rows(
    server: str, sessions: Any, tenant: TenantKeys, other_tenant: TenantKeys
) -> None:
    t0 = period()
    runs = history(t0)
    await write(sessions, tenant, runs)
    await write(sessions, other_tenant, history(t0))  # the same history for a stranger
    client = GraphQLClient(server, tenant.admin)
    templates = await platform_templates(sessions)
    # From Monday noon: a half first day, compared with Sunday's second half.
    since, until = t0 + timedelta(hours=12), t0 + timedelta(days=6)

    days = await stats(client, since, until, "DAY")
    assert (days["groupBy"], days["truncated"]) == ("DAY", False)
    first = days["buckets"][0]
    assert (first["start"], first["end"]) == (since.isoformat(), (t0 + DAY).isoformat())
    assert first["previousStart"] == (since - DAY).isoformat()
    day_keys = [(t0 + i * DAY).date().isoformat() for i in range(6)]
    check_buckets(days["buckets"], runs, "DAY", [(k, lambda r: True) for k in day_keys])
    assert sum(b["current"]["total"] for b in days["buckets"]) == sum(
        since <= r.created < until for r in runs
    )

    weeks = await stats(client, t0 - timedelta(days=3), until, "WEEK")
    week_keys = [(t0 - timedelta(weeks=1)).date().isoformat(), t0.date().isoformat()]
    check_buckets(weeks["buckets"], runs, "WEEK", [(k, lambda r: True) for k in week_keys])

    # Keyed groups: the window of equal length before `from` is the previous period.
    by_status = await stats(client, since, until, "STATUS")
    window = [r for r in runs if since <= r.created < until]
    order = sorted(
        {r.status for r in window}, key=lambda s: (-sum(r.status == s for r in window), s)
    )
    check_buckets(
        by_status["buckets"], runs, "STATUS", [(s, lambda r, s=s: r.status == s) for s in order]
    )
    by_template = await stats(client, since, until, "TEMPLATE")
    names = {b["key"]: b["templateId"] for b in by_template["buckets"]}
    assert names == {name: to_global_id("Template", tid) for tid, name, _ in templates}
    spans = [
        (b["key"], lambda r, i=[t[1] for t in templates].index(b["key"]): r.template == i)
        for b in by_template["buckets"]
    ]
    check_buckets(by_template["buckets"], runs, "TEMPLATE", spans)
    (tier,) = (await stats(client, since, until, "TIER"))["buckets"]
    check_buckets([tier], runs, "TIER", [("pro", lambda r: True)])

    # The executions filter narrows both periods alike.
    only = {"status": ["FAILED", "COMPLETED"], "paramsContains": {"region": "eu"}}
    filtered = await stats(client, since, until, "DAY", filter=only)

    def matches(r: Run) -> bool:
        return r.status in ("FAILED", "COMPLETED") and r.region == "eu"

    check_buckets(filtered["buckets"], runs, "DAY", [(k, matches) for k in day_keys])
    one = {"templateId": to_global_id("Template", templates[1][0])}
    filtered = await stats(client, since, until, "STATUS", filter=one)
    assert {b["key"] for b in filtered["buckets"]} == {
        r.status for r in runs if r.template == 1 and since - (until - since) <= r.created < until
    }
    assert all(b["current"]["total"] for b in filtered["buckets"])


async def test_the_platform_sees_every_tenant_by_tier_and_no_tenant_data(
    server: str, sessions: Any
) -> None:
    free, premium = await make_tenant(sessions, "free"), await make_tenant(sessions, "premium")
    t0 = period()
    runs_free, runs_premium = history(t0, 60), history(t0, 90)
    await write(sessions, free, runs_free)
    await write(sessions, premium, runs_premium)
    _, secret = await platform_key(sessions)
    platform = GraphQLClient(server, secret)
    since, until = t0, t0 + timedelta(days=7)

    tiers = await stats(platform, since, until, "TIER")
    by_tier = {"premium": runs_premium, "free": runs_free}
    spans = [(b["key"], lambda r: True) for b in tiers["buckets"]]
    assert [k for k, _ in spans] == ["premium", "free"]  # largest first
    for bucket, (key, _) in zip(tiers["buckets"], spans, strict=True):
        check_buckets([bucket], by_tier[key], "TIER", [(key, lambda r: True)])
    days = await stats(platform, since, until, "DAY", filter={"status": ["FAILED"]})
    keys = [(t0 + i * DAY).date().isoformat() for i in range(7)]
    both = runs_free + runs_premium
    check_buckets(days["buckets"], both, "DAY", [(k, lambda r: r.status == "FAILED") for k in keys])

    # A tenant sees its own tier's bucket only, counting its own runs.
    (mine,) = (await stats(GraphQLClient(server, free.admin), since, until, "TIER"))["buckets"]
    check_buckets([mine], runs_free, "TIER", [("free", lambda r: True)])

    # The platform reads no tenant's templates or params.
    window = {"from": since.isoformat(), "to": until.isoformat()}
    assert await error(platform, {**window, "groupBy": "TEMPLATE"}) == "VALIDATION_FAILED"
    for refused in ({"templateName": "user-onboarding"}, {"paramsContains": {"region": "eu"}}):
        variables = {**window, "groupBy": "DAY", "filter": refused}
        assert await error(platform, variables) == "VALIDATION_FAILED"


async def test_bad_windows_groupings_and_filters_are_refused(
    server: str, tenant: TenantKeys
) -> None:
    client = GraphQLClient(server, tenant.admin)
    now = datetime.now(UTC)
    ok = {"from": (now - DAY).isoformat(), "to": now.isoformat(), "groupBy": "DAY"}
    assert len((await client.data(STATS, ok))["executionStats"]["buckets"]) == 2
    refused = [
        {**ok, "to": ok["from"]},  # empty
        {**ok, "from": ok["to"], "to": ok["from"]},  # backwards
        {**ok, "from": (now - timedelta(days=367)).isoformat()},  # past 366 days
        {**ok, "filter": {"startedAfter": ok["from"]}},  # the window is from/to
        {**ok, "filter": {"paramsContains": ["not", "an", "object"]}},
        {**ok, "filter": {"templateName": ""}},
        {**ok, "from": "0001-01-01T00:00:00Z", "to": "0001-01-02T00:00:00Z"},  # no period before
        {**ok, "from": "9999-12-30T00:00:00Z", "to": "9999-12-31T00:00:00Z"},
    ]
    for variables in refused:
        assert await error(client, variables) == "VALIDATION_FAILED", variables
    body = await client.raw(STATS, {**ok, "groupBy": "HOUR"})  # not in the enum
    assert body["errors"] and "HOUR" in body["errors"][0]["message"]
    anonymous = GraphQLClient(server, None)
    assert await error(anonymous, ok) == "UNAUTHENTICATED"


async def refresh(sessions: Any) -> RollupRefresh:
    """What the analytics rollup schedule runs, chunk after chunk until caught up; waits
    while another refresh holds the lock."""
    waits = chunks = 0
    while waits < 100:
        async with sessions() as s:
            done = await RollupService(s).refresh()
            await s.commit()
        if done.more:
            chunks += 1  # the shared database holds runs of years ago: a few dozen at most
            assert chunks < 1000, "the rollup never caught up"
            continue
        if not done.skipped:
            return done
        waits += 1
        await asyncio.sleep(0.1)
    raise AssertionError("the rollup stayed locked")


async def test_the_rollup_answers_as_the_rows_do_and_follows_changes(
    server: str, sessions: Any, tenant: TenantKeys, other_tenant: TenantKeys
) -> None:
    t0 = period()
    runs = history(t0)
    await write(sessions, tenant, runs)  # and rolled up
    await write(sessions, other_tenant, history(t0))
    client = GraphQLClient(server, tenant.admin)
    since, until = t0 + timedelta(hours=12), t0 + timedelta(days=6)
    async with sessions() as s:
        tenant_id = await s.scalar(select(Tenant.id).where(Tenant.name == tenant.name))
        rolled = await s.scalar(
            select(func.sum(ExecutionRollup.runs)).where(
                ExecutionRollup.tenant_id == tenant_id,
                ExecutionRollup.template_id != ALL_TEMPLATES,
            )
        )
        overall = await s.scalar(
            select(func.sum(ExecutionRollup.runs)).where(
                ExecutionRollup.tenant_id == tenant_id,
                ExecutionRollup.template_id == ALL_TEMPLATES,
            )
        )
    # every day of the history is in the rollup, per template and over all of them
    assert rolled == overall == len(runs)

    # The whole days from the rollup (and the half first day from the rows) answer as the rows
    # alone do: paramsContains {} matches every run and is never read from the rollup.
    for group in ("DAY", "WEEK", "TEMPLATE", "STATUS", "TIER"):
        for only in ({}, {"status": ["COMPLETED", "FAILED"]}):
            from_rollup = await stats(client, since, until, group, filter=only)
            from_rows = await stats(
                client, since, until, group, filter={**only, "paramsContains": {}}
            )
            assert from_rollup == from_rows, (group, only)

    # A run changes after it was rolled up (a failed one retried and completed): the next
    # refresh rebuilds its day.
    changed = next(r for r in runs if r.status == "FAILED" and since + DAY <= r.created < until)
    async with sessions() as s:
        await s.execute(
            update(Execution)
            .where(Execution.id == changed.id)
            .values(status="COMPLETED", updated_at=datetime.now(UTC))
        )
        await s.commit()
    changed.status = "COMPLETED"
    await refresh(sessions)
    days = await stats(client, since, until, "DAY")
    keys = [(t0 + i * DAY).date().isoformat() for i in range(6)]
    check_buckets(days["buckets"], runs, "DAY", [(k, lambda r: True) for k in keys])


async def test_the_worker_keeps_a_schedule_that_refreshes_the_rollup(
    server: str, sessions: Any, settings: Settings
) -> None:
    assert settings.temporal_address
    temporal = await Client.connect(settings.temporal_address)
    handle = temporal.get_schedule_handle(rollup_schedule_id(settings.temporal_task_queue))
    described = await handle.describe()
    (interval,) = described.schedule.spec.intervals
    assert interval.every == timedelta(seconds=settings.analytics_rollup_seconds)
    action = described.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert (action.workflow, action.task_queue) == (ROLLUP_WORKFLOW, settings.temporal_task_queue)

    async with sessions() as s:
        state = await s.get(RollupState, 1)
        before = state.refreshed_from if state is not None else None
    await handle.trigger()
    async with asyncio.timeout(60):  # chunk after chunk (each committed) up to today
        while True:
            async with sessions() as s:
                state = await s.get(RollupState, 1)
            fresh = state is not None and state.refreshed_from != before
            if fresh and state.complete_until == datetime.now(UTC).date():
                break
            await asyncio.sleep(0.2)


async def test_tier_grouping_counts_each_run_at_the_tier_it_recorded(
    server: str, sessions: Any
) -> None:
    """A tenant that changed tier: TIER buckets by the tier each run recorded; runs that
    recorded none (created before migration 0019) count at the tenant's tier now, from the
    rollup and from the rows alike, and follow a later tier change."""
    keys = await make_tenant(sessions, "premium")
    t0 = period()
    runs = history(t0, 90)
    for i, run in enumerate(runs):
        run.tier = ("free", "pro", None)[i % 3]
    await write(sessions, keys, runs)  # and rolled up
    client = GraphQLClient(server, keys.admin)
    since, until = t0 + timedelta(hours=12), t0 + timedelta(days=6)

    async def check(now_tier: str) -> None:
        def tier_of(r: Run) -> str:
            return r.tier or now_tier

        window = [r for r in runs if since <= r.created < until]
        order = sorted(
            {tier_of(r) for r in runs if since - (until - since) <= r.created < until},
            key=lambda t: (-sum(tier_of(r) == t for r in window), t),
        )
        spans = [(t, lambda r, t=t: tier_of(r) == t) for t in order]
        from_rollup = await stats(client, since, until, "TIER")
        check_buckets(from_rollup["buckets"], runs, "TIER", spans)
        from_rows = await stats(client, since, until, "TIER", filter={"paramsContains": {}})
        assert from_rows == from_rollup

    await check("premium")
    async with sessions() as s:
        await s.execute(update(Tenant).where(Tenant.name == keys.name).values(tier="enterprise"))
        await s.commit()
    await check("enterprise")


async def test_a_window_up_to_now_counts_ai_usage_as_the_rows_say(
    server: str, sessions: Any
) -> None:
    """Read from the rows, a window near now joins the AI usage recorded since it began (one
    range) instead of probing it per run: same figures as the runs, and as the rollup."""
    keys = await make_tenant(sessions, "pro")
    now = datetime.now(UTC)
    t0 = datetime.combine(now.date(), datetime.min.time(), UTC) - timedelta(days=14)
    runs = [r for r in history(t0) if r.created < now]
    await write(sessions, keys, runs)  # and rolled up
    client = GraphQLClient(server, keys.admin)
    since, until = t0 + timedelta(hours=12), now
    from_rows = await stats(client, since, until, "DAY", filter={"paramsContains": {}})
    day_keys = [(t0 + i * DAY).date().isoformat() for i in range(15)]
    check_buckets(from_rows["buckets"], runs, "DAY", [(k, lambda r: True) for k in day_keys])
    assert sum(b["current"]["aiEnhanced"] for b in from_rows["buckets"]) > 0
    assert await stats(client, since, until, "DAY") == from_rows


async def test_executions_record_the_tier_they_were_created_and_started_at(
    server: str, sessions: Any, settings: Settings
) -> None:
    """Created at the tenant's tier; a queued run started after the tenant moved to another
    tier records the tier it was started at (its priority and limits were that tier's)."""
    keys, client, template = await free_tenant(server, sessions)
    running = await fill_slots(client, template, settings.tier_concurrency["free"])
    queued = await start_named(client, template, LONG)
    assert (await state(client, queued))["status"] == "PENDING"

    async def tiers() -> dict[str, str | None]:
        async with sessions() as s:
            rows = await s.execute(
                select(Execution.id, Execution.tier)
                .join(Tenant, Tenant.id == Execution.tenant_id)
                .where(Tenant.name == keys.name)
            )
            return {to_global_id("Execution", r.id): r.tier for r in rows}

    assert set((await tiers()).values()) == {"free"}
    async with sessions() as s:
        await s.execute(update(Tenant).where(Tenant.name == keys.name).values(tier="pro"))
        await s.commit()
    await call(client, "CancelExecution", {"id": running[0]})  # frees a slot
    await until(client, queued, lambda e: e["status"] == "RUNNING")
    recorded = await tiers()
    await release(client, template)
    assert recorded[queued] == "pro"
    assert [recorded[r] for r in running] == ["free"] * len(running)
