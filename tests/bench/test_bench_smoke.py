"""Every bench scenario runs end to end at tiny sizes against the test stack (API and worker in
this process, the session's Temporal), so `make bench` keeps working as the code changes.

Asserts what the scenarios themselves check (every execution completed on both sides, every
subscriber saw its execution complete) and that each produced its rows; no figure is judged.
"""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

from temporalio.client import Client

from app.settings import Settings
from bench.harness import Api, Bench
from bench.run import SCENARIOS
from bench.stack import Stack
from tests.conftest import make_tenant

TINY = Namespace(
    rounds=3,
    starts=6,
    clients=3,
    tenants=2,
    executions=3,
    throughput_rounds=1,
    open=4,
    subscribers=4,
    live_executions=2,
    fan_out=[60],  # over the tests' FOR_EACH_BATCH_SIZE (50): two child workflows
    fan_out_ai=False,
    ai_rounds=2,
    filter_executions=2000,
    analytics_executions=2000,
    sla_executions=2000,
    recommendation_ai_rows=2000,
)


async def test_every_scenario_runs_and_completes_everything(
    settings: Settings, sessions, server: str, state_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    tenants = [await make_tenant(sessions, "enterprise") for _ in range(TINY.tenants)]
    keys = {t.name: t.admin for t in tenants}
    keys["demo-enterprise"] = keys.pop(tenants[0].name)  # the name single-tenant scenarios use
    assert settings.database_url and settings.redis_url and settings.temporal_address
    stack = Stack(
        state_dir,
        api_port=settings.api_port,
        api_url=server,
        keys=keys,
        services={
            "database_url": settings.database_url,
            "redis_url": settings.redis_url,
            "temporal_address": settings.temporal_address,
        },
    )
    apis = {name: Api(server, key) for name, key in keys.items()}
    bench = Bench(stack, apis, await Client.connect(settings.temporal_address))
    results = {name: await scenario(bench, TINY) for name, scenario in SCENARIOS.items()}
    for api in apis.values():
        await api.close()

    assert all(result["rows"] for result in results.values()), results
    throughput = [r for r in results["throughput"]["rows"] if "completed/s" in r["metric"]]
    assert [r["metric"] for r in throughput] == ["1-step completed/s", "5-step completed/s"]
    assert all(r["service"] > 0 and r["raw"] > 0 for r in throughput)
    completed = {r["metric"]: r for r in results["concurrency"]["rows"]}["completed of 4"]
    assert (completed["service"], completed["raw"]) == (4, 4)
    live = {r["metric"]: r["service"] for r in results["live_updates"]["rows"]}
    assert live["subscribers that saw COMPLETED, of 4"] == 4
    assert live["live events delivered"] >= 4 * 5  # the wait's end, 3 steps' events, COMPLETED
    (fan_out,) = results["fan_out"]["rows"]
    assert fan_out["children"] == 2
    gateway = {r["metric"] for r in results["ai_gateway"]["rows"]}
    assert any("cache hit" in m for m in gateway) and any("via openai" in m for m in gateway)
    filters = {r["filter"]: r for r in results["execution_filters"]["rows"]}
    assert filters["no filter"]["matches"] == 2000
    assert filters["no filter"]["page rows"] == 20
    timings = {r["query"]: r for r in results["analytics"]["rows"]}
    assert timings["executionStats DAY, 90 days"]["answer"] == 91  # a bucket per day met
    # Every tenant has runs in the last 7 days (2,000 over 90 days): the ranking lists the 10.
    assert timings["platform: tenantComparison, 7 days"]["answer"] == 10
    assert timings["platform: capacityPlan, horizonDays 90"]["answer"] == 90
    assert timings["Template.costEstimate, a page of 20 templates"]["answer"] > 0
    assert timings["slaReport, 31 days, one template"]["answer"] > 0
    assert timings["execution resourceUsage"]["answer"] == 4  # the generated runs' steps
