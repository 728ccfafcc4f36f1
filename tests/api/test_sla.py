"""SLAs end to end (docs/analytics.md, "SLAs"): a run over its version's max duration is
notified once (SLA_BREACH, webhook-able, counted in wfs_sla_breaches_total) and a tenant's
override wins; a success rate below target is notified once per crossing; `slaReport` figures
equal a Python computation over the same runs, count no other tenant's runs, and page the
breaching runs; bad targets, windows and callers get typed errors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from app.errors import ValidationFailed
from app.models import Execution, Template, TemplateVersion
from app.sla.service import SlaMonitor
from app.templates.schemas import validate_spec
from app.tenants.service import TenantService
from tests.api.test_webhooks import create, receiver, verified  # noqa: F401 (fixture)
from tests.conftest import TenantKeys, make_tenant
from tests.support import GraphQLClient
from tests.workers.test_template_graph import pk, publish, run

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"

SLOW = {
    "name": "sla-slow",
    "title": "Naps past its SLA",
    "steps": [{"id": "nap", "activity": "wait.timer", "input": {"seconds": 1}}],
    "sla": {"max_duration_seconds": 0.5},
}
FLAKY = {
    "name": "sla-flaky",
    "title": "Sorts rows; mixed types fail",
    "parameters": {
        "type": "object",
        "properties": {"rows": {"type": "array"}},
        "required": ["rows"],
    },
    "steps": [
        {
            "id": "sort",
            "activity": "data.transform",
            "input": {"data": "{{ params.rows }}", "ops": [{"op": "sort", "by": "v"}]},
            "retry": {"max_attempts": 1},
        }
    ],
    "sla": {"min_success_rate": 0.9, "min_runs": 2, "window_seconds": 3600},
}
GOOD, BAD = {"rows": [{"v": 2}, {"v": 1}]}, {"rows": [{"v": 1}, {"v": "a"}]}
REPORTED = {
    "name": "sla-reported",
    "title": "Report figures",
    "steps": [{"id": "noop", "activity": "data.transform", "input": {"data": {}, "ops": []}}],
    "sla": {"max_duration_seconds": 60, "min_success_rate": 0.8, "min_runs": 3},
}
NOTIFICATIONS = """query($types: [NotificationType!]) {
  notifications(first: 50, types: $types) { edges { node { seq type data execution { id } } } }
}"""


async def q(client: GraphQLClient, name: str, variables: dict[str, Any] | None = None) -> Any:
    return await client.data((OPS / f"{name}.graphql").read_text(), variables)


async def breaches(client: GraphQLClient) -> list[dict[str, Any]]:
    data = await client.data(NOTIFICATIONS, {"types": ["SLA_BREACH"]})
    return [e["node"] for e in data["notifications"]["edges"]]


def counted(kind: str) -> float:
    return REGISTRY.get_sample_value("wfs_sla_breaches_total", {"kind": kind}) or 0.0


def window(hours: float = 1) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "from": (now - timedelta(hours=hours)).isoformat(),
        "to": (now + timedelta(minutes=1)).isoformat(),
    }


async def report(client: GraphQLClient, template_id: str | None, **more: Any) -> dict[str, Any]:
    variables = {**window(more.pop("hours", 1)), "templateId": template_id, **more}
    (found,) = (await q(client, "SlaReport", variables))["slaReport"]["templates"]
    return dict(found)


async def test_duration_breach_is_notified_once_and_an_override_wins(
    client: GraphQLClient,
    server: str,
    tenant: TenantKeys,
    sessions: Any,
    receiver: Any,  # noqa: F811
) -> None:
    name = await publish(sessions, tenant, SLOW)
    template_id = (await q(client, "Template", {"name": name}))["template"]["id"]
    before = counted("DURATION")
    endpoint = receiver()
    hook = await create(client, endpoint.url, ["SLA_BREACH"])

    _, slow = await run(client, server, tenant.admin, name, {})
    assert slow["status"] == "COMPLETED"
    # The worker's sweep may have seen it open past 0.5 s first: one breach either way.
    (breach,) = await breaches(client)
    assert breach["execution"]["id"] == slow["id"]
    data = breach["data"]
    assert (data["kind"], data["source"], data["templateId"]) == (
        "DURATION",
        "VERSION",
        template_id,
    )
    assert data["maxDurationSeconds"] == 0.5 and data["durationSeconds"] > 0.5
    assert counted("DURATION") - before == 1
    # The same breach reaches the tenant's webhook as `sla.breach`.
    [request] = await endpoint.wait_for(1)
    body = verified(hook["secret"], request)
    assert body["type"] == "sla.breach" and body["data"]["executionId"] == slow["id"]
    assert (body["data"]["kind"], body["data"]["seq"]) == ("DURATION", breach["seq"])
    # The run is recorded: never notified again.
    await SlaMonitor(sessions, None).run_round(wait=True)
    assert len(await breaches(client)) == 1 and counted("DURATION") - before == 1

    found = await report(client, template_id)
    assert found["target"]["source"] == "VERSION"
    assert (found["runs"], found["durationMeasured"], found["durationBreached"]) == (1, 1, 1)
    assert found["attainment"] == 0.0
    assert [e["node"]["id"] for e in found["breaches"]["edges"]] == [slow["id"]]

    # The tenant's override replaces the version's block: a minute is plenty.
    override = {"templateId": template_id, "input": {"maxDurationSeconds": 60}}
    answer = (await q(client, "SetTemplateSla", override))["setTemplateSla"]
    assert answer["__typename"] == "TemplateSla", answer
    assert answer["target"] == {
        "maxDurationSeconds": 60.0,
        "minSuccessRate": None,
        "windowSeconds": 86400,
        "minRuns": 10,
        "source": "OVERRIDE",
    }
    _, calm = await run(client, server, tenant.admin, name, {})
    assert calm["status"] == "COMPLETED"
    await SlaMonitor(sessions, None).run_round(wait=True)
    assert len(await breaches(client)) == 1 and counted("DURATION") - before == 1
    assert len(endpoint.requests) == 1
    # The report judges every run by the targets in force now: both are within a minute.
    found = await report(client, template_id)
    assert found["target"]["source"] == "OVERRIDE"
    assert (found["runs"], found["durationMeasured"], found["durationBreached"]) == (2, 2, 0)
    assert found["attainment"] == 1.0 and found["breaches"]["edges"] == []

    cleared = await q(client, "ClearTemplateSla", {"templateId": template_id})
    assert cleared["clearTemplateSla"]["target"]["source"] == "VERSION"
    assert (await report(client, template_id))["durationBreached"] == 2


async def test_success_rate_breach_is_notified_once_per_crossing(
    client: GraphQLClient, server: str, tenant: TenantKeys, sessions: Any
) -> None:
    name = await publish(sessions, tenant, FLAKY)
    template_id = (await q(client, "Template", {"name": name}))["template"]["id"]
    monitor = SlaMonitor(sessions, None)
    before = counted("SUCCESS_RATE")
    outcomes = [
        (await run(client, server, tenant.admin, name, p))[1]["status"] for p in (GOOD, BAD)
    ]
    assert outcomes == ["COMPLETED", "FAILED"]

    await monitor.run_round(wait=True)
    await monitor.run_round(wait=True)  # still below target: nothing new
    (breach,) = await breaches(client)
    assert breach["execution"] is None
    assert breach["data"] == {
        "kind": "SUCCESS_RATE",
        "templateId": template_id,
        "source": "VERSION",
        "minSuccessRate": 0.9,
        "successRate": 0.5,
        "runs": 2,
        "failed": 1,
        "windowSeconds": 3600,
    }
    assert counted("SUCCESS_RATE") - before == 1
    found = await report(client, template_id)
    assert (found["successRate"], found["successRateMet"]) == (0.5, False)
    (period,) = found["successRateBreaches"]
    assert period["endedAt"] is None and period["successRate"] == 0.5

    # Back on target (a lower minimum): the breach ends; below again: a second crossing.
    lower = {"minSuccessRate": 0.5, "minRuns": 2, "windowSeconds": 3600}
    await q(client, "SetTemplateSla", {"templateId": template_id, "input": lower})
    await monitor.run_round(wait=True)
    assert len(await breaches(client)) == 1
    (period,) = (await report(client, template_id))["successRateBreaches"]
    assert period["endedAt"] is not None
    assert (await report(client, template_id))["successRateMet"] is True
    _, third = await run(client, server, tenant.admin, name, BAD)
    assert third["status"] == "FAILED"
    await monitor.run_round(wait=True)
    await monitor.run_round(wait=True)
    second, first = await breaches(client)  # newest first
    assert first == breach and second["data"]["source"] == "OVERRIDE"
    assert second["data"]["successRate"] == pytest.approx(1 / 3, abs=1e-6)
    assert counted("SUCCESS_RATE") - before == 2
    assert [
        p["endedAt"] is None for p in (await report(client, template_id))["successRateBreaches"]
    ] == [True, False]


def expected(
    rows: list[tuple[str, float, float | None]], limit: float, minimum: float
) -> dict[str, Any]:
    """The report's figures computed in Python from (status, age, duration) rows."""
    terminal = {"COMPLETED", "FAILED", "CANCELLED"}
    measured = [r for r in rows if r[0] in terminal or r[1] > limit]
    breached = [r for r in measured if (r[2] if r[0] in terminal else r[1]) > limit]
    completed = sum(r[0] == "COMPLETED" for r in rows)
    failed = sum(r[0] == "FAILED" for r in rows)
    return {
        "runs": len(rows),
        "completed": completed,
        "failed": failed,
        "cancelled": sum(r[0] == "CANCELLED" for r in rows),
        "durationMeasured": len(measured),
        "durationBreached": len(breached),
        "attainment": pytest.approx((len(measured) - len(breached)) / len(measured)),
        "successRate": pytest.approx(completed / (completed + failed)),
        "successRateMet": completed / (completed + failed) >= minimum,
    }


# (status, seconds since created, seconds from created to finished)
ROWS_A: list[tuple[str, float, float | None]] = [
    ("COMPLETED", 3600, 30),
    ("COMPLETED", 3500, 90),
    ("FAILED", 3400, 10),
    ("FAILED", 3300, 200),
    ("CANCELLED", 3200, 70),
    ("CANCELLED", 3100, 5),
    ("RUNNING", 3000, None),  # open past any target here
    ("RUNNING", 1, None),  # open, within target: not measured yet
]
# Another tenant's runs of the same template: counted with A's, A's success rate would be
# 12 / 15 = 0.8, on target; alone, A's is 0.5 and B's 10 / 11.
ROWS_B: list[tuple[str, float, float | None]] = [
    ("FAILED", 600, 500),
    ("RUNNING", 900, None),
    *[("COMPLETED", 1000 + i, 5) for i in range(10)],
]


async def seed(sessions: Any, tenant: TenantKeys, template: str, rows: Any) -> list[uuid.UUID]:
    """Executions with chosen statuses and durations, written as the recorder leaves them.
    updated_at ahead keeps the reconciler (which finishes quiet RUNNING rows whose workflow
    Temporal does not know) away from them."""
    now = datetime.now(UTC)
    async with sessions() as session:
        owner = await TenantService(session).get_by_name(tenant.name)
        found = await session.execute(
            select(Template.id, TemplateVersion.id)
            .join(TemplateVersion, TemplateVersion.template_id == Template.id)
            .where(Template.name == template)
        )
        template_id, version_id = found.one()
        ids = []
        for status, age, duration in rows:
            created = now - timedelta(seconds=age)
            execution = Execution(
                tenant_id=owner.id,
                template_id=template_id,
                template_version_id=version_id,
                params={},
                status=status,
                workflow_id=f"sla-seed-{uuid.uuid4()}",
                created_at=created,
                started_at=created,
                finished_at=None if duration is None else created + timedelta(seconds=duration),
                updated_at=now + timedelta(days=1),
            )
            session.add(execution)
            await session.flush()
            ids.append(execution.id)
        await session.commit()
    return ids


async def test_report_figures_isolation_and_paging(
    client: GraphQLClient, server: str, tenant: TenantKeys, sessions: Any
) -> None:
    name = await publish(sessions, tenant, REPORTED)
    template_id = (await q(client, "Template", {"name": name}))["template"]["id"]
    other = await make_tenant(sessions, "pro")
    other_client = GraphQLClient(server, other.admin)
    ids = await seed(sessions, tenant, name, ROWS_A)
    await seed(sessions, tenant, name, [("COMPLETED", 3 * 86400, 500)])  # before the window
    await seed(sessions, other, name, ROWS_B)

    found = await report(client, None, hours=24)  # every template with targets: this one
    assert found["template"] == {"id": template_id, "name": name}
    assert found["target"] == {
        "maxDurationSeconds": 60.0,
        "minSuccessRate": 0.8,
        "windowSeconds": 86400,
        "minRuns": 3,
        "source": "VERSION",
    }
    figures = {k: found[k] for k in expected(ROWS_A, 60, 0.8)}
    assert figures == expected(ROWS_A, 60, 0.8)

    # The SLA round judges each tenant's runs alone, and records the runs open past target.
    await SlaMonitor(sessions, None).run_round(wait=True)
    mine = {
        (b["data"]["kind"], b["execution"] and pk(b["execution"]["id"])): b["data"]
        for b in await breaches(client)
    }
    assert mine[("SUCCESS_RATE", None)]["successRate"] == 0.5
    assert (mine[("SUCCESS_RATE", None)]["runs"], mine[("SUCCESS_RATE", None)]["failed"]) == (4, 2)
    assert mine[("DURATION", str(ids[6]))]["status"] == "RUNNING"  # swept while open
    assert len(mine) == 2  # the young open run is within target
    other_kinds = sorted(b["data"]["kind"] for b in await breaches(other_client))
    assert other_kinds == ["DURATION"]  # its open run; its rate is on target

    # Breaching runs, newest first, two pages.
    breached = [ids[i] for i in (6, 4, 3, 1)]
    first = await report(client, template_id, hours=24, first=3)
    edges = first["breaches"]["edges"]
    assert [pk(e["node"]["id"]) for e in edges] == [str(i) for i in breached[:3]]
    assert first["breaches"]["pageInfo"]["hasNextPage"] is True
    after = first["breaches"]["pageInfo"]["endCursor"]
    rest = await report(client, template_id, hours=24, first=3, after=after)
    assert [pk(e["node"]["id"]) for e in rest["breaches"]["edges"]] == [str(breached[3])]
    assert rest["breaches"]["pageInfo"]["hasNextPage"] is False

    # The other tenant's override changes nothing here; this tenant's does.
    override = {"maxDurationSeconds": 100, "minSuccessRate": 0.5, "minRuns": 3}
    answer = await q(other_client, "SetTemplateSla", {"templateId": template_id, "input": override})
    assert answer["setTemplateSla"]["code"] == "NOT_FOUND"  # a private template of another
    await q(client, "SetTemplateSla", {"templateId": template_id, "input": override})
    found = await report(client, template_id, hours=24)
    assert {k: found[k] for k in expected(ROWS_A, 100, 0.5)} == expected(ROWS_A, 100, 0.5)
    assert found["target"]["source"] == "OVERRIDE"

    # The other tenant never sees this tenant's runs, nor this template by id.
    body = await other_client.raw(
        (OPS / "SlaReport.graphql").read_text(), {**window(24), "templateId": template_id}
    )
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    # Nor in its report, though it has runs of it: a template it cannot read is not shown.
    theirs = (await q(other_client, "SlaReport", window(24)))["slaReport"]["templates"]
    assert theirs == []
    # Shared with it: its own runs only.
    share = {"templateId": template_id, "tenantNames": [other.name], "revoke": False}
    await q(client, "ShareTemplate", {"input": share})
    theirs = (await q(other_client, "SlaReport", window(24)))["slaReport"]["templates"]
    assert [(t["runs"], t["durationBreached"]) for t in theirs] == [(12, 2)]


async def test_bad_targets_windows_and_callers_are_typed_errors(
    client: GraphQLClient, server: str, tenant: TenantKeys, sessions: Any
) -> None:
    name = await publish(sessions, tenant, REPORTED)
    template_id = (await q(client, "Template", {"name": name}))["template"]["id"]

    async def set_sla(who: GraphQLClient, target: str, sla: dict[str, Any]) -> dict[str, Any]:
        answer = await q(who, "SetTemplateSla", {"templateId": target, "input": sla})
        return dict(answer["setTemplateSla"])

    for bad, path in [
        ({"minSuccessRate": 1.5}, "$.min_success_rate"),
        ({"maxDurationSeconds": 0}, "$.max_duration_seconds"),
        ({"maxDurationSeconds": 10, "windowSeconds": 10}, "$.window_seconds"),
        ({"maxDurationSeconds": 10, "minRuns": 0}, "$.min_runs"),
        ({"maxDurationSeconds": 31 * 86400}, "$.max_duration_seconds"),
        ({}, "$"),
    ]:
        answer = await set_sla(client, template_id, bad)
        assert answer["code"] == "VALIDATION_FAILED", (bad, answer)
        assert path in [p["path"] for p in answer["problems"]], (bad, answer)
    # Setting again replaces the override whole: no field is kept from the previous one.
    assert (await set_sla(client, template_id, {"maxDurationSeconds": 10}))["target"][
        "maxDurationSeconds"
    ] == 10.0
    again = await set_sla(client, template_id, {"minSuccessRate": 0.7})
    assert again["target"] == {
        "maxDurationSeconds": None,
        "minSuccessRate": 0.7,
        "windowSeconds": 86400,
        "minRuns": 10,
        "source": "OVERRIDE",
    }
    viewer = GraphQLClient(server, tenant.viewer)
    assert (await set_sla(viewer, template_id, {"minSuccessRate": 0.5}))["code"] == "FORBIDDEN"
    cleared = await q(viewer, "ClearTemplateSla", {"templateId": template_id})
    assert cleared["clearTemplateSla"]["code"] == "FORBIDDEN"
    assert (await set_sla(client, "bm9wZQ", {"minSuccessRate": 0.5}))["code"] == "NOT_FOUND"

    now = datetime.now(UTC)
    for bad_window in [
        {"from": now.isoformat(), "to": now.isoformat()},
        {"from": (now - timedelta(days=367)).isoformat(), "to": now.isoformat()},
    ]:
        body = await client.raw((OPS / "SlaReport.graphql").read_text(), bad_window)
        assert body["errors"][0]["extensions"]["code"] == "VALIDATION_FAILED", body
    body = await client.raw(
        (OPS / "SlaReport.graphql").read_text(),
        {**window(), "templateId": template_id, "first": 1000},
    )
    assert body["errors"][0]["extensions"]["code"] == "VALIDATION_FAILED", body
    body = await client.raw(
        (OPS / "SlaReport.graphql").read_text(),
        {**window(), "templateId": template_id, "after": "bm9wZQ"},
    )
    assert body["errors"][0]["extensions"]["code"] == "VALIDATION_FAILED", body

    # A spec's block is bounded the same way, with the spec's paths.
    with pytest.raises(ValidationFailed) as failed:
        validate_spec({**REPORTED, "sla": {"min_success_rate": -1, "extra": 1}})
    paths = {p["path"] for p in failed.value.details}
    assert {"$.sla.min_success_rate", "$.sla.extra"} <= paths, paths
    with pytest.raises(ValidationFailed):
        validate_spec({**REPORTED, "sla": {"window_seconds": 600}})  # no target
