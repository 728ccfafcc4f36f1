"""The platform credential through GraphQL, on a real API: it lists, creates, re-tiers,
suspends and resumes tenants; a suspended tenant's keys are refused and its open sockets close;
tenant keys (admins too) are FORBIDDEN on platform fields; the platform credential is FORBIDDEN
on tenant fields (it has no tenant) and spends its own rate-limit budget; revoked, it is
refused. Racing creates of one name answer one tenant and one CONFLICT; racing revocations of
a platform credential keep the first time."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from sqlalchemy import select

from app.api.relay import to_global_id
from app.models import PlatformKey, Tenant
from app.settings import Settings
from app.tenants.platform import PlatformKeys
from app.tenants.repository import TenantRepository
from app.tenants.service import NO_TENANT, TENANT_SUSPENDED
from tests.api.test_api_keys import VIEWER, Socket, op, refused_connect, waiting_on_locks
from tests.conftest import make_tenant
from tests.support import GraphQLClient, own_service

RECHECK = 0.5

TENANTS, CREATE_TENANT, SET_TIER, SUSPEND = (
    op(name) for name in ("Tenants", "CreateTenant", "SetTenantTier", "SuspendTenant")
)
TENANT_VIEW = "{ viewer { role tenant { name tier } } }"


@pytest.fixture(scope="module")
async def api(settings: Settings, sessions) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    async with own_service(settings, key_recheck_seconds=RECHECK) as url:
        yield url


async def platform_key(sessions, name: str = "ops") -> tuple[uuid.UUID, str]:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        key, plaintext = await PlatformKeys(session).create(name)
        await session.commit()
    return key.id, plaintext


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_a_platform_credential_creates_lists_and_retiers_tenants(api: str, sessions) -> None:  # type: ignore[no-untyped-def]
    _, secret = await platform_key(sessions)
    platform = GraphQLClient(api, secret)
    name = unique("onboarded")
    made = await platform.data(
        CREATE_TENANT, {"input": {"name": name, "tier": "PRO", "adminKeyName": "first admin"}}
    )
    created = made["createTenant"]
    assert created["__typename"] == "CreatedTenant", created
    assert created["tenant"]["name"] == name and created["tenant"]["tier"] == "PRO"
    first_key = created["adminKey"]["apiKey"]
    assert (first_key["role"], first_key["createdBy"]) == ("ADMIN", "platform:ops")
    first_admin = GraphQLClient(api, created["adminKey"]["secret"])
    assert (await first_admin.data(TENANT_VIEW))["viewer"] == {
        "role": "ADMIN",
        "tenant": {"name": name, "tier": "PRO"},
    }

    # Without adminKeyName: no key. A bad name and a taken one are typed errors.
    bare = await platform.data(CREATE_TENANT, {"input": {"name": unique("bare"), "tier": "FREE"}})
    assert bare["createTenant"]["adminKey"] is None
    bad = await platform.data(CREATE_TENANT, {"input": {"name": "Not OK!", "tier": "FREE"}})
    assert bad["createTenant"]["__typename"] == "ValidationError"
    taken = await platform.data(CREATE_TENANT, {"input": {"name": name, "tier": "FREE"}})
    assert taken["createTenant"]["__typename"] == "ConflictError"

    # Every tenant, page by page.
    seen: list[str] = []
    after = None
    while True:
        page = (await platform.data(TENANTS, {"first": 25, "after": after}))["tenants"]
        seen += [e["node"]["name"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert name in seen and len(seen) == len(set(seen))

    # A new tier applies from the tenant's next call.
    tenant_id = created["tenant"]["id"]
    moved = await platform.data(SET_TIER, {"input": {"tenant": tenant_id, "tier": "PREMIUM"}})
    assert moved["setTenantTier"] == {
        "__typename": "Tenant",
        "id": tenant_id,
        "tier": "PREMIUM",
    }
    assert (await first_admin.data(TENANT_VIEW))["viewer"]["tenant"]["tier"] == "PREMIUM"
    nobody = await platform.data(
        SET_TIER,
        {"input": {"tenant": to_global_id("Tenant", uuid.UUID(int=0)), "tier": "PRO"}},
    )
    assert nobody["setTenantTier"]["__typename"] == "NotFoundError"


async def test_a_suspended_tenant_is_refused_and_loses_its_sockets(api: str, sessions) -> None:  # type: ignore[no-untyped-def]
    _, secret = await platform_key(sessions)
    platform = GraphQLClient(api, secret)
    keys, bystander = await make_tenant(sessions, "pro"), await make_tenant(sessions, "pro")
    tenant_id = (await GraphQLClient(api, keys.admin).data("{ viewer { tenant { id } } }"))[
        "viewer"
    ]["tenant"]["id"]
    sock, other = await Socket.open(api, keys.viewer), await Socket.open(api, bystander.viewer)

    answer = await platform.data(SUSPEND, {"input": {"tenant": tenant_id, "suspended": True}})
    assert answer["suspendTenant"]["suspendedAt"] is not None
    assert await sock.closed_with() == (4403, TENANT_SUSPENDED)
    assert await other.alive()  # another tenant is untouched
    await other.ws.close()
    for plaintext in (keys.admin, keys.operator, keys.viewer):
        body = await GraphQLClient(api, plaintext).raw(VIEWER)
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert body["errors"][0]["message"] == TENANT_SUSPENDED
    assert await refused_connect(api, keys.viewer) == (4403, "Forbidden")
    listed = {
        e["node"]["id"]: e["node"]
        for e in (await platform.data(TENANTS, {"first": 100}))["tenants"]["edges"]
    }
    if tenant_id in listed:  # on a shared database the tenant may be past the first page
        assert listed[tenant_id]["suspendedAt"] is not None

    # Resumed: the same keys work again.
    answer = await platform.data(SUSPEND, {"input": {"tenant": tenant_id, "suspended": False}})
    assert answer["suspendTenant"]["suspendedAt"] is None
    assert (await GraphQLClient(api, keys.viewer).data(VIEWER))["viewer"]["role"] == "VIEWER"


async def test_tenant_keys_are_forbidden_on_platform_fields(api: str, sessions) -> None:  # type: ignore[no-untyped-def]
    keys = await make_tenant(sessions, "enterprise")
    tenant_id = (await GraphQLClient(api, keys.admin).data("{ viewer { tenant { id } } }"))[
        "viewer"
    ]["tenant"]["id"]
    for plaintext in (keys.admin, keys.operator, keys.viewer):
        caller = GraphQLClient(api, plaintext)
        error = (await caller.raw(TENANTS))["errors"][0]
        assert error["extensions"]["code"] == "FORBIDDEN"
        assert error["message"] == "only a platform credential may manage tenants"
        for query, field, input in (
            (CREATE_TENANT, "createTenant", {"name": unique("sneaky"), "tier": "ENTERPRISE"}),
            (SET_TIER, "setTenantTier", {"tenant": tenant_id, "tier": "FREE"}),
            (SUSPEND, "suspendTenant", {"tenant": tenant_id, "suspended": True}),
        ):
            answer = (await caller.data(query, {"input": input}))[field]
            assert answer["__typename"] == "ForbiddenError", (field, answer)
    view = (await GraphQLClient(api, keys.admin).data(TENANT_VIEW))["viewer"]
    assert view["tenant"]["tier"] == "ENTERPRISE"  # nothing changed
    # Without any credential: UNAUTHENTICATED, not FORBIDDEN.
    anonymous = (await GraphQLClient(api, None).raw(TENANTS))["errors"][0]
    assert anonymous["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_platform_credential_has_no_tenant(api: str, sessions, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    key_id, secret = await platform_key(sessions, "no-tenant")
    platform = GraphQLClient(api, secret)
    for query in (
        VIEWER,
        "{ executions(first: 1) { edges { cursor } } }",
        "{ templates(first: 1) { edges { cursor } } }",
    ):
        body = await platform.raw(query)
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", (query, body)
        assert body["errors"][0]["message"] == NO_TENANT
    made = await platform.data(
        'mutation { createApiKey(input: {name: "x", role: ADMIN}) { __typename } }'
    )
    assert made["createApiKey"]["__typename"] == "ForbiddenError"
    # Sockets carry a tenant's subscriptions: refused.
    assert await refused_connect(api, secret) == (4403, "Forbidden")

    # Its requests count under its own budget, not a tenant's or its address's.
    redis = aioredis.from_url(settings.redis_url or "")
    try:
        await platform.data(TENANTS)
        counted = await redis.get(f"wfs:rl:platform:{key_id}:{int(time.time() // 60)}")
    finally:
        await redis.aclose()
    assert counted is not None and int(counted) >= 1


async def test_a_revoked_platform_credential_is_refused(api: str, sessions) -> None:  # type: ignore[no-untyped-def]
    key_id, secret = await platform_key(sessions, "leaving")
    platform = GraphQLClient(api, secret)
    await platform.data(TENANTS, {"first": 1})
    async with sessions() as session:
        await PlatformKeys(session).revoke(key_id)
        await session.commit()
    error = (await platform.raw(TENANTS))["errors"][0]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert error["message"] == "platform credential has been revoked"
    forged = GraphQLClient(api, secret[:-4] + "AAAA")
    error = (await forged.raw(TENANTS))["errors"][0]
    assert (error["extensions"]["code"], error["message"]) == (
        "UNAUTHENTICATED",
        "invalid platform credential",
    )


async def test_racing_creates_of_one_name_answer_a_tenant_and_a_conflict(
    api: str, sessions
) -> None:  # type: ignore[no-untyped-def]
    _, secret = await platform_key(sessions)
    platform = GraphQLClient(api, secret)
    name = unique("raced")
    async with sessions() as holder:
        # An uncommitted row of that name: both creates find no tenant, then wait on the index.
        await TenantRepository(holder).add(Tenant(name=name, tier="free"))
        both = asyncio.gather(
            *(platform.data(CREATE_TENANT, {"input": {"name": name, "tier": "FREE"}}) for _ in "ab")
        )
        await waiting_on_locks(sessions, "INSERT INTO tenants", 2)
        await holder.rollback()
        answers = [a["createTenant"] for a in await both]
    assert sorted(a["__typename"] for a in answers) == ["ConflictError", "CreatedTenant"], answers
    conflict = next(a for a in answers if a["__typename"] == "ConflictError")
    assert conflict["message"] == f"tenant {name!r} already exists"


async def test_racing_revocations_of_a_platform_credential_keep_the_first_time(sessions) -> None:  # type: ignore[no-untyped-def]
    key_id, _ = await platform_key(sessions, "raced")

    async def revoke() -> PlatformKey:
        async with sessions() as session:
            key = await PlatformKeys(session).revoke(key_id)
            await session.commit()
            return key

    async with sessions() as holder:
        await holder.scalar(
            select(PlatformKey.id).where(PlatformKey.id == key_id).with_for_update()
        )
        both = asyncio.gather(revoke(), revoke())
        await waiting_on_locks(sessions, "UPDATE platform_keys", 2)
        await holder.rollback()
        answers = await both
    async with sessions() as session:
        stored = await session.scalar(
            select(PlatformKey.revoked_at).where(PlatformKey.id == key_id)
        )
    assert stored is not None
    assert [k.revoked_at for k in answers] == [stored, stored]
