"""Who may read, run, author, share, publish to everyone and accept which template, over HTTP:
every role against every kind of template. A template the caller cannot read is NOT_FOUND,
exactly like a template that does not exist. Another publisher's template (shared or public)
runs only once an admin accepted it; another tenant's PUBLIC template is visible only once the
platform approved it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from app.api.relay import to_global_id
from tests.conftest import TenantKeys, make_tenant
from tests.support import GraphQLClient
from tests.templates.template_kit import (
    accept,
    approve,
    make_spec,
    op,
    published,
    set_visibility,
    share,
)

ROLES = ("viewer", "operator", "admin")
KINDS = (
    "own_private",
    "others_private",
    "shared_with_me",
    "shared_not_with_me",
    "platform",
    "others_public_pending",
    "others_public_approved",
)
OPERATIONS = ("read", "run", "author", "share", "request_public", "accept")
OK, FORBIDDEN, NOT_FOUND, CONFLICT = "OK", "FORBIDDEN", "NOT_FOUND", "CONFLICT"
READABLE = {"own_private", "shared_with_me", "platform", "others_public_approved"}
# Another publisher's templates: they run only at a version an admin of the caller accepted.
STRANGERS = {"shared_with_me", "others_public_approved"}
PARAMS = {"rows": [{"v": 1}]}
PLATFORM_PARAMS = {
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
        # Nobody in this world accepted the strangers' templates the matrix runs.
        return FORBIDDEN if role == "viewer" or kind in STRANGERS else OK
    if operation == "accept":
        if role != "admin":
            return FORBIDDEN
        return OK if kind in STRANGERS else CONFLICT  # own and platform need no acceptance
    # author, share and asking for PUBLIC: the owner tenant's admins only
    return OK if role == "admin" and kind == "own_private" else FORBIDDEN


@dataclass
class World:
    server: str
    me: TenantKeys
    other: TenantKeys
    third: TenantKeys
    tag: str
    ids: dict[str, str]
    # Operations that change what they touch (accept, request_public) get a twin of the kind,
    # so the matrix holds in any order.
    twins: dict[str, str]
    specs: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
async def world(server: str, sessions) -> World:  # type: ignore[no-untyped-def]
    me, other, third = [await make_tenant(sessions) for _ in range(3)]
    mine, theirs = GraphQLClient(server, me.admin), GraphQLClient(server, other.admin)
    tag = f"perm{uuid.uuid4().hex[:6]}"
    specs = {kind: make_spec(tags=["test", tag]) for kind in KINDS if kind != "platform"}
    ids = {"own_private": (await published(mine, specs["own_private"]))["id"]}
    twins = {"own_private": (await published(mine, make_spec(tags=[tag])))["id"]}
    ids["others_private"] = (await published(theirs, specs["others_private"]))["id"]
    for kind, who in (("shared_with_me", me), ("shared_not_with_me", third)):
        ids[kind] = (await published(theirs, specs[kind]))["id"]
        shared = await share(theirs, ids[kind], [who.name])
        assert shared["visibility"] == "SHARED", shared
    twins["shared_with_me"] = (await published(theirs, make_spec(tags=[tag])))["id"]
    await share(theirs, twins["shared_with_me"], [me.name])
    for kind in ("others_public_pending", "others_public_approved"):
        ids[kind] = (await published(theirs, specs[kind], visibility="PUBLIC"))["id"]
    twins["others_public_approved"] = (
        await published(theirs, make_spec(tags=[tag]), visibility="PUBLIC")
    )["id"]
    for template_id in (ids["others_public_approved"], twins["others_public_approved"]):
        await approve(sessions, template_id, 1)
    ids["platform"] = (await mine.data(op("Template"), {"name": "order-summary"}))["template"]["id"]
    specs["platform"] = make_spec("order-summary")
    return World(server, me, other, third, tag, ids, twins, specs)


def outcome(result: dict[str, Any]) -> str:
    if result["__typename"] in ("Template", "Execution"):
        return OK
    return str(result["code"])


async def attempt(world: World, role: str, kind: str, operation: str) -> str:
    client = GraphQLClient(world.server, getattr(world.me, role))
    template_id = world.ids[kind]
    if operation in ("accept", "request_public"):
        template_id = world.twins.get(kind, template_id)
    if operation == "read":
        body = await client.raw(op("TemplateDetails"), {"id": template_id})
        if body.get("errors"):
            return str(body["errors"][0]["extensions"]["code"])
        assert body["data"]["template"]["id"] == template_id
        return OK
    if operation == "run":
        params = PLATFORM_PARAMS if kind == "platform" else PARAMS
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
    if operation == "accept":
        return outcome(await accept(client, template_id, 1))
    if operation == "request_public":
        return outcome(await set_visibility(client, template_id, "PUBLIC"))
    data = await client.data(
        op("ShareTemplate"),
        {"input": {"templateId": template_id, "tenantNames": [world.third.name]}},
    )
    return outcome(data["shareTemplate"])


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("role", ROLES)
async def test_permission_matrix(world: World, role: str, kind: str, operation: str) -> None:
    assert await attempt(world, role, kind, operation) == expected(role, kind, operation)


@pytest.mark.parametrize("kind", sorted(READABLE))
async def test_every_template_shows_its_publisher(world: World, kind: str) -> None:
    client = GraphQLClient(world.server, world.me.viewer)
    found = (await client.data(op("TemplateDetails"), {"id": world.ids[kind]}))["template"]
    owner = {
        "own_private": world.me.name,
        "platform": "workflow-service",
        "shared_with_me": world.other.name,
        "others_public_approved": world.other.name,
    }[kind]
    assert found["publisher"] == {"name": owner, "verified": kind == "platform"}
    assert found["qualifiedName"] == f"{owner}/{found['name']}"


async def test_accepting_lets_operators_run_the_accepted_version(world: World) -> None:
    """After the matrix's refusals: once an admin accepts, operators and admins run it; a
    viewer still cannot."""
    for kind in sorted(STRANGERS):
        template_id = world.twins[kind]
        accepted = await accept(GraphQLClient(world.server, world.me.admin), template_id, 1)
        assert accepted["acceptedVersion"] == 1, accepted
        for role, result in (("operator", "Execution"), ("admin", "Execution")):
            client = GraphQLClient(world.server, getattr(world.me, role))
            data = await client.data(
                op("StartExecution"), {"input": {"templateId": template_id, "params": PARAMS}}
            )
            assert data["startExecution"]["__typename"] == result, (kind, role, data)
            assert data["startExecution"]["templateVersion"] == 1
        viewer = GraphQLClient(world.server, world.me.viewer)
        data = await viewer.data(
            op("StartExecution"), {"input": {"templateId": template_id, "params": PARAMS}}
        )
        assert data["startExecution"]["code"] == FORBIDDEN


async def test_accepting_a_version_not_offered_is_a_conflict(world: World) -> None:
    admin = GraphQLClient(world.server, world.me.admin)
    refused = await accept(admin, world.ids["others_public_approved"], 2)
    assert refused["code"] == CONFLICT and "accept version 1" in refused["message"]


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
    data = await client.data(op("SearchTemplates"), {"first": 100, "tags": ["test", world.tag]})
    listed = {e["node"]["id"] for e in data["templates"]["edges"]}
    assert listed == {world.ids[k] for k in READABLE if k != "platform"}
    # The twins (not tagged "test") aside, others' private, unshared and pending ones are absent.
    assert world.ids["others_public_pending"] not in listed


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
    platform = await details(admin, "platform")
    assert platform["draft"] is None and platform["ownedByViewer"] is False
    public = await details(admin, "others_public_approved")
    assert public["draft"] is None and public["sharedWith"] is None
    assert public["publicVersion"] == 1 and public["acceptedVersion"] is None


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

    assert not await guest_sees()
    granted = await share(owner_client, template_id, [guest.name])
    assert granted["sharedWith"] == [guest.name]
    assert await guest_sees()
    revoked = await share(owner_client, template_id, [guest.name], revoke=True)
    assert revoked["sharedWith"] == [] and revoked["visibility"] == "SHARED"
    assert not await guest_sees()

    await share(owner_client, template_id, [guest.name])
    private = await set_visibility(owner_client, template_id, "PRIVATE")
    assert private["visibility"] == "PRIVATE" and private["sharedWith"] == []
    assert not await guest_sees()
    # PUBLIC is a request: nobody else sees it before the platform approves a version.
    requested = await set_visibility(owner_client, template_id, "PUBLIC")
    assert requested["visibility"] == "PUBLIC" and requested["publicVersion"] is None
    assert not await guest_sees()
    await approve(sessions, template_id, 1)
    assert await guest_sees()
    withdrawn = await set_visibility(owner_client, template_id, "PRIVATE")
    assert withdrawn["publicVersion"] is None
    assert not await guest_sees()

    unknown = await share(owner_client, template_id, ["no-such-tenant", owner.name])
    assert unknown["__typename"] == "ValidationError"
    assert [p["path"] for p in unknown["problems"]] == ["$.tenantNames[0]", "$.tenantNames[1]"]


async def test_a_tenants_template_cannot_be_public_under_a_platform_name(
    server: str,
    sessions,  # type: ignore[no-untyped-def]
) -> None:
    squatter, victim = await make_tenant(sessions), await make_tenant(sessions)
    squatter_client = GraphQLClient(server, squatter.admin)
    refused = await squatter_client.data(
        op("CreateTemplate"),
        {"input": {"spec": make_spec("order-summary"), "visibility": "PUBLIC"}},
    )
    assert refused["createTemplate"]["code"] == CONFLICT
    squat = await published(squatter_client, make_spec("order-summary"))
    asked = await set_visibility(squatter_client, squat["id"], "PUBLIC")
    assert asked["code"] == CONFLICT and "platform template" in asked["message"]
    victim_client = GraphQLClient(server, victim.viewer)
    found = (await victim_client.data(op("Template"), {"name": "order-summary"}))["template"]
    assert found["id"] != squat["id"]
    assert [s["id"] for s in found["steps"]] == ["normalize", "hold", "totals"]
