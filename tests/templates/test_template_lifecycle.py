"""Draft -> publish -> versions -> deprecate over the real API, param migration between
versions, and diffs. Versions are immutable; running executions keep theirs."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import TenantKeys
from tests.support import GraphQLClient
from tests.templates.template_kit import (
    create,
    deprecate,
    make_spec,
    op,
    publish,
    published,
    start,
    update_draft,
)

EXECUTION = """query($id: ID!) { execution(id: $id) { status params templateVersion result } }"""


async def wait_terminal(client: GraphQLClient, execution_id: str) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            execution = (await client.data(EXECUTION, {"id": execution_id}))["execution"]
            if execution["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                return execution
            await asyncio.sleep(0.2)


async def versions(client: GraphQLClient, template_id: str, a: int = 1, b: int = 1) -> dict:
    data = await client.data(
        op("TemplateVersions"), {"id": template_id, "number": b, "from": a, "to": b}
    )
    return data["template"]


async def test_a_draft_is_not_runnable_until_published(client: GraphQLClient) -> None:
    spec = make_spec()
    created = await create(client, spec)
    assert created["__typename"] == "Template", created
    assert created["latestVersion"] == 0 and created["currentVersion"] is None
    assert created["ownedByViewer"] is True
    assert created["draft"]["name"] == spec["name"]
    assert created["visibility"] == "PRIVATE"

    refused = await start(client, templateId=created["id"], params={"rows": []})
    assert refused["__typename"] == "ConflictError"
    assert "no published version" in refused["message"]

    again = await create(client, make_spec(spec["name"]))
    assert again["__typename"] == "ConflictError"


async def test_create_reports_every_problem(client: GraphQLClient) -> None:
    bad = make_spec("Bad Name", steps=[{"id": "x", "activity": "no.such"}])
    result = await create(client, bad)
    assert result["__typename"] == "ValidationError"
    paths = {p["path"] for p in result["problems"]}
    assert "$.name" in paths


async def test_publish_makes_immutable_versions_and_keeps_the_draft(
    client: GraphQLClient,
) -> None:
    spec = make_spec()
    created = await published(client, spec)
    template_id = created["id"]
    unchanged = await publish(client, template_id)
    assert unchanged["__typename"] == "ConflictError", unchanged

    v2 = make_spec(spec["name"], title="Sort and count rows")
    v2["steps"].append(
        {
            "id": "count",
            "activity": "data.aggregate",
            "input": {"data": "{{ steps.sort }}"},
            "needs": ["sort"],
        }
    )
    v2["steps"][0]["input"]["ops"] = [{"op": "sort", "by": "w"}]
    edited = await update_draft(client, template_id, v2)
    assert edited["__typename"] == "Template" and edited["latestVersion"] == 1
    assert edited["title"] == "Sort rows"  # the catalog shows version 1 until v2 is published
    assert edited["draft"]["title"] == "Sort and count rows"

    done = await publish(client, template_id)
    assert done["latestVersion"] == 2 and done["currentVersion"] == 2
    assert [(v["version"], v["status"]) for v in done["versions"]] == [
        (1, "PUBLISHED"),
        (2, "PUBLISHED"),
    ]
    seen = await versions(client, template_id, 1, 2)
    assert seen["version"]["spec"]["title"] == "Sort and count rows"
    v1 = (
        await client.data(
            op("TemplateVersions"), {"id": template_id, "number": 1, "from": 1, "to": 1}
        )
    )["template"]["version"]
    assert v1["spec"]["title"] == "Sort rows"  # version 1 did not change
    assert v1["spec"]["steps"][0]["input"]["ops"] == [{"op": "sort", "by": "v"}]

    diff = seen["diff"]
    assert diff["addedSteps"] == ["count"]
    assert diff["removedSteps"] == []
    assert diff["changedSteps"] == [{"stepId": "sort", "fields": ["input"]}]
    assert diff["changedFields"] == ["title"]
    assert '-  "title": "Sort rows"' in diff["unified"]
    assert '+  "title": "Sort and count rows"' in diff["unified"]

    details = (await client.data(op("TemplateDetails"), {"id": template_id}))["template"]
    assert details["title"] == "Sort and count rows"
    assert details["draft"]["title"] == "Sort and count rows"  # the next edit starts here
    assert [s["needs"] for s in details["steps"]] == [[], ["sort"]]

    missing = await client.raw(
        op("TemplateVersions"), {"id": template_id, "number": 9, "from": 1, "to": 9}
    )
    assert missing["errors"][0]["extensions"]["code"] == "NOT_FOUND"

    renamed = await update_draft(client, template_id, make_spec("another-name"))
    assert renamed["__typename"] == "ValidationError"
    assert renamed["problems"][0]["path"] == "$.name"


async def test_deprecation_moves_new_starts_and_lets_running_ones_finish(
    client: GraphQLClient,
) -> None:
    spec = make_spec(
        parameters={
            "type": "object",
            "required": ["rows"],
            "properties": {"rows": {"type": "array"}, "hold": {"type": "number"}},
        }
    )
    spec["steps"].insert(
        0, {"id": "hold", "activity": "wait.timer", "input": {"seconds": "{{ params.hold }}"}}
    )
    created = await published(client, spec)
    template_id = created["id"]
    await update_draft(client, template_id, {**spec, "title": "Second"})
    await publish(client, template_id)

    params = {"rows": [{"v": 2}, {"v": 1}], "hold": 0}
    on_v2 = await start(client, templateId=template_id, params=params)
    assert on_v2["templateVersion"] == 2

    after = await deprecate(client, template_id, 2)
    assert after["currentVersion"] == 1 and after["latestVersion"] == 2
    statuses = {v["version"]: (v["status"], v["deprecatedAt"]) for v in after["versions"]}
    assert statuses[2][0] == "DEPRECATED" and statuses[2][1] is not None
    assert statuses[1] == ("PUBLISHED", None)

    running = await start(client, templateId=template_id, params={**params, "hold": 1.5})
    assert running["templateVersion"] == 1
    again = await deprecate(client, template_id, 1)  # while `running` is on version 1
    assert again["currentVersion"] is None

    refused = await start(client, templateId=template_id, params=params)
    assert refused["__typename"] == "ConflictError"
    assert "deprecated" in refused["message"]

    finished = await wait_terminal(client, running["id"])
    assert finished["status"] == "COMPLETED" and finished["templateVersion"] == 1
    assert finished["result"] is None or finished["result"] is not None  # ran to the end
    assert (await wait_terminal(client, on_v2["id"]))["templateVersion"] == 2

    unknown = await deprecate(client, template_id, 7)
    assert unknown["__typename"] == "NotFoundError"


async def test_v1_params_start_v2_through_its_param_migration(client: GraphQLClient) -> None:
    v1 = make_spec()
    created = await published(client, v1)
    template_id = created["id"]

    v2 = make_spec(
        v1["name"],
        parameters={
            "type": "object",
            "required": ["records", "order"],
            "additionalProperties": False,
            "properties": {
                "records": {"type": "array"},
                "order": {"enum": ["asc", "desc"]},
            },
        },
        steps=[
            {
                "id": "sort",
                "activity": "data.transform",
                "input": {"data": "{{ params.records }}", "ops": [{"op": "sort", "by": "v"}]},
            }
        ],
        example_params={"records": [], "order": "asc"},
        param_migration={"rename": {"rows": "records"}, "defaults": {"order": "asc"}},
    )
    assert (await update_draft(client, template_id, v2))["__typename"] == "Template"
    done = await publish(client, template_id)
    assert done["latestVersion"] == 2
    details = (await client.data(op("TemplateDetails"), {"id": template_id}))["template"]
    assert details["draft"]["param_migration"] is None  # it described v1 -> v2 only

    old_params = {"rows": [{"v": 2}, {"v": 1}]}
    guessed = await start(client, templateId=template_id, params=old_params)
    assert guessed["__typename"] == "Execution", guessed
    assert guessed["templateVersion"] == 2
    run = await wait_terminal(client, guessed["id"])
    assert run["params"] == {"records": [{"v": 2}, {"v": 1}], "order": "asc"}
    assert run["status"] == "COMPLETED"
    assert run["result"] == [{"v": 1}, {"v": 2}]

    told = await start(client, templateId=template_id, params=old_params, paramsVersion=1)
    assert told["__typename"] == "Execution"

    wrong = await start(client, templateId=template_id, params=old_params, paramsVersion=2)
    assert wrong["__typename"] == "ValidationError"
    assert {p["path"] for p in wrong["problems"]} >= {"$"}

    fits_nothing = await start(client, templateId=template_id, params={"other": 1})
    assert fits_nothing["__typename"] == "ValidationError"
    messages = " ".join(p["message"] for p in fits_nothing["problems"])
    assert "'records' is a required property" in messages  # the latest version's problems

    out_of_range = await start(client, templateId=template_id, params=old_params, paramsVersion=3)
    assert out_of_range["__typename"] == "ValidationError"
    assert out_of_range["problems"][0]["path"] == "$.paramsVersion"


async def test_version_1_cannot_carry_a_param_migration(client: GraphQLClient) -> None:
    created = await create(client, make_spec(param_migration={"rename": {"a": "b"}}))
    result = await publish(client, created["id"])
    assert result["__typename"] == "ValidationError"
    assert result["problems"][0]["path"] == "$.param_migration"


async def test_validate_template_lists_every_problem(server: str, tenant: TenantKeys) -> None:
    viewer = GraphQLClient(server, tenant.viewer)  # any role may validate
    ok = (await viewer.data(op("ValidateTemplate"), {"spec": make_spec()}))["validateTemplate"]
    assert ok == {"valid": True, "problems": []}
    bad = make_spec()
    bad["steps"] = [
        {"id": "a", "activity": "no.such"},
        {"id": "a", "activity": "data.transform", "input": {"data": "{{ params. }}"}},
    ]
    result = (await viewer.data(op("ValidateTemplate"), {"spec": bad}))["validateTemplate"]
    assert result["valid"] is False
    paths = {p["path"] for p in result["problems"]}
    assert {"$.steps[0].activity", "$.steps[1].id", "$.steps[1].input.data"} <= paths
