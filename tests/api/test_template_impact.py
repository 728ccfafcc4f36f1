"""templateImpact over HTTP: one premium tenant runs user-onboarding once with AI applied at its
enhancement point and once with AI switched off; the report splits them into enhanced and
baseline groups, sees nothing of other tenants, and checks its arguments."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.ai.fake_llm import FakeLLMServer
from tests.api.test_ai_api import TEXT
from tests.conftest import make_tenant
from tests.support import GraphQLClient
from tests.workers.test_enhancements import params
from tests.workers.test_template_graph import publish, run

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"
PRIVATE = {
    "name": "impact-private",
    "title": "Private to its owner",
    "steps": [{"id": "noop", "activity": "data.transform", "input": {"data": {}, "ops": []}}],
}


async def q(client: GraphQLClient, name: str, variables: dict[str, Any] | None = None) -> Any:
    return await client.data((OPS / f"{name}.graphql").read_text(), variables)


async def error_code(client: GraphQLClient, variables: dict[str, Any]) -> str:
    body = await client.raw((OPS / "TemplateImpact.graphql").read_text(), variables)
    assert body["data"] is None and body["errors"], body
    return str(body["errors"][0]["extensions"]["code"])


async def onboard(client: GraphQLClient, server: str, key: str, user: str) -> dict[str, Any]:
    """Run user-onboarding to the end; returns its welcome step's one enhancement decision."""
    _, execution = await run(client, server, key, "user-onboarding", params(user))
    assert execution["status"] == "COMPLETED", execution["error"]
    welcome = next(s for s in execution["steps"] if s["id"] == "welcome")
    (point,) = welcome["enhancements"]
    return dict(point)


async def test_enhanced_and_baseline_runs_of_one_tenant(
    server: str, sessions: Any, fake_llm: FakeLLMServer
) -> None:
    keys = await make_tenant(sessions, "premium")
    client = GraphQLClient(server, keys.admin)
    template = (await q(client, "Template", {"name": "user-onboarding"}))["template"]
    since = datetime.now(UTC) - timedelta(minutes=1)

    marker = f"Impact{uuid.uuid4().hex[:6]}"
    fake_llm.fake.rule(contains=marker, json={"text": f"Dear {marker}, welcome aboard (AI)."})
    point = await onboard(client, server, keys.admin, marker)
    assert (point["decision"], point["reason"]) == ("AI", "ENHANCE"), point
    off = await q(client, "UpdateAiSettings", {"input": {"enabled": False}})
    assert off["updateAiSettings"]["enabled"] is False
    point = await onboard(client, server, keys.admin, f"Plain{uuid.uuid4().hex[:6]}")
    assert (point["decision"], point["reason"]) == ("BASELINE", "DISABLED"), point

    window = {
        "templateId": template["id"],
        "from": since.isoformat(),
        "to": (datetime.now(UTC) + timedelta(minutes=1)).isoformat(),
    }
    impact = (await q(client, "TemplateImpact", window))["templateImpact"]
    assert impact["template"] == {"id": template["id"], "name": "user-onboarding"}
    for group in (impact["enhanced"], impact["baseline"]):
        counts = [group[k] for k in ("executions", "completed", "failed", "cancelled")]
        assert counts == [1, 1, 0, 0], group
        assert group["completionRate"] == 1.0
        assert group["medianDurationSeconds"] is not None and group["medianDurationSeconds"] > 0
        assert group["p95DurationSeconds"] is not None
    enhanced, baseline = impact["enhanced"], impact["baseline"]
    assert float(enhanced["aiCostUsd"]) > 0
    assert float(enhanced["avgAiCostUsd"]) == float(enhanced["aiCostUsd"])
    assert float(baseline["aiCostUsd"]) == 0 and float(baseline["avgAiCostUsd"]) == 0

    # Another tenant reads the same public template but none of these runs.
    other = GraphQLClient(server, (await make_tenant(sessions, "premium")).admin)
    empty = (await q(other, "TemplateImpact", window))["templateImpact"]["enhanced"]
    assert (empty["executions"], empty["completionRate"], empty["avgAiCostUsd"]) == (0, None, None)
    assert empty["medianDurationSeconds"] is None and float(empty["aiCostUsd"]) == 0


async def test_model_calls_of_ai_steps_make_a_run_enhanced(server: str, sessions: Any) -> None:
    # document-processing has no enhancement point: its ai.* steps call models directly.
    keys = await make_tenant(sessions, "premium")
    client = GraphQLClient(server, keys.admin)
    template = (await q(client, "Template", {"name": "document-processing"}))["template"]
    since = datetime.now(UTC) - timedelta(minutes=1)
    _, execution = await run(client, server, keys.admin, "document-processing", {"text": TEXT})
    assert execution["status"] == "COMPLETED", execution["error"]
    window = {
        "templateId": template["id"],
        "from": since.isoformat(),
        "to": (datetime.now(UTC) + timedelta(minutes=1)).isoformat(),
    }
    impact = (await q(client, "TemplateImpact", window))["templateImpact"]
    assert (impact["enhanced"]["executions"], impact["baseline"]["executions"]) == (1, 0)
    assert float(impact["enhanced"]["aiCostUsd"]) > 0


async def test_unreadable_template_and_bad_windows_are_errors(server: str, sessions: Any) -> None:
    owner, caller = await make_tenant(sessions, "pro"), await make_tenant(sessions, "pro")
    name = await publish(sessions, owner, PRIVATE)
    owner_client, client = GraphQLClient(server, owner.admin), GraphQLClient(server, caller.admin)
    private_id = (await q(owner_client, "Template", {"name": name}))["template"]["id"]
    now = datetime.now(UTC)
    window = {"from": (now - timedelta(days=1)).isoformat(), "to": now.isoformat()}

    assert (await q(owner_client, "TemplateImpact", {"templateId": private_id, **window}))[
        "templateImpact"
    ]["baseline"]["executions"] == 0
    assert await error_code(client, {"templateId": private_id, **window}) == "NOT_FOUND"
    assert await error_code(client, {"templateId": "bm9wZQ", **window}) == "NOT_FOUND"
    same = {"templateId": private_id, "from": now.isoformat(), "to": now.isoformat()}
    assert await error_code(owner_client, same) == "VALIDATION_FAILED"
    backwards = {"templateId": private_id, "from": window["to"], "to": window["from"]}
    assert await error_code(owner_client, backwards) == "VALIDATION_FAILED"
    too_long = {**window, "templateId": private_id, "from": (now - timedelta(days=367)).isoformat()}
    assert await error_code(owner_client, too_long) == "VALIDATION_FAILED"
