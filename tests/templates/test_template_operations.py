"""Every template example document in graphql/operations runs against the live API without
errors (the schema test only checks that they validate)."""

from __future__ import annotations

from typing import Any

from tests.conftest import TenantKeys, make_tenant
from tests.support import GraphQLClient
from tests.templates.template_kit import OPS, make_spec, op

DOCUMENTS = {
    "CreateTemplate",
    "UpdateTemplateDraft",
    "PublishTemplate",
    "DeprecateTemplateVersion",
    "ShareTemplate",
    "SetTemplateVisibility",
    "ValidateTemplate",
    "SearchTemplates",
    "TemplateVersions",
    "TemplateDetails",
    "AcceptTemplate",
}


async def run(client: GraphQLClient, name: str, variables: dict[str, Any]) -> dict[str, Any]:
    body = await client.raw(op(name), variables)
    assert not body.get("errors"), (name, body["errors"])
    return body["data"]


def payload(data: dict[str, Any]) -> dict[str, Any]:
    (value,) = data.values()
    assert value.get("__typename", "Template") == "Template", value
    return value


async def test_every_template_document_runs(
    server: str,
    tenant: TenantKeys,
    sessions,  # type: ignore[no-untyped-def]
) -> None:
    assert DOCUMENTS <= {p.stem for p in OPS.glob("*.graphql")}
    client = GraphQLClient(server, tenant.admin)
    guest = await make_tenant(sessions)
    spec = make_spec()
    created = payload(await run(client, "CreateTemplate", {"input": {"spec": spec}}))
    template_id = created["id"]
    ran = {"CreateTemplate"}

    async def step(name: str, variables: dict[str, Any]) -> dict[str, Any]:
        ran.add(name)
        return payload(await run(client, name, variables))

    await step("ValidateTemplate", {"spec": spec})
    await step("PublishTemplate", {"input": {"templateId": template_id}})
    await step(
        "UpdateTemplateDraft",
        {"input": {"templateId": template_id, "spec": {**spec, "title": "Second"}}},
    )
    await step("PublishTemplate", {"input": {"templateId": template_id}})
    await step("TemplateVersions", {"id": template_id, "number": 2, "from": 1, "to": 2})
    await step("TemplateDetails", {"id": template_id})
    await step("ShareTemplate", {"input": {"templateId": template_id, "tenantNames": [guest.name]}})
    guest_admin = GraphQLClient(server, guest.admin)
    accepted = payload(
        await run(
            guest_admin, "AcceptTemplate", {"input": {"templateId": template_id, "version": 2}}
        )
    )
    assert accepted["acceptedVersion"] == 2 and accepted["publisher"]["verified"] is False
    ran.add("AcceptTemplate")
    await step(
        "SetTemplateVisibility", {"input": {"templateId": template_id, "visibility": "PRIVATE"}}
    )
    await step("DeprecateTemplateVersion", {"input": {"templateId": template_id, "version": 1}})
    await step(
        "SearchTemplates",
        {"search": "sort rows", "tags": ["test"], "orderBy": "RELEVANCE", "first": 5},
    )
    assert ran == DOCUMENTS
