"""Who may read, run, author and share which template, over HTTP: every role against every
kind of visibility. A template the caller cannot read is NOT_FOUND, exactly like a template
that does not exist."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from app.api.relay import to_global_id
from tests.conftest import TenantKeys, make_tenant
from tests.support import GraphQLClient
from tests.templates.template_kit import make_spec, op, published, share

ROLES = ("viewer", "operator", "admin")
KINDS = ("own_private", "others_private", "shared_with_me", "shared_not_with_me", "public")
OK, FORBIDDEN, NOT_FOUND = "OK", "FORBIDDEN", "NOT_FOUND"
READABLE = {"own_private", "shared_with_me", "public"}
PARAMS = {"rows": [{"v": 1}]}
PUBLIC_PARAMS = {
    "customer": "Ada",
    "items": [{"sku": "a", "qty": 1, "price": 1}],
    "wait_seconds": 0,
}


def expected(role: str, kind: str, operation: str) -> str:
    if kind not in READABLE:
        # startExecution checks the role before it looks for the template, so a viewer is
        # FORBIDDEN for any id at all (which tells it nothing about the template).
        return FORBIDDEN if operation == "run" and role == "viewer" else NOT_FOUND
    if operation == "read":
        return OK
    if operation == "run":
        return FORBIDDEN if role == "viewer" else OK
    # author and share: the owner tenant's admins only
    return OK if role == "admin" and kind == "own_private" else FORBIDDEN


@dataclass
class World:
    server: str
    me: TenantKeys
    third: TenantKeys
    ids: dict[str, str]
    specs: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
async def world(server: str, sessions) -> World:  # type: ignore[no-untyped-def]
    me, other, third = [await make_tenant(sessions) for _ in range(3)]
    mine, theirs = GraphQLClient(server, me.admin), GraphQLClient(server, other.admin)
    specs = {kind: make_spec() for kind in KINDS if kind != "public"}
    ids = {"own_private": (await published(mine, specs["own_private"]))["id"]}
    ids["others_private"] = (await published(theirs, specs["others_private"]))["id"]
    for kind, who in (("shared_with_me", me), ("shared_not_with_me", third)):
        ids[kind] = (await published(theirs, specs[kind]))["id"]
        shared = await share(theirs, ids[kind], [who.name])
        assert shared["visibility"] == "SHARED", shared
    ids["public"] = (await mine.data(op("Template"), {"name": "order-summary"}))["template"]["id"]
    specs["public"] = make_spec("order-summary")
    return World(server, me, third, ids, specs)


def outcome(result: dict[str, Any]) -> str:
    if result["__typename"] in ("Template", "Execution"):
        return OK
    return str(result["code"])


async def attempt(world: World, role: str, kind: str, operation: str) -> str:
    client = GraphQLClient(world.server, getattr(world.me, role))
    template_id = world.ids[kind]
    if operation == "read":
        body = await client.raw(op("TemplateDetails"), {"id": template_id})
        if body.get("errors"):
            return str(body["errors"][0]["extensions"]["code"])
        assert body["data"]["template"]["id"] == template_id
        return OK
    if operation == "run":
        params = PUBLIC_PARAMS if kind == "public" else PARAMS
        data = await client.data(
            op("StartExecution"), {"input": {"templateId": template_id, "params": params}}
        )
        return outcome(data["startExecution"])
    if operation == "author":
        data = await client.data(
            op("UpdateTemplateDraft"),
            {"input": {"templateId": template_id, "spec": world.specs[kind]}},
        )
        return outcome(data["updateTemplateDraft"])
    data = await client.data(
        op("ShareTemplate"),
        {"input": {"templateId": template_id, "tenantNames": [world.third.name]}},
    )
    return outcome(data["shareTemplate"])


@pytest.mark.parametrize("operation", ["read", "run", "author", "share"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("role", ROLES)
async def test_permission_matrix(world: World, role: str, kind: str, operation: str) -> None:
    assert await attempt(world, role, kind, operation) == expected(role, kind, operation)


async def test_a_viewer_is_refused_a_start_whether_or_not_the_template_exists(
    world: World,
) -> None:
    viewer = GraphQLClient(world.server, world.me.viewer)
    ghost = to_global_id("Template", uuid.uuid4())
    data = await viewer.data(op("StartExecution"), {"input": {"templateId": ghost, "params": {}}})
    assert data["startExecution"]["code"] == FORBIDDEN


async def test_creating_needs_an_admin(world: World) -> None:
    for role in ("viewer", "operator"):
        client = GraphQLClient(world.server, getattr(world.me, role))
        data = await client.data(op("CreateTemplate"), {"input": {"spec": make_spec()}})
        assert data["createTemplate"]["code"] == FORBIDDEN


async def test_only_readable_templates_are_listed(world: World) -> None:
    client = GraphQLClient(world.server, world.me.viewer)
    data = await client.data(op("SearchTemplates"), {"first": 100, "tags": ["test"]})
    listed = {e["node"]["id"] for e in data["templates"]["edges"]}
    assert {world.ids["own_private"], world.ids["shared_with_me"]} <= listed
    assert world.ids["others_private"] not in listed
    assert world.ids["shared_not_with_me"] not in listed


async def test_drafts_and_share_lists_are_for_the_owner_only(world: World) -> None:
    admin = GraphQLClient(world.server, world.me.admin)
    operator = GraphQLClient(world.server, world.me.operator)

    async def details(client: GraphQLClient, kind: str) -> dict[str, Any]:
        return (await client.data(op("TemplateDetails"), {"id": world.ids[kind]}))["template"]

    mine = await details(admin, "own_private")
    assert mine["draft"] is not None and mine["ownedByViewer"] is True
    assert mine["sharedWith"] is not None
    assert (await details(operator, "own_private"))["draft"] is None
    theirs = await details(admin, "shared_with_me")
    assert theirs["draft"] is None and theirs["sharedWith"] is None
    assert theirs["ownedByViewer"] is False
    public = await details(admin, "public")
    assert public["draft"] is None and public["ownedByViewer"] is False


async def test_revoking_and_going_private_hide_the_template_again(
    server: str,
    sessions,  # type: ignore[no-untyped-def]
) -> None:
    owner, guest = await make_tenant(sessions), await make_tenant(sessions)
    owner_client = GraphQLClient(server, owner.admin)
    guest_client = GraphQLClient(server, guest.viewer)
    template_id = (await published(owner_client, make_spec()))["id"]

    async def guest_sees() -> bool:
        body = await guest_client.raw(op("TemplateDetails"), {"id": template_id})
        return not body.get("errors")

    async def set_visibility(visibility: str) -> dict[str, Any]:
        data = await owner_client.data(
            op("SetTemplateVisibility"),
            {"input": {"templateId": template_id, "visibility": visibility}},
        )
        return data["setTemplateVisibility"]

    assert not await guest_sees()
    granted = await share(owner_client, template_id, [guest.name])
    assert granted["sharedWith"] == [guest.name]
    assert await guest_sees()
    revoked = await share(owner_client, template_id, [guest.name], revoke=True)
    assert revoked["sharedWith"] == [] and revoked["visibility"] == "SHARED"
    assert not await guest_sees()

    await share(owner_client, template_id, [guest.name])
    private = await set_visibility("PRIVATE")
    assert private["visibility"] == "PRIVATE" and private["sharedWith"] == []
    assert not await guest_sees()
    assert (await set_visibility("PUBLIC"))["visibility"] == "PUBLIC"
    assert await guest_sees()
    await set_visibility("PRIVATE")

    unknown = await share(owner_client, template_id, ["no-such-tenant", owner.name])
    assert unknown["__typename"] == "ValidationError"
    assert [p["path"] for p in unknown["problems"]] == ["$.tenantNames[0]", "$.tenantNames[1]"]


async def test_a_tenants_public_template_never_shadows_the_platforms(
    server: str,
    sessions,  # type: ignore[no-untyped-def]
) -> None:
    squatter, victim = await make_tenant(sessions), await make_tenant(sessions)
    squatter_client = GraphQLClient(server, squatter.admin)
    squat = await published(squatter_client, make_spec("order-summary"), visibility="PUBLIC")
    victim_client = GraphQLClient(server, victim.viewer)
    found = (await victim_client.data(op("Template"), {"name": "order-summary"}))["template"]
    assert found["id"] != squat["id"]
    assert [s["id"] for s in found["steps"]] == ["normalize", "hold", "totals"]
    await squatter_client.data(
        op("SetTemplateVisibility"),
        {"input": {"templateId": squat["id"], "visibility": "PRIVATE"}},
    )
