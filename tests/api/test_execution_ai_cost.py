"""Execution.aiCostUsd is the run's stored figure (executions.ai_cost_usd, kept by migration
0022's trigger): for runs with parallel AI steps, a fan-out point per item and failing
providers (baseline fallbacks, cost 0), it equals the sum of the run's aiUsage costs (and of
its ai_usage rows) through startExecution's answer (0 for a fresh run; the run as it is now
when started again with its idempotency key), the executions list, execution(id), node(id)
and the executionsFeed subscription; and a page of executions asking for aiCostUsd reads no
ai_usage row of theirs."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine

from app.ai.fake_llm import FakeLLMServer
from app.embedded.mail import DevMailSink
from app.models import AiUsage
from app.seed import seed_sample_files
from app.settings import Settings
from app.tenants.service import TenantService
from tests.api.test_execution_flow import wait_terminal, ws_url
from tests.conftest import make_tenant
from tests.support import GraphQLClient, Subscription
from tests.workers.test_enhancements import params_for
from tests.workers.test_template_graph import pk

COST = "id status aiCostUsd aiUsage { provider fallbackReason costUsd }"
START = f"""mutation($input: StartExecutionInput!) {{
  startExecution(input: $input) {{ __typename ... on Execution {{ {COST} }} }}
}}"""
LIST = f"query {{ executions(first: 20) {{ edges {{ node {{ {COST} }} }} }} }}"
ONE = f"query($id: ID!) {{ execution(id: $id) {{ {COST} }} }}"
NODE = f"query($id: ID!) {{ node(id: $id) {{ ... on Execution {{ {COST} }} }} }}"
FEED = """subscription { executionsFeed {
  execution { id status aiCostUsd } event { type }
} }"""
COST_ONLY = "query { executions(first: 20) { edges { node { id status aiCostUsd } } } }"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def usage_sum(execution: dict[str, Any]) -> Decimal:
    """What the execution's own aiUsage records add up to."""
    return sum((Decimal(u["costUsd"]) for u in execution["aiUsage"]), Decimal(0))


async def ai_usage_sums(sessions: Any, ids: list[str]) -> dict[str, Decimal]:
    """The sum of each execution's ai_usage rows, read from PostgreSQL (0 without rows)."""
    keys = [uuid.UUID(pk(i)) for i in ids]
    async with sessions() as s:
        rows = await s.execute(
            select(AiUsage.execution_id, func.sum(AiUsage.cost_usd))
            .where(AiUsage.execution_id.in_(keys))
            .group_by(AiUsage.execution_id)
        )
        found = {str(e): c for e, c in rows}
    return {i: found.get(pk(i), Decimal(0)) for i in ids}


@contextmanager
def statements() -> Iterator[list[tuple[str, str]]]:
    """The SQL every engine of this process runs meanwhile (the API runs in-process), each
    with its parameters as text."""
    seen: list[tuple[str, str]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, str(parameters)))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def reads_usage_of(seen: list[tuple[str, str]], ids: list[str]) -> list[str]:
    """The statements that read ai_usage (not its daily rollup) for any of these executions
    (their ids among the parameters): a background job reading other rows does not count."""
    keys = [pk(i) for i in ids]
    return [
        statement
        for statement, parameters in seen
        if re.search(r"\bai_usage\b", statement) and any(k in parameters for k in keys)
    ]


async def feed_costs(sub: Subscription, ids: set[str]) -> dict[str, Decimal]:
    """Each execution's aiCostUsd in the feed item of its terminal event."""
    costs: dict[str, Decimal] = {}
    while not ids <= set(costs):
        msg = await sub.next(timeout=90)
        assert msg["type"] == "next" and "errors" not in msg["payload"], msg
        item = msg["payload"]["data"]["executionsFeed"]
        execution = item["execution"]
        if execution["id"] in ids and item["event"]["type"] in TERMINAL:
            costs[execution["id"]] = Decimal(execution["aiCostUsd"])
    return costs


async def test_ai_cost_of_executions_is_the_sum_of_their_ai_usage(
    server: str,
    sessions: Any,
    settings: Settings,
    fake_llm: FakeLLMServer,
    mail_sink: DevMailSink,
) -> None:
    keys = await make_tenant(sessions, "premium")
    async with sessions() as s:
        tenant = await TenantService(s).get_by_name(keys.name)
    seed_sample_files(settings, str(tenant.id))
    root = settings.files_root / str(tenant.id)
    client = GraphQLClient(server, keys.admin)
    marker = f"Cost{uuid.uuid4().hex[:8]}"
    failing = f"down{uuid.uuid4().hex[:8]}"
    fake_llm.fake.rule(contains=failing, status=500, first=True)
    sub = Subscription(ws_url(server), keys.admin)
    await sub.connect()
    await sub.start(FEED, {})
    await asyncio.sleep(0.5)  # the feed subscribed before the runs start

    # classify, summarise and extract side by side; a point per campaign recipient; every
    # provider failing (baseline fallbacks).
    runs = [
        ("document-processing", marker),
        ("email-campaign", marker),
        ("document-processing", failing),
    ]
    ids, inputs = [], []
    for name, text in runs:
        params = params_for(name, text, root)
        inputs.append({"templateName": name, "params": params, "idempotencyKey": text + name})
        started = await client.data(START, {"input": inputs[-1]})
        execution = started["startExecution"]
        assert execution["__typename"] == "Execution", execution
        assert (Decimal(execution["aiCostUsd"]), execution["aiUsage"]) == (0, [])
        assert execution["aiCostUsd"] == "0.000000"
        ids.append(execution["id"])
    for i in ids:
        assert (await wait_terminal(client, i, timeout=90))["status"] == "COMPLETED"
    try:
        streamed = await feed_costs(sub, set(ids))
    finally:
        await sub.close()

    expected = await ai_usage_sums(sessions, ids)
    doc, mail, down = (expected[i] for i in ids)
    assert doc > 0 and mail > 0 and down == 0

    listed = {e["node"]["id"]: e["node"] for e in (await client.data(LIST))["executions"]["edges"]}
    assert set(listed) == set(ids)
    for i in ids:
        one = (await client.data(ONE, {"id": i}))["execution"]
        node = (await client.data(NODE, {"id": i}))["node"]
        for execution in (listed[i], one, node):
            assert Decimal(execution["aiCostUsd"]) == usage_sum(execution) == expected[i]
        assert streamed[i] == expected[i]
    # Started again with its idempotency key: the run as it is now.
    again = (await client.data(START, {"input": inputs[0]}))["startExecution"]
    assert (again["id"], Decimal(again["aiCostUsd"])) == (ids[0], doc)
    failed_calls = listed[ids[2]]["aiUsage"]
    assert failed_calls and all(u["fallbackReason"] for u in failed_calls)  # providers failed

    # A page asking for aiCostUsd reads the executions only, not their AI calls.
    with statements() as seen:
        page = (await client.data(COST_ONLY))["executions"]["edges"]
    assert {e["node"]["id"]: Decimal(e["node"]["aiCostUsd"]) for e in page} == expected
    assert any("FROM executions" in statement for statement, _ in seen)
    assert reads_usage_of(seen, ids) == []
