"""Each execution keeps its AI usage summed on its row (executions.ai_cost_usd and
ai_answered_calls, kept by the ai_usage_add_to_run trigger of migration 0022): after real runs
with parallel AI steps, a fan-out point per item and failing providers, the figures equal the
sums of the run's ai_usage rows, and executionStats (which reads them) reports the same. Under
concurrent usage inserts of one run while its recorder changes the row, nothing is lost,
nothing deadlocks and neither writer undoes the other."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, case, func, insert, select

from app.ai.fake_llm import FakeLLMServer
from app.ai.repository import AiRepository
from app.db import make_engine, make_sessionmaker
from app.embedded.mail import DevMailSink
from app.executions.repository import ExecutionRepository
from app.models import AiUsage, Execution, Tenant
from app.settings import Settings
from app.tenants.service import TenantService
from tests.api.test_execution_stats import Run, stats, write
from tests.conftest import make_tenant
from tests.support import GraphQLClient
from tests.workers.test_enhancements import run_template
from tests.workers.test_template_graph import pk

ANSWERED = and_(AiUsage.provider != "baseline", AiUsage.fallback_reason.is_(None))


async def stored_and_summed(sessions: Any, ids: list[uuid.UUID]) -> list[tuple[Any, ...]]:
    """Per execution: (stored cost, stored answered calls, usage cost, usage answered calls)."""
    usage = (
        select(
            func.sum(AiUsage.cost_usd).label("cost"),
            func.count().filter(ANSWERED).label("answered"),
            func.count().label("rows"),
        )
        .where(AiUsage.execution_id == Execution.id)
        .lateral("usage")
    )
    query = (
        select(
            Execution.ai_cost_usd,
            Execution.ai_answered_calls,
            usage.c.cost,
            case((usage.c.rows > 0, usage.c.answered)),
        )
        .join(usage, Execution.id == Execution.id)
        .where(Execution.id.in_(ids))
        .order_by(Execution.created_at)
    )
    async with sessions() as s:
        return [tuple(r) for r in await s.execute(query)]


async def test_runs_with_ai_steps_keep_their_usage_summed_on_the_row(
    server: str,
    sessions: Any,
    settings: Settings,
    fake_llm: FakeLLMServer,
    mail_sink: DevMailSink,
) -> None:
    marker = f"Cost{uuid.uuid4().hex[:8]}"
    failing = f"down{uuid.uuid4().hex[:8]}"
    fake_llm.fake.rule(contains=failing, status=500, first=True)
    # classify, summarise and extract run side by side (three AI steps of one run at once);
    # the campaign personalises each recipient (a point per fan-out item); the failing one
    # records baseline fallbacks only.
    runs = [
        await run_template(server, sessions, settings, "premium", "document-processing", marker),
        await run_template(server, sessions, settings, "premium", "email-campaign", marker),
        await run_template(
            server, sessions, settings, "enterprise", "document-processing", failing
        ),
    ]
    ids = [uuid.UUID(pk(r["execution"]["id"])) for r in runs]
    figures = await stored_and_summed(sessions, ids)
    for cost, answered, usage_cost, usage_answered in figures:
        assert (cost, answered) == (usage_cost, usage_answered)
    (doc, doc_answered, *_), (mail, mail_answered, *_), (down, down_answered, *_) = figures
    assert doc_answered == 3 and doc > 0
    assert mail_answered >= 2 and mail > 0  # at least one call per recipient
    assert (down, down_answered) == (0, 0)  # usage rows, none answered by a model
    for run, (cost, *_) in zip(runs, figures, strict=True):
        assert Decimal(run["execution"]["aiCostUsd"]) == cost  # what the run's own view says

    # executionStats reads them (run_template makes a tenant per run): the first run's.
    key = await admin_key(sessions, ids[0])
    now = datetime.now(UTC)
    found = await stats(
        GraphQLClient(server, key),
        now - timedelta(hours=1),
        now,
        "STATUS",
        filter={"paramsContains": {}},
    )
    (bucket,) = found["buckets"]
    assert Decimal(bucket["current"]["aiCostUsd"]) == doc
    assert (bucket["key"], bucket["current"]["aiEnhanced"]) == ("COMPLETED", 1)


async def admin_key(sessions: Any, execution_id: uuid.UUID) -> str:
    """A new admin key of the execution's tenant (run_template keeps its own)."""
    async with sessions() as s:
        tenant = await s.scalar(
            select(Tenant)
            .join(Execution, Execution.tenant_id == Tenant.id)
            .where(Execution.id == execution_id)
        )
        assert tenant is not None
        key = (await TenantService(s).create_api_key(tenant, role="admin"))[1]
        await s.commit()
    return key


def usage_row(tenant_id: uuid.UUID, execution_id: uuid.UUID | None, i: int) -> dict[str, Any]:
    """The i-th usage row of the concurrency test: a paid answer, a budget fallback on the
    baseline or a model's output that failed validation, in turn."""
    kind = i % 3
    return {
        "tenant_id": tenant_id,
        "execution_id": execution_id,
        "step_id": f"step{i % 4}",
        "task": "summarize",
        "provider": "baseline" if kind == 1 else "openai",
        "model": "baseline" if kind == 1 else "gpt-x",
        "cost_usd": Decimal(0) if kind == 1 else Decimal(i + 1) / 10**6,
        "fallback_reason": {1: "BUDGET", 2: "INVALID_OUTPUT"}.get(kind),
        "outcome": "OK" if kind == 0 else "FALLBACK",
        "at": datetime.now(UTC),
    }


async def test_concurrent_usage_of_a_run_adds_up_while_its_recorder_writes(
    sessions: Any, settings: Settings
) -> None:
    """Parallel AI calls of two runs record usage (one row per call, as the gateway does, and
    bulk statements spanning both runs in either order) while each run's recorder locks and
    updates its row (status, progress) and finally cancels it: every row is added once, no
    deadlock, and the recorder's writes and the trigger's leave each other's columns alone."""
    keys = await make_tenant(sessions, "pro")
    runs = [Run(0, "RUNNING", datetime.now(UTC), None), Run(1, "RUNNING", datetime.now(UTC), None)]
    await write(sessions, keys, runs)
    ids = [r.id for r in runs]
    async with sessions() as s:
        tenant_id = await s.scalar(select(Execution.tenant_id).where(Execution.id == ids[0]))
    assert settings.database_url
    engine = make_engine(settings.database_url, pool_size=10)
    own = make_sessionmaker(engine)

    async def one_call(i: int) -> None:
        async with own() as s:
            await AiRepository(s).add_usage(AiUsage(**usage_row(tenant_id, ids[i % 2], i)))
            await s.commit()

    async def bulk(i: int) -> None:
        """One INSERT of rows of both runs (either order first). Its statement trigger locks
        them in id order; a transaction of several usage INSERTs would lock statement by
        statement, and deadlocks with another one in any order (ai_usage_daily's trigger,
        0017, as much as this one): the writers insert one row per transaction."""
        order = ids if i % 2 else ids[::-1]
        rows = [usage_row(tenant_id, order[k % 2], 1000 + 10 * i + k) for k in range(6)]
        async with own() as s:
            await s.execute(insert(AiUsage).values(rows))
            await s.commit()

    async def recorder(execution_id: uuid.UUID) -> None:
        for step in range(12):
            async with own() as s:
                execution = await ExecutionRepository(s).lock(execution_id)
                assert execution is not None
                execution.progress = float(step)
                execution.status = "CANCELLED" if step == 11 else "RUNNING"
                await asyncio.sleep(0.01)  # holding the row while usage comes in
                await s.commit()

    try:
        done = await asyncio.gather(
            *(one_call(i) for i in range(40)),
            *(bulk(i) for i in range(6)),
            *(recorder(x) for x in ids),
            return_exceptions=True,
        )
    finally:
        await engine.dispose()
    assert [e for e in done if e is not None] == []
    figures = await stored_and_summed(sessions, ids)
    for cost, answered, usage_cost, usage_answered in figures:
        assert (cost, answered) == (usage_cost, usage_answered)
        assert answered > 0
    async with sessions() as s:
        rows = await s.execute(
            select(Execution.status, Execution.progress).where(Execution.id.in_(ids))
        )
        assert {tuple(r) for r in rows} == {("CANCELLED", 11.0)}
        count = await s.scalar(select(func.count()).where(AiUsage.execution_id.in_(ids)))
    assert count == 40 + 6 * 6
