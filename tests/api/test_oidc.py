"""Identity-provider access tokens over the real API (docs/security.md, "Signing in with an
identity provider"), with a fake provider serving its key set on a real socket.

RS256 and ES256 tokens act as their tenant and role beside API keys; every refused token says
which check failed; the key set follows a rotation, keeps serving while the provider is down,
and junk `kid`s do not make the API hammer the provider; sockets accept a token in
connection_init and close with 4401 when it expires, between key re-checks. A token (it lasts
minutes) makes only API keys that expire, and they name it by its subject.

Client addresses come from X-Forwarded-For (uvicorn trusts it from 127.0.0.1), on sockets too,
so refused tokens spend an address budget of their own, not 127.0.0.1's, which other tests'
APIs (with small limits, on the same Redis) count in the same minute.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from sqlalchemy import text
from websockets.exceptions import ConnectionClosed

from app.settings import Settings
from app.tenants.service import Principal
from tests.conftest import TenantKeys, make_tenant
from tests.fakes.idp import AUDIENCE, FakeIdentityProvider
from tests.support import own_service

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"
VIEWER = "{ viewer { role tenant { name } } }"
LEEWAY = 5.0
RECHECK = 30.0  # far above a test's token lifetime: an expiry close is the expiry's doing


def client_ip() -> str:
    n = random.getrandbits(16)
    return f"198.19.{n >> 8}.{n & 255}"


def token_settings(idp: FakeIdentityProvider, **extra: Any) -> dict[str, Any]:
    return {
        "auth_issuer": idp.issuer,
        "auth_audience": AUDIENCE,
        "auth_jwks_url": idp.jwks_url,
        "auth_leeway_seconds": LEEWAY,
        "key_recheck_seconds": RECHECK,
        **extra,
    }


@pytest.fixture(scope="module")
def idp() -> Iterator[FakeIdentityProvider]:
    provider = FakeIdentityProvider()
    provider.add_key("rsa-1", "RS256")
    provider.add_key("ec-1", "ES256")
    yield provider
    provider.close()


@pytest.fixture(scope="module")
async def api(settings: Settings, sessions, idp: FakeIdentityProvider) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    """An API taking the provider's tokens; a junk kid may refetch once per 10 minutes."""
    async with own_service(settings, **token_settings(idp, auth_jwks_refetch_seconds=600)) as url:
        yield url


@pytest.fixture
async def acme(sessions) -> TenantKeys:  # type: ignore[no-untyped-def]
    return await make_tenant(sessions, "pro")


async def post(base: str, bearer: str, query: str = VIEWER) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {bearer}", "X-Forwarded-For": client_ip()}
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        resp = await http.post("/graphql", json={"query": query}, headers=headers)
    return dict(resp.json())


async def viewer(base: str, bearer: str) -> tuple[str, str]:
    """(role, tenant name) of the caller; the role as the principal holds it (lower case)."""
    body = await post(base, bearer)
    assert "errors" not in body, body
    return body["data"]["viewer"]["role"].lower(), body["data"]["viewer"]["tenant"]["name"]


async def refusal(base: str, bearer: str) -> tuple[str, str]:
    body = await post(base, bearer)
    assert body.get("data") is None, body
    error = body["errors"][0]
    return error["extensions"]["code"], error["message"]


def b64(data: bytes | dict[str, Any]) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forged(idp: FakeIdentityProvider, tenant: str, alg: str) -> str:
    """A token PyJWT would not mint: `none` (unsigned), or HS256 keyed with the provider's
    public key (the classic algorithm confusion)."""
    header = b64({"alg": alg, "typ": "JWT", "kid": "rsa-1"})
    payload = b64(idp.claims(tenant, "admin"))
    if alg == "none":
        return f"{header}.{payload}."
    public = (
        idp.keys["rsa-1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    mac = hmac.new(public, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(mac)}"


START = """mutation { startExecution(input: {templateName: "order-summary", params: {}}) {
  __typename ... on UserError { code message } } }"""


async def test_rs256_and_es256_tokens_act_as_their_tenant_and_role(
    api: str, idp: FakeIdentityProvider, acme: TenantKeys
) -> None:
    rs = await viewer(api, idp.token(acme.name, "operator", kid="rsa-1"))
    es = await viewer(api, idp.token(acme.name, ["viewer", "admin"], kid="ec-1"))
    least = await viewer(api, idp.token(acme.name, None, kid="ec-1"))
    assert [rs, es, least] == [
        ("operator", acme.name),
        ("admin", acme.name),
        ("viewer", acme.name),
    ]
    # The role is enforced as a key's is.
    started = (await post(api, idp.token(acme.name, "viewer"), START))["data"]["startExecution"]
    assert started["code"] == "FORBIDDEN", started
    # API keys work as before on the same API.
    assert await viewer(api, acme.admin) == ("admin", acme.name)
    assert await refusal(api, "wfs_00000000_nope") == ("UNAUTHENTICATED", "invalid API key")


async def test_refused_tokens_say_which_check_failed(
    api: str, idp: FakeIdentityProvider, acme: TenantKeys
) -> None:
    now = int(time.time())
    beyond = int(LEEWAY) + 60
    idp.add_key("stranger", publish=False)
    cases = {
        "token expired": idp.token(acme.name, exp=now - beyond),
        "token not yet valid": idp.token(acme.name, nbf=now + beyond),
        "wrong issuer": idp.token(acme.name, iss="https://evil.example/"),
        "wrong audience": idp.token(acme.name, aud="another-api"),
        "unsupported algorithm": forged(idp, acme.name, "HS256"),
        "unsupported algorithm ": forged(idp, acme.name, "none"),
        "unknown signing key": idp.token(acme.name, kid="stranger"),
        "token has no `tenant` claim": idp.token(None),
        "unknown tenant": idp.token("no-such-tenant"),
        "token has no `exp` claim": idp.token(acme.name, exp=None),
        "token has no `sub` claim": idp.token(acme.name, sub=None),
        "token has no `sub` claim ": idp.token(acme.name, sub=""),
        "malformed token": "header.payload.signature",
        "token over 8192 characters": idp.token(acme.name, padding="x" * 8192),
    }
    answers = {expected: await refusal(api, token) for expected, token in cases.items()}
    for expected, (code, message) in answers.items():
        assert code == "UNAUTHENTICATED", (expected, code, message)
        assert message.startswith(expected.strip()), (expected, message)
    # Within the leeway, the same clocks are fine.
    now = int(time.time())
    assert await viewer(api, idp.token(acme.name, exp=now - 1, nbf=now + 1)) == (
        "viewer",
        acme.name,
    )


async def test_junk_kids_do_not_hammer_the_identity_provider(
    api: str, idp: FakeIdentityProvider, acme: TenantKeys
) -> None:
    await viewer(api, idp.token(acme.name))  # the key set is held
    before = idp.requests
    idp.add_key("junk", publish=False)
    for _ in range(10):
        assert await refusal(api, idp.token(acme.name, kid="junk")) == (
            "UNAUTHENTICATED",
            "unknown signing key",
        )
    assert idp.requests - before <= 1, idp.requests - before


async def test_key_rotation_and_a_provider_outage(
    settings: Settings,
    sessions,  # type: ignore[no-untyped-def]
    acme: TenantKeys,
) -> None:
    """Cache and refetch interval of 1 s: a new key is picked up on its first token, a dropped
    key is refused once the cache has moved on, and a provider outage keeps the keys held."""
    idp = FakeIdentityProvider()
    idp.add_key("old")
    options = token_settings(idp, auth_jwks_cache_seconds=1.0, auth_jwks_refetch_seconds=1.0)
    try:
        async with own_service(settings, **options) as api:
            old = idp.token(acme.name, "operator", kid="old")
            assert await viewer(api, old) == ("operator", acme.name)
            idp.add_key("new", publish=False)
            idp.publish("new")  # rotated: the old key is dropped
            await asyncio.sleep(1.1)  # past the refetch interval
            new = idp.token(acme.name, "admin", kid="new")
            assert await viewer(api, new) == ("admin", acme.name)  # fetched for its kid
            await asyncio.sleep(1.1)  # past the cache's age too
            assert await refusal(api, old) == ("UNAUTHENTICATED", "unknown signing key")

            idp.down = True
            await asyncio.sleep(1.1)  # the cache is stale and every fetch fails
            before = idp.requests
            assert await viewer(api, new) == ("admin", acme.name)
            assert idp.requests > before  # it asked, was refused, and kept the key it held
    finally:
        idp.close()


class Socket:
    """A graphql-transport-ws client that sees every message and the close code."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, base: str, bearer: str) -> Socket:
        ws = await websockets.connect(
            base.replace("http://", "ws://") + "/graphql",
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            additional_headers={"X-Forwarded-For": client_ip()},
        )
        payload = {"authorization": f"Bearer {bearer}"}
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        return cls(ws)

    async def recv(self, timeout: float = 10) -> dict[str, Any]:
        return dict(json.loads(await asyncio.wait_for(self.ws.recv(), timeout)))

    async def send(self, op_id: str, query: str) -> None:
        message = {"id": op_id, "type": "subscribe", "payload": {"query": query}}
        await self.ws.send(json.dumps(message))

    async def closed_with(self, timeout: float) -> tuple[int | None, str]:
        """The close code and reason; the messages received until then go to `self.seen`."""
        self.seen: list[dict[str, Any]] = []
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(timeout):
                while True:
                    self.seen.append(json.loads(await self.ws.recv()))
        return self.ws.close_code, self.ws.close_reason or ""


async def test_socket_takes_a_token_and_closes_when_it_expires(
    api: str, idp: FakeIdentityProvider, acme: TenantKeys
) -> None:
    lifetime = 3
    sock = await Socket.connect(
        api, idp.token(acme.name, "operator", kid="ec-1", exp=int(time.time()) + lifetime)
    )
    assert (await sock.recv())["type"] == "connection_ack"
    await sock.send("me", VIEWER)
    me = (await sock.recv())["payload"]["data"]["viewer"]
    assert me == {"role": "OPERATOR", "tenant": {"name": acme.name}}
    await sock.send("feed", (OPS / "ExecutionsFeed.graphql").read_text())  # never completes
    # Expiry plus the leeway, far before the next key re-check (RECHECK).
    code_reason = await sock.closed_with(timeout=lifetime + LEEWAY + RECHECK / 2)
    assert code_reason == (4401, "token expired")
    assert [m for m in sock.seen if m.get("type") == "error"] == []  # the feed ran until then


async def test_socket_refuses_a_bad_token_on_connection_init(
    api: str, idp: FakeIdentityProvider, acme: TenantKeys
) -> None:
    for bearer in (
        idp.token(acme.name, exp=int(time.time()) - 120),
        idp.token("no-such-tenant"),
        forged(idp, acme.name, "none"),
    ):
        sock = await Socket.connect(api, bearer)
        assert await sock.closed_with(timeout=10) == (4403, "Forbidden")


async def test_socket_rechecks_its_token_and_closes_when_its_tenant_is_gone(
    settings: Settings,
    sessions,  # type: ignore[no-untyped-def]
    idp: FakeIdentityProvider,
    acme: TenantKeys,
) -> None:
    recheck = 0.5
    async with own_service(settings, **token_settings(idp, key_recheck_seconds=recheck)) as api:
        sock = await Socket.connect(api, idp.token(acme.name, "admin"))
        assert (await sock.recv())["type"] == "connection_ack"
        await sock.send("feed", (OPS / "ExecutionsFeed.graphql").read_text())
        await asyncio.sleep(recheck * 4)  # several re-checks of a valid token: still open
        await sock.ws.send(json.dumps({"type": "ping"}))
        assert (await sock.recv())["type"] == "pong"
        async with sessions() as session:
            await session.execute(
                text("UPDATE tenants SET name = name || '-renamed' WHERE name = :n"),
                {"n": acme.name},
            )
            await session.commit()
        closed = await sock.closed_with(timeout=recheck * 4 + 10)
        assert closed == (4403, "token refused: unknown tenant")


async def test_a_token_makes_only_keys_that_expire_named_by_its_subject(
    api: str, idp: FakeIdentityProvider, acme: TenantKeys
) -> None:
    create = (OPS / "CreateApiKey.graphql").read_text()
    token = idp.token(acme.name, "admin", sub="alice@idp")
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": client_ip()}

    async def create_key(expires_at: str | None) -> dict[str, Any]:
        variables = {"input": {"name": "ci", "role": "VIEWER", "expiresAt": expires_at}}
        async with httpx.AsyncClient(base_url=api, timeout=30) as http:
            resp = await http.post(
                "/graphql", json={"query": create, "variables": variables}, headers=headers
            )
        return dict(resp.json()["data"]["createApiKey"])

    refused = await create_key(None)
    assert refused["__typename"] == "ValidationError", refused
    assert "needs an `expiresAt`" in refused["message"]
    until = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 30 * 86400))
    made = await create_key(until)
    assert made["__typename"] == "CreatedApiKey", made
    assert made["apiKey"]["createdBy"] == "sub:alice@idp"
    assert made["apiKey"]["expiresAt"] == until


def test_a_principal_names_a_key_or_a_subject() -> None:
    """What audit trails (createdBy, an execution's actor) name is never `sub:None`."""
    tenant = uuid.uuid4()
    with pytest.raises(ValueError, match="API key id or a token subject"):
        Principal(tenant, "acme", "pro", "admin", key_id=None)
    with pytest.raises(ValueError):
        Principal(tenant, "acme", "pro", "admin", key_id=None, subject="")
    assert Principal(tenant, "acme", "pro", "admin", None, subject="alice").subject == "alice"
