"""Every example document in graphql/operations runs against the live API without errors.

Template documents run in tests/templates/test_template_operations.py; the rest run here, and
a new document that neither test runs fails the coverage check below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import TenantKeys
from tests.support import GraphQLClient, Subscription
from tests.templates.test_template_operations import DOCUMENTS as TEMPLATE_DOCUMENTS

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"
HERE = {
    "Viewer",
    "Templates",
    "Template",
    "StartExecution",
    "Execution",
    "Executions",
    "Node",
    "SendExecutionEvent",
    "ExecutionUpdates",
    # run in tests/api/test_ai_api.py
    "AiUsage",
    "AiUsageSummary",
    "AiOverview",
    "SetBudget",
    "UpdateAiSettings",
    "ExecutionAi",
    # run in tests/workers/test_control.py
    "ControlExecution",
    # run in tests/api/test_feeds.py
    "ExecutionsFeed",
    "QueueStatus",
    # run in tests/api/test_template_impact.py
    "TemplateImpact",
    # run in tests/api/test_ai_recommendations.py
    "AiRecommendations",
    # run in tests/api/test_forecasts_api.py
    "CostForecast",
    "TemplateCostEstimate",
    "TenantComparison",
    "CapacityPlan",
    # run in tests/api/test_sla.py
    "SlaReport",
    "SetTemplateSla",
    "ClearTemplateSla",
    # run in tests/api/test_execution_stats.py and tests/api/test_resource_usage.py
    "ExecutionStats",
    "TemplateResourceUsage",
    # run in tests/api/test_api_keys.py and tests/api/test_platform_admin.py
    "ApiKeys",
    "CreateApiKey",
    "RevokeApiKey",
    "Tenants",
    "CreateTenant",
    "SetTenantTier",
    "SuspendTenant",
    # run in tests/api/test_files_api.py
    "UploadFile",
    "Files",
    "File",
    "DeleteFile",
    # run in tests/api/test_notifications.py
    "Notifications",
    "NotificationHistory",
    # run in tests/api/test_webhooks.py
    "CreateWebhook",
    "Webhooks",
    "UpdateWebhook",
    "DeleteWebhook",
    "WebhookDeliveries",
    "RedeliverWebhook",
    # run in tests/plugins/test_plugin_service.py
    "Plugins",
    "SetTenantPlugin",
}


def test_every_document_is_run_by_a_test() -> None:
    documents = {p.stem for p in OPS.glob("*.graphql")}
    assert documents == HERE | TEMPLATE_DOCUMENTS, documents ^ (HERE | TEMPLATE_DOCUMENTS)


async def run(client: GraphQLClient, name: str, variables: dict[str, Any] | None = None) -> Any:
    body = await client.raw((OPS / f"{name}.graphql").read_text(), variables)
    assert not body.get("errors"), (name, body["errors"])
    return body["data"]


async def test_execution_documents_run(
    client: GraphQLClient, server: str, tenant: TenantKeys
) -> None:
    assert (await run(client, "Viewer"))["viewer"]["role"] == "ADMIN"
    page = await run(client, "Templates", {"first": 5})
    assert page["templates"]["edges"]
    template = (await run(client, "Template", {"name": "order-summary"}))["template"]
    params = {**template["exampleParams"], "wait_seconds": 0}
    started = await run(
        client, "StartExecution", {"input": {"templateId": template["id"], "params": params}}
    )
    execution_id = started["startExecution"]["id"]
    sub = Subscription(server.replace("http", "ws") + "/graphql", tenant.admin)
    await sub.connect()
    await sub.start((OPS / "ExecutionUpdates.graphql").read_text(), {"id": execution_id})
    items, final = await sub.collect()
    await sub.close()
    assert final["type"] == "complete" and items
    assert (await run(client, "Execution", {"id": execution_id}))["execution"][
        "status"
    ] == "COMPLETED"
    assert (await run(client, "Node", {"id": execution_id}))["node"]["__typename"] == "Execution"
    listed = await run(client, "Executions", {"first": 5, "filter": {"status": ["COMPLETED"]}})
    assert execution_id in {e["node"]["id"] for e in listed["executions"]["edges"]}
    assert listed["executions"]["totalCount"] >= 1
    sent = await run(
        client, "SendExecutionEvent", {"input": {"executionId": execution_id, "name": "late"}}
    )
    assert sent["sendExecutionEvent"]["code"] == "CONFLICT"  # it has ended: a typed error
