"""The API edge against hostile callers (issue 9), on a real API with small limits.

Every operation on a socket counts against the tenant's rate limit and meets the HTTP limits
(depth, aliases, tokens, size); a revoked or deleted key loses its open sockets within
2 x KEY_RECHECK_SECONDS; callers without a valid key are limited per address, bad-key floods
stop costing key lookups, introspection costs extra; an oversize chunked body is a 413; a
cross-origin browser handshake is refused; UNAVAILABLE errors carry no internal detail; a
tenant's open sockets are capped across API replicas (4429), with a place freed by a clean
close, a dropped connection or, for a replica that dies, its lease running out; operations at
once on one socket are capped.

Client addresses come from X-Forwarded-For (uvicorn trusts it from 127.0.0.1, as from a
proxy), so each test's anonymous budget is its own even on a Redis shared with other runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from prometheus_client import REGISTRY
from sqlalchemy import text
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.api.errors import public_message
from app.api.relay import from_global_id
from app.errors import Unavailable
from app.settings import Settings
from app.temporal import connect
from app.tenants.service import hash_key
from tests.conftest import TenantKeys, make_tenant
from tests.support import MAX_LOOP_STALL, free_port, loop_watch, own_service

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"
TENANT_LIMIT = 10  # operations (and socket connects) per tenant per minute
ANONYMOUS_LIMIT = 5  # per client address per minute
RECHECK = 1.0  # seconds between key re-checks of an open socket
MAX_BYTES = 64 * 1024
ALLOWED_ORIGIN = "https://app.example"
VIEWER = "{ viewer { role } }"
HOST_PORT = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}:\d+|localhost:\d+")
WFS = Path(sys.executable).parent / "wfs"


def op(name: str) -> str:
    return (OPS / f"{name}.graphql").read_text()


@pytest.fixture(scope="module")
async def edge(settings: Settings, sessions) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    """An API (no worker) with small limits; yields its base URL."""
    async with own_service(
        settings,
        rate_limit_per_minute=TENANT_LIMIT,
        anonymous_rate_limit_per_minute=ANONYMOUS_LIMIT,
        key_recheck_seconds=RECHECK,
        max_request_bytes=MAX_BYTES,
        graphql_max_depth=3,
        graphql_max_aliases=5,
        graphql_max_tokens=300,
        ws_allowed_origins=[ALLOWED_ORIGIN],
    ) as url:
        yield url


async def fresh_window() -> None:
    """Limits count per calendar minute: start a limit test early in one, not across two."""
    left = 60 - time.time() % 60
    if left < 15:
        await asyncio.sleep(left + 0.2)


def client_ip() -> str:
    """An address of its own (198.18/15, the benchmarking range) for each caller."""
    n = random.getrandbits(16)
    return f"198.18.{n >> 8}.{n & 255}"


async def post(
    base: str, query: str, *, key: str | None = None, ip: str | None = None
) -> httpx.Response:
    headers = {"X-Forwarded-For": ip or client_ip()}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        return await http.post("/graphql", json={"query": query}, headers=headers)


class Socket:
    """A graphql-transport-ws client that sees every message and the close code."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, base: str, key: str | None, **connect: Any) -> Socket:
        # An address of its own unless the test names one (see the module docstring).
        connect.setdefault("additional_headers", {"X-Forwarded-For": client_ip()})
        ws = await websockets.connect(
            base.replace("http://", "ws://") + "/graphql",
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            **connect,
        )
        payload = {"authorization": f"Bearer {key}"} if key else {}
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ack["type"] == "connection_ack", ack
        return cls(ws)

    async def send(self, op_id: str, query: str, variables: dict[str, Any] | None = None) -> None:
        message = {"query": query, "variables": variables or {}}
        await self.ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": message}))

    async def recv(self, timeout: float = 10) -> dict[str, Any]:
        return dict(json.loads(await asyncio.wait_for(self.ws.recv(), timeout)))

    async def outcome(self, op_id: str) -> dict[str, Any]:
        """The first `next` or `error` message of op_id (a query's `complete` follows)."""
        while True:
            message = await self.recv()
            if message.get("id") == op_id and message["type"] in ("next", "error"):
                return message

    async def closed_with(self, timeout: float = 10) -> tuple[int | None, str]:
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(timeout):
                while True:
                    await self.ws.recv()
        return self.ws.close_code, self.ws.close_reason or ""

    async def alive(self) -> bool:
        await self.ws.send(json.dumps({"type": "ping"}))
        while True:
            message = await self.recv()
            if message["type"] == "pong":
                return True


def graphql_error(message: dict[str, Any]) -> dict[str, Any]:
    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    return dict(errors[0])


async def test_every_socket_operation_counts_against_the_tenant_limit(edge: str, sessions) -> None:  # type: ignore[no-untyped-def]
    await fresh_window()
    keys = await make_tenant(sessions, "free")
    sock = await Socket.open(edge, keys.admin)  # the connect is request 1
    for i in range(TENANT_LIMIT - 1):
        await sock.send(f"q{i}", VIEWER)
        answer = await sock.outcome(f"q{i}")
        assert answer["type"] == "next" and answer["payload"]["data"] == {
            "viewer": {"role": "ADMIN"}
        }, answer

    # Over the limit: each operation, queries and mutations alike, is refused on its own...
    for op_id, query in (("over-q", VIEWER), ("over-m", op("SendExecutionEvent"))):
        await sock.send(op_id, query, {"input": {"executionId": "x", "name": "e"}})
        refused = await sock.outcome(op_id)
        assert refused["type"] == "error", refused
        error = graphql_error(refused)
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert f"{TENANT_LIMIT} requests per minute" in error["message"]
    # ...the socket stays usable, and HTTP shares the same budget.
    assert await sock.alive()
    over_http = await post(edge, VIEWER, key=keys.viewer)
    assert over_http.status_code == 429
    assert over_http.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"

    # A flood of `subscribe` messages: every one refused, none runs, the loop keeps ticking.
    flood = [f"f{i}" for i in range(300)]
    async with loop_watch() as watch:
        for op_id in flood:
            await sock.send(op_id, VIEWER)
        answers = {}
        while len(answers) < len(flood):
            message = await sock.recv()
            if message.get("id") in flood and message["type"] in ("next", "error"):
                answers[message["id"]] = message
    assert {m["type"] for m in answers.values()} == {"error"}
    assert {graphql_error(m)["extensions"]["code"] for m in answers.values()} == {"RATE_LIMITED"}
    assert watch.worst < MAX_LOOP_STALL, f"event loop stalled {watch.worst * 1000:.0f} ms"
    assert await sock.alive()
    await sock.ws.close()


async def test_http_limits_apply_to_every_socket_operation(edge: str, sessions) -> None:  # type: ignore[no-untyped-def]
    keys = await make_tenant(sessions, "free")
    sock = await Socket.open(edge, keys.admin)
    await sock.send("ok", "{ viewer { tenant { name } } }")
    assert (await sock.outcome("ok"))["type"] == "next"

    await sock.send("deep", "{ executions { edges { node { template { name } } } } }")
    deep = await sock.outcome("deep")
    assert deep["type"] == "error"
    assert "exceeds maximum operation depth" in graphql_error(deep)["message"]

    aliases = "{ " + " ".join(f"a{i}: viewer {{ role }}" for i in range(6)) + " }"
    await sock.send("aliases", aliases)
    refused = await sock.outcome("aliases")
    assert refused["type"] == "error"
    assert "aliases" in graphql_error(refused)["message"].lower()

    # Too many tokens is a syntax error, which graphql-transport-ws answers by closing (4400).
    await sock.send("tokens", "{ viewer { " + "role " * 400 + "} }")
    code, reason = await sock.closed_with()
    assert code == 4400 and "300 tokens" in reason, (code, reason)


async def test_oversize_socket_message_closes_the_socket(edge: str, sessions) -> None:  # type: ignore[no-untyped-def]
    keys = await make_tenant(sessions, "free")
    sock = await Socket.open(edge, keys.admin)

    def message(op_id: str, size: int) -> str:
        body = {"id": op_id, "type": "subscribe", "payload": {"query": VIEWER}}
        padding = size - len(json.dumps(body))
        body["payload"]["query"] = VIEWER + " " * padding
        raw = json.dumps(body)
        assert len(raw) == size
        return raw

    await sock.ws.send(message("fits", MAX_BYTES))  # whitespace is no token: it just fits
    assert (await sock.outcome("fits"))["type"] == "next"
    await sock.ws.send(message("over", MAX_BYTES + 1))
    code, reason = await sock.closed_with()
    assert code == 4413 and str(MAX_BYTES) in reason, (code, reason)


async def test_json_nested_beyond_python_recursion_is_refused_not_a_crash(
    edge: str, sessions
) -> None:  # type: ignore[no-untyped-def]
    keys = await make_tenant(sessions, "free")
    depth = 20_000  # under MAX_BYTES, far over Python's recursion limit
    variables = '{"s": ' + "[" * depth + "]" * depth + "}"
    query = json.dumps("query($s: JSON!) { validateTemplate(spec: $s) { valid } }")
    document = '{"query": ' + query + ', "variables": ' + variables + "}"
    async with httpx.AsyncClient(base_url=edge, timeout=30) as http:
        resp = await http.post(
            "/graphql",
            content=document,
            headers={"Authorization": f"Bearer {keys.viewer}", "Content-Type": "application/json"},
        )
    assert resp.status_code == 400, resp.text[:200]
    sock = await Socket.open(edge, keys.viewer)
    await sock.ws.send('{"id": "deep", "type": "subscribe", "payload": ' + document + "}")
    assert await sock.closed_with() == (4400, "WebSocket message must be valid JSON")


async def test_revoked_or_deleted_key_loses_its_open_sockets(edge: str, sessions) -> None:  # type: ignore[no-untyped-def]
    keys = await make_tenant(sessions, "pro")
    revoked, deleted, kept = (
        await Socket.open(edge, keys.admin),
        await Socket.open(edge, keys.operator),
        await Socket.open(edge, keys.viewer),
    )
    for sock in (revoked, deleted, kept):
        await sock.send("feed", op("ExecutionsFeed"))  # never completes on its own
    await asyncio.sleep(0.3)

    async def change(statement: str, key: str) -> float:
        async with sessions() as session:
            await session.execute(text(statement), {"h": hash_key(key)})
            await session.commit()
        return time.monotonic()

    changed = await change("UPDATE api_keys SET revoked_at = now() WHERE key_hash = :h", keys.admin)
    assert await revoked.closed_with(timeout=2 * RECHECK + 5) == (4403, "API key revoked")
    took = time.monotonic() - changed
    assert took <= 2 * RECHECK, f"revoked key's socket closed after {took:.2f}s"

    changed = await change("DELETE FROM api_keys WHERE key_hash = :h", keys.operator)
    assert await deleted.closed_with(timeout=2 * RECHECK + 5) == (4403, "API key revoked")
    took = time.monotonic() - changed
    assert took <= 2 * RECHECK, f"deleted key's socket closed after {took:.2f}s"

    # The tenant's other key keeps its socket; the revoked key cannot come back.
    await asyncio.sleep(RECHECK * 1.5)
    assert await kept.alive()
    await kept.ws.close()
    with pytest.raises(ConnectionClosed):
        await Socket.open(edge, keys.admin)
    body = (await post(edge, VIEWER, key=keys.admin)).json()
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_callers_without_a_valid_key_are_limited_per_address(edge: str) -> None:
    await fresh_window()
    flooder, bystander = client_ip(), client_ip()
    answers = [await post(edge, VIEWER, ip=flooder) for _ in range(ANONYMOUS_LIMIT + 1)]
    assert [a.status_code for a in answers] == [200] * ANONYMOUS_LIMIT + [429]
    assert answers[0].json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    refused = answers[-1]
    assert refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert (await post(edge, VIEWER, ip=bystander)).status_code == 200

    # Bad keys count too, and once the address is over its budget they cost no key lookup.
    guesser = client_ip()
    lookups = REGISTRY.get_sample_value("wfs_auth_failures_total") or 0.0
    statuses = [
        (await post(edge, VIEWER, key=f"wfs_{uuid.uuid4().hex[:8]}_guess", ip=guesser)).status_code
        for _ in range(3 * ANONYMOUS_LIMIT)
    ]
    assert statuses == [200] * ANONYMOUS_LIMIT + [429] * (2 * ANONYMOUS_LIMIT)
    after = REGISTRY.get_sample_value("wfs_auth_failures_total") or 0.0
    assert after - lookups == ANONYMOUS_LIMIT

    # A socket connect without a key spends the address's budget as well.
    with pytest.raises(ConnectionClosed):
        await Socket.open(edge, None, additional_headers={"X-Forwarded-For": bystander})
    statuses = [(await post(edge, VIEWER, ip=bystander)).status_code for _ in range(4)]
    assert statuses == [200] * (ANONYMOUS_LIMIT - 2) + [429]


async def test_introspection_costs_extra(edge: str, sessions) -> None:  # type: ignore[no-untyped-def]
    await fresh_window()
    keys = await make_tenant(sessions, "free")
    introspection = "{ __schema { queryType { name } } }"
    allowed = await post(edge, introspection, key=keys.admin)
    assert allowed.json()["data"] == {"__schema": {"queryType": {"name": "Query"}}}
    # One introspection spent the tenant's whole budget of TENANT_LIMIT.
    assert (await post(edge, VIEWER, key=keys.admin)).status_code == 429
    # Anonymous callers may introspect (GraphiQL does on load), at the same price.
    anonymous = await post(edge, introspection)
    assert anonymous.status_code == 429
    assert anonymous.json()["data"] is None


async def test_oversize_chunked_body_is_413_like_a_declared_one(
    edge: str, tenant: TenantKeys
) -> None:
    headers = {
        "Authorization": f"Bearer {tenant.admin}",
        "Content-Type": "application/json",
        "X-Forwarded-For": client_ip(),
    }

    def body(size: int) -> bytes:
        head = json.dumps({"query": VIEWER})[:-1].encode()
        return head + b" " * (size - len(head) - 1) + b"}"

    async def chunked(data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), 8192):
            yield data[start : start + 8192]

    async with httpx.AsyncClient(base_url=edge, timeout=30) as http:
        fits = await http.post("/graphql", content=chunked(body(MAX_BYTES)), headers=headers)
        over = await http.post("/graphql", content=chunked(body(MAX_BYTES + 1)), headers=headers)
        declared = await http.post("/graphql", content=body(MAX_BYTES + 1), headers=headers)
    assert "content-length" not in fits.request.headers
    assert fits.status_code == 200 and fits.json()["data"] == {"viewer": {"role": "ADMIN"}}
    assert over.status_code == declared.status_code == 413
    assert (
        over.json()
        == declared.json()
        == {"errors": [{"message": f"request body over {MAX_BYTES} bytes"}]}
    )


async def test_socket_origin_rule(edge: str, tenant: TenantKeys) -> None:
    port = edge.rsplit(":", 1)[1]
    for origin in ("https://evil.example", "null", f"http://127.0.0.1.evil.example:{port}"):
        with pytest.raises(InvalidStatus) as refused:
            await Socket.open(edge, tenant.viewer, origin=origin)
        assert refused.value.response.status_code == 403, origin
    # Same origin, a configured origin, and non-browser clients (no Origin) connect.
    for origin in (f"http://127.0.0.1:{port}", ALLOWED_ORIGIN, None):
        sock = await Socket.open(edge, tenant.viewer, origin=origin)
        assert await sock.alive()
        await sock.ws.close()


async def test_unavailable_errors_say_what_failed_never_the_internal_why(
    edge: str, settings: Settings, sessions
) -> None:  # type: ignore[no-untyped-def]
    # An execution whose workflow is gone: the signal fails with Temporal's RPC message.
    keys = await make_tenant(sessions, "pro")
    params = {
        "customer": "Edge",
        "items": [{"sku": "e", "qty": 1, "price": 1}],
        "wait_seconds": 60,
    }
    async with httpx.AsyncClient(base_url=edge, timeout=30) as http:

        async def gql(document: str, variables: dict[str, Any]) -> dict[str, Any]:
            resp = await http.post(
                "/graphql",
                json={"query": document, "variables": variables},
                headers={"Authorization": f"Bearer {keys.admin}", "X-Forwarded-For": client_ip()},
            )
            return dict(resp.json()["data"])

        run = await gql(
            op("StartExecution"),
            {"input": {"templateName": "order-summary", "params": params}},
        )
        execution_id = run["startExecution"]["id"]
        async with sessions() as session:
            workflow_id = (
                await session.execute(
                    text("SELECT workflow_id FROM executions WHERE id = :id"),
                    {"id": from_global_id(execution_id)[1]},
                )
            ).scalar_one()
        assert settings.temporal_address
        temporal = await connect(settings)
        await temporal.get_workflow_handle(workflow_id).terminate("test: workflow gone")
        sent = await gql(
            op("SendExecutionEvent"),
            {"input": {"executionId": execution_id, "name": "go"}},
        )
    answer = sent["sendExecutionEvent"]
    assert answer == {
        "__typename": "UnavailableError",
        "code": "UNAVAILABLE",
        "message": "could not deliver the event",
    }
    # The rule itself, on the kind of text Temporal's client gives when it cannot connect.
    internal = Unavailable("could not reach the workflow: tcp connect error 10.0.3.7:7233")
    assert public_message(internal) == "could not reach the workflow"
    assert not HOST_PORT.search(public_message(internal))


# -- open sockets per tenant, operations per socket ----------------------------------------

SOCKET_LIMITS = {  # small caps, and a short lease (3 x the key re-check) for a dead replica
    "ws_max_sockets_per_tenant": 3,
    "ws_max_operations_per_socket": 2,
    "key_recheck_seconds": 0.5,
}
TOO_MANY = (4429, "too many open sockets: this tenant has 3, at most 3; close one")


@asynccontextmanager
async def api_process(
    settings: Settings, logs: Path, **overrides: Any
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """`wfs api` in a process of its own (a replica that can die), run in `logs` (an empty
    folder: no .env) and writing its log there; yields its URL and process."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "TEMPORAL_ADDRESS": settings.temporal_address or "",
        "TEMPORAL_NAMESPACE": settings.temporal_namespace,
        **{name.upper(): str(value) for name, value in overrides.items()},
    }
    with (logs / "api.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            str(WFS), "api", "--port", str(port), env=env, cwd=logs, stdout=log, stderr=log
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(60), httpx.AsyncClient(base_url=base, timeout=5) as http:
            while True:
                assert proc.returncode is None, (logs / "api.log").read_text()[-2000:]
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.2)
        yield base, proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def refused_connect(base: str, key: str) -> tuple[int | None, str]:
    """The close code and reason a socket gets instead of `connection_ack`."""
    ws = await websockets.connect(
        base.replace("http://", "ws://") + "/graphql",
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
    )
    await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": key}}))
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(10):
            while True:
                message = json.loads(await ws.recv())
                assert message["type"] != "connection_ack", "over the cap, yet acknowledged"
    return ws.close_code, ws.close_reason or ""


async def open_when_free(base: str, key: str, timeout: float = 15) -> Socket:
    """A socket, as soon as the tenant has a free place again (refused until then)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await Socket.open(base, key)
            except ConnectionClosed as refused:
                assert refused.rcvd is not None and refused.rcvd.code == TOO_MANY[0], refused
            await asyncio.sleep(0.3)


async def test_open_sockets_are_capped_per_tenant_across_replicas(
    settings: Settings, sessions, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    keys, other = await make_tenant(sessions, "pro"), await make_tenant(sessions, "pro")
    bearer = f"Bearer {keys.viewer}"
    async with (
        own_service(settings, **SOCKET_LIMITS) as here,
        api_process(settings, tmp_path, **SOCKET_LIMITS) as (there, replica),
    ):
        first, second = await Socket.open(here, keys.viewer), await Socket.open(here, keys.admin)
        on_replica = await Socket.open(there, keys.viewer)
        # The cap counts the tenant's sockets on every replica, and refuses on every replica.
        assert await refused_connect(here, bearer) == TOO_MANY
        assert await refused_connect(there, bearer) == TOO_MANY
        assert await first.alive() and await on_replica.alive()  # the open ones are unharmed
        elsewhere = await Socket.open(here, other.viewer)  # another tenant's count is its own
        await elsewhere.ws.close()

        # Operations at once on one socket: one more is refused with an error, not run.
        for op_id in ("feed-1", "feed-2"):
            await first.send(op_id, op("ExecutionsFeed"))  # never complete on their own
        await first.send("third", VIEWER)
        refused = await first.outcome("third")
        assert refused["type"] == "error", refused
        error = graphql_error(refused)
        assert error["extensions"]["code"] == "QUOTA_EXCEEDED"
        assert error["message"] == (
            "at most 2 operations run at once on one socket; complete one or open another socket"
        )
        await first.ws.send(json.dumps({"id": "feed-1", "type": "complete"}))
        await first.send("fourth", VIEWER)  # a place is free again
        assert (await first.outcome("fourth"))["type"] == "next"

        # A clean close frees a place.
        await second.ws.close()
        third = await open_when_free(here, keys.admin)
        assert await refused_connect(here, bearer) == TOO_MANY
        # So does a connection that just drops (no close frame): the server notices the end.
        third.ws.transport.abort()
        fourth = await open_when_free(here, keys.admin)
        assert await refused_connect(here, bearer) == TOO_MANY
        # A replica that dies never releases its sockets: their leases run out instead.
        replica.kill()
        await replica.wait()
        fifth = await open_when_free(here, keys.admin)
        assert await refused_connect(here, bearer) == TOO_MANY
        for sock in (first, fourth, fifth):
            await sock.ws.close()


async def test_queue_status_subscriptions_of_a_tenant_share_one_reading(
    server: str, tenant: TenantKeys
) -> None:
    """Many `queueStatus` subscriptions cost one reading a second per tenant and process:
    subscribers started together get the same snapshot (the same `at`), not one each."""
    import json

    import websockets

    ws_url = server.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(
            json.dumps(
                {"type": "connection_init", "payload": {"authorization": f"Bearer {tenant.viewer}"}}
            )
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        for i in range(10):
            await ws.send(
                json.dumps(
                    {
                        "id": str(i),
                        "type": "subscribe",
                        "payload": {
                            "query": "subscription { queueStatus(intervalSeconds: 1) { at } }"
                        },
                    }
                )
            )
        first: dict[str, str] = {}
        async with asyncio.timeout(20):
            while len(first) < 10:
                msg = json.loads(await ws.recv())
                if msg["type"] == "next" and msg["id"] not in first:
                    first[msg["id"]] = msg["payload"]["data"]["queueStatus"][0]["at"]
    assert len(set(first.values())) <= 2, first
