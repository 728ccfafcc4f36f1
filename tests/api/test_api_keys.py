"""A tenant's API keys through GraphQL, on a real API with a short key re-check interval:
admins list, create (secret shown once) and revoke keys; viewers and operators cannot; names,
expiries and the number of live keys are bounded; revoked and expired keys are refused over HTTP
and at a socket connect, and an open socket closes (4403) once its key is revoked or expires.
A key that expires makes no key outliving it; concurrent revocations keep the first time; a
key creation's tenant lock lets inserts that reference the tenant through."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import websockets
from sqlalchemy import select, text
from websockets.exceptions import ConnectionClosed

from app.models import ApiKey
from app.models.base import utcnow
from app.settings import Settings
from app.tenants.repository import TenantRepository
from app.tenants.service import KEY_EXPIRED, MAX_KEYS_PER_TENANT, TenantService, hash_key
from tests.conftest import make_tenant
from tests.support import GraphQLClient, own_service

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"
RECHECK = 0.5  # seconds between key re-checks of an open socket
CLOSE_WITHIN = 20  # a bound on hanging, not a timing claim


def op(name: str) -> str:
    """An example document of graphql/operations: the tests run what the docs show."""
    return (OPS / f"{name}.graphql").read_text()


KEYS, CREATE, REVOKE = (op(name) for name in ("ApiKeys", "CreateApiKey", "RevokeApiKey"))
VIEWER = "{ viewer { role tenant { name } } }"
FEED = "subscription { executionsFeed { execution { id } } }"


@pytest.fixture(scope="module")
async def api(settings: Settings, sessions) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    async with own_service(settings, key_recheck_seconds=RECHECK) as url:
        yield url


async def create(client: GraphQLClient, **input: Any) -> dict[str, Any]:
    data = await client.data(CREATE, {"input": {"name": "ci", "role": "VIEWER", **input}})
    return dict(data["createApiKey"])


async def error_code(client: GraphQLClient, query: str) -> tuple[str, str]:
    body = await client.raw(query)
    error = body["errors"][0]
    return error["extensions"]["code"], error["message"]


class Socket:
    """A graphql-transport-ws connection running the executions feed (never completes)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, base: str, key: str) -> Socket:
        ws = await connect(base, key)
        ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ack["type"] == "connection_ack", ack
        await ws.send(json.dumps({"id": "feed", "type": "subscribe", "payload": {"query": FEED}}))
        return cls(ws)

    async def closed_with(self) -> tuple[int | None, str]:
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(CLOSE_WITHIN):
                while True:
                    await self.ws.recv()
        return self.ws.close_code, self.ws.close_reason or ""

    async def alive(self) -> bool:
        await self.ws.send(json.dumps({"type": "ping"}))
        async with asyncio.timeout(10):
            while json.loads(await self.ws.recv())["type"] != "pong":
                pass
        return True


async def connect(base: str, key: str) -> Any:
    ws = await websockets.connect(
        base.replace("http://", "ws://") + "/graphql",
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        # An address of its own (trusted from 127.0.0.1, as from a proxy): refused connects
        # spend it, never the loopback budget other tests on a shared Redis spend too.
        additional_headers={
            "X-Forwarded-For": f"198.18.{random.randrange(256)}.{random.randrange(256)}"
        },
    )
    payload = {"authorization": f"Bearer {key}"}
    await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
    return ws


async def refused_connect(base: str, key: str) -> tuple[int | None, str]:
    """A socket connect with key, which must be refused: its close code and reason."""
    ws = await connect(base, key)
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(CLOSE_WITHIN):
            while True:
                await ws.recv()
    return ws.close_code, ws.close_reason or ""


async def test_an_admin_creates_a_key_whose_secret_is_shown_once_and_works(
    api: str, sessions
) -> None:  # type: ignore[no-untyped-def]
    keys = await make_tenant(sessions, "pro")
    admin = GraphQLClient(api, keys.admin)
    expires = (utcnow() + timedelta(days=30)).replace(microsecond=0)
    made = await create(admin, name="deploy bot", role="OPERATOR", expiresAt=expires.isoformat())
    assert made["__typename"] == "CreatedApiKey", made
    secret, key = made["secret"], made["apiKey"]
    assert secret.startswith(f"wfs_{key['prefix']}_") and len(secret) > 40
    assert key["role"] == "OPERATOR" and key["name"] == "deploy bot"
    assert key["expiresAt"] == expires.isoformat()
    async with sessions() as session:  # named by its id: an 8-hex prefix is not unique
        creator = await session.scalar(
            select(ApiKey.id).where(ApiKey.key_hash == hash_key(keys.admin))
        )
    assert key["createdBy"] == f"key:{creator}"

    # The secret works; only its hash is stored.
    viewer = await GraphQLClient(api, secret).data(VIEWER)
    assert viewer["viewer"] == {"role": "OPERATOR", "tenant": {"name": keys.name}}
    async with sessions() as session:
        stored = await session.scalar(select(ApiKey).where(ApiKey.prefix == key["prefix"]))
        row = (
            await session.execute(text("SELECT * FROM api_keys WHERE id = :id"), {"id": stored.id})
        ).one()
    assert stored.key_hash == hash_key(secret)
    assert secret not in json.dumps([str(v) for v in row])

    # The listing shows every key of the tenant, the new one used, and never a secret.
    listed = await admin.data(KEYS)
    text_of_listing = json.dumps(listed)
    assert secret not in text_of_listing and stored.key_hash not in text_of_listing
    for plaintext in (keys.admin, keys.operator, keys.viewer):
        assert plaintext not in text_of_listing
    nodes = {e["node"]["id"]: e["node"] for e in listed["apiKeys"]["edges"]}
    assert len(nodes) == 4
    assert nodes[key["id"]]["lastUsedAt"] is not None
    assert nodes[key["id"]]["revokedAt"] is None

    # Pages: first 2, then the rest after the cursor.
    page = (await admin.data(KEYS, {"first": 2}))["apiKeys"]
    assert len(page["edges"]) == 2 and page["pageInfo"]["hasNextPage"]
    rest = (await admin.data(KEYS, {"after": page["pageInfo"]["endCursor"]}))["apiKeys"]
    assert [e["node"]["id"] for e in page["edges"] + rest["edges"]] == list(nodes)

    # node(id) answers the key to an admin.
    node = await admin.data(
        "query($id: ID!) { node(id: $id) { ... on ApiKey { prefix } } }", {"id": key["id"]}
    )
    assert node["node"] == {"prefix": key["prefix"]}


async def test_viewers_and_operators_cannot_list_create_or_revoke_keys(api: str, sessions) -> None:  # type: ignore[no-untyped-def]
    keys = await make_tenant(sessions, "free")
    target = (await GraphQLClient(api, keys.admin).data(KEYS))["apiKeys"]["edges"][0]["node"]
    for plaintext in (keys.viewer, keys.operator):
        caller = GraphQLClient(api, plaintext)
        code, message = await error_code(caller, KEYS)
        assert (code, message) == ("FORBIDDEN", "only admins manage API keys")
        assert (await create(caller, role="ADMIN"))["__typename"] == "ForbiddenError"
        revoked = (await caller.data(REVOKE, {"id": target["id"]}))["revokeApiKey"]
        assert revoked["__typename"] == "ForbiddenError"
    listed = (await GraphQLClient(api, keys.admin).data(KEYS))["apiKeys"]["edges"]
    assert len(listed) == 3 and all(e["node"]["revokedAt"] is None for e in listed)

    # Another tenant's admin: the key names nothing there.
    stranger = GraphQLClient(api, (await make_tenant(sessions, "free")).admin)
    answer = (await stranger.data(REVOKE, {"id": target["id"]}))["revokeApiKey"]
    assert answer["__typename"] == "NotFoundError"


async def test_key_names_expiries_and_live_keys_are_bounded(api: str, sessions) -> None:  # type: ignore[no-untyped-def]
    keys = await make_tenant(sessions, "free")
    admin = GraphQLClient(api, keys.admin)
    now = utcnow()
    for input in (
        {"name": ""},
        {"name": "x" * 101},
        {"name": "bad\nname"},
        {"expiresAt": (now - timedelta(minutes=1)).isoformat()},
        {"expiresAt": (now + timedelta(days=731)).isoformat()},
    ):
        answer = await create(admin, **input)
        assert answer["__typename"] == "ValidationError", (input, answer)
    assert (await create(admin, name="x" * 100))["__typename"] == "CreatedApiKey"

    # At most MAX_KEYS_PER_TENANT live keys: expired and revoked ones do not count.
    async with sessions() as session:
        service = TenantService(session)
        tenant = await service.get_by_name(keys.name)
        for i in range(MAX_KEYS_PER_TENANT - 4):
            await service.create_api_key(tenant, role="viewer", name=f"k{i}")
        await session.commit()
    full = await create(admin)
    assert full["__typename"] == "QuotaExceededError", full
    assert f"{MAX_KEYS_PER_TENANT} live API keys" in full["message"]
    listed = (await admin.data(KEYS, {"first": 100}))["apiKeys"]["edges"]
    victim = listed[-1]["node"]["id"]
    assert (await admin.data(REVOKE, {"id": victim}))["revokeApiKey"]["__typename"] == "ApiKey"
    assert (await create(admin))["__typename"] == "CreatedApiKey"
    assert (await create(admin))["__typename"] == "QuotaExceededError"


async def test_revoking_a_key_refuses_it_and_closes_its_open_socket(api: str, sessions) -> None:  # type: ignore[no-untyped-def]
    keys = await make_tenant(sessions, "pro")
    admin = GraphQLClient(api, keys.admin)
    made = await create(admin, role="OPERATOR")
    secret, key_id = made["secret"], made["apiKey"]["id"]
    doomed, kept = await Socket.open(api, secret), await Socket.open(api, keys.viewer)
    assert await doomed.alive()

    first = (await admin.data(REVOKE, {"id": key_id}))["revokeApiKey"]
    assert first["__typename"] == "ApiKey" and first["revokedAt"] is not None
    assert await doomed.closed_with() == (4403, "API key revoked")
    assert await kept.alive()  # the tenant's other key keeps its socket
    await kept.ws.close()

    # Refused from now on, over HTTP and at a socket connect; revoking again changes nothing.
    code, message = await error_code(GraphQLClient(api, secret), VIEWER)
    assert (code, message) == ("UNAUTHENTICATED", "API key has been revoked")
    assert await refused_connect(api, secret) == (4403, "Forbidden")  # Strawberry's reason
    again = (await admin.data(REVOKE, {"id": key_id}))["revokeApiKey"]
    assert again == first


async def test_an_expired_key_is_refused_and_its_open_socket_closes(api: str, sessions) -> None:  # type: ignore[no-untyped-def]
    keys = await make_tenant(sessions, "pro")
    made = await create(
        GraphQLClient(api, keys.admin), expiresAt=(utcnow() + timedelta(hours=1)).isoformat()
    )
    secret = made["secret"]
    sock = await Socket.open(api, secret)
    assert await sock.alive()

    # The hour passes: the stored expiry moves into the past (what the clock would do).
    async with sessions() as session:
        await session.execute(
            text(
                "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE key_hash = :h"
            ),
            {"h": hash_key(secret)},
        )
        await session.commit()
    assert await sock.closed_with() == (4403, KEY_EXPIRED)
    code, message = await error_code(GraphQLClient(api, secret), VIEWER)
    assert (code, message) == ("UNAUTHENTICATED", KEY_EXPIRED)
    assert await refused_connect(api, secret) == (4403, "Forbidden")
    # Listed as it is: expired, not revoked.
    listed = (await GraphQLClient(api, keys.admin).data(KEYS))["apiKeys"]["edges"]
    mine = next(e["node"] for e in listed if e["node"]["id"] == made["apiKey"]["id"])
    assert mine["revokedAt"] is None and mine["expiresAt"] is not None


async def test_a_key_that_expires_makes_no_key_outliving_it(api: str, sessions) -> None:  # type: ignore[no-untyped-def]
    keys = await make_tenant(sessions, "pro")
    ends = (utcnow() + timedelta(hours=2)).replace(microsecond=0)
    made = await create(GraphQLClient(api, keys.admin), role="ADMIN", expiresAt=ends.isoformat())
    short = GraphQLClient(api, made["secret"])

    for later in (None, (ends + timedelta(seconds=1)).isoformat()):
        refused = await create(short, expiresAt=later)
        assert refused["__typename"] == "ValidationError", (later, refused)
        assert "no later than" in refused["message"], refused
    inside = await create(short, expiresAt=ends.isoformat())
    assert inside["__typename"] == "CreatedApiKey", inside
    assert inside["apiKey"]["expiresAt"] == ends.isoformat()
    # A key without an expiry is bounded only by MAX_KEY_LIFETIME, as before.
    assert (await create(GraphQLClient(api, keys.admin)))["__typename"] == "CreatedApiKey"


async def waiting_on_locks(sessions, statement: str, count: int) -> None:  # type: ignore[no-untyped-def]
    """Until `count` sessions of this database wait for a lock in a `statement`... (a wait
    that nothing but the holder's end can end: no clock involved; CLOSE_WITHIN only bounds a
    hang should they fail before reaching it)."""
    async with asyncio.timeout(CLOSE_WITHIN):
        while True:
            async with sessions() as session:
                found = await session.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND wait_event_type = 'Lock' AND query LIKE :q"
                    ),
                    {"q": f"{statement}%"},
                )
            if found >= count:
                return
            await asyncio.sleep(0.05)


async def test_concurrent_revocations_keep_the_first_time(api: str, sessions) -> None:  # type: ignore[no-untyped-def]
    keys = await make_tenant(sessions, "pro")
    admin = GraphQLClient(api, keys.admin)
    made = (await create(admin))["apiKey"]
    async with sessions() as holder:
        # Hold the key's row: both revocations read it unrevoked, then wait to write.
        stored = await holder.scalar(
            select(ApiKey.id).where(ApiKey.prefix == made["prefix"]).with_for_update()
        )
        both = asyncio.gather(*(admin.data(REVOKE, {"id": made["id"]}) for _ in range(2)))
        await waiting_on_locks(sessions, "UPDATE api_keys", 2)
        await holder.rollback()
        answers = [a["revokeApiKey"] for a in await both]
    async with sessions() as session:
        revoked_at = await session.scalar(select(ApiKey.revoked_at).where(ApiKey.id == stored))
    assert revoked_at is not None
    assert [a["revokedAt"] for a in answers] == [revoked_at.isoformat()] * 2, answers


async def test_a_key_creations_tenant_lock_lets_referencing_inserts_through(sessions) -> None:  # type: ignore[no-untyped-def]
    keys = await make_tenant(sessions, "free")
    async with sessions() as creating, sessions() as other:
        repo = TenantRepository(creating)
        tenant = await repo.by_name(keys.name)
        assert tenant is not None
        await repo.lock(tenant.id)  # as create_api_key holds it until its commit
        # An insert referencing the tenant (a key here; executions and templates alike) takes
        # FOR KEY SHARE on its row: it must not wait for the key creation's lock.
        await other.execute(text("SET LOCAL lock_timeout = '5s'"))
        added = await TenantRepository(other).add_key(
            ApiKey(
                tenant_id=tenant.id, name="x", prefix="00000000", key_hash="0" * 64, role="viewer"
            )
        )
        assert added.id is not None
        await other.rollback()
