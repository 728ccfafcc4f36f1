"""Protection on by default: alias, depth and size limits answer clearly and are not masked."""

from __future__ import annotations

import asyncio

import httpx

from app.settings import Settings
from tests.conftest import TenantKeys
from tests.support import GraphQLClient, free_port


async def test_alias_limit_is_reported_not_masked(client: GraphQLClient) -> None:
    ok = "{ " + " ".join(f"a{i}: viewer {{ role }}" for i in range(5)) + " }"
    assert (await client.raw(ok)).get("errors") is None
    body = await client.raw("{ " + " ".join(f"a{i}: viewer {{ role }}" for i in range(40)) + " }")
    assert body["data"] is None
    assert "aliases" in body["errors"][0]["message"].lower()


async def test_depth_limit_is_reported_not_masked(settings: Settings, tenant: TenantKeys) -> None:
    from app.cli.runner import run_api

    own = settings.model_copy(update={"api_port": free_port(), "graphql_max_depth": 3})
    stop, ready = asyncio.Event(), asyncio.Event()
    api = asyncio.create_task(run_api(own, stop, ready))
    await asyncio.wait_for(ready.wait(), 30)
    try:
        client = GraphQLClient(f"http://127.0.0.1:{own.api_port}", tenant.admin)
        assert (await client.raw("{ viewer { tenant { name } } }")).get("errors") is None
        body = await client.raw("{ executions { edges { node { template { name } } } } }")
        assert "exceeds maximum operation depth" in body["errors"][0]["message"]
    finally:
        stop.set()
        await api


async def test_oversized_request_body_is_refused(server: str, client: GraphQLClient) -> None:
    big = "{ viewer { role } }" + " " * 300_000
    async with httpx.AsyncClient(base_url=server) as http:
        resp = await http.post(
            "/graphql", json={"query": big}, headers={"Authorization": f"Bearer {client.key}"}
        )
    assert resp.status_code == 413
    assert "bytes" in resp.json()["errors"][0]["message"]
