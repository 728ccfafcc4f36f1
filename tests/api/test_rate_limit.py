"""Per-tenant rate limit: past it a tenant gets 429 with RATE_LIMITED; others are unaffected."""

from __future__ import annotations

import asyncio
import time

import httpx

from app.settings import Settings
from tests.conftest import make_tenant
from tests.support import free_port


async def test_tenant_over_its_limit_gets_429_and_other_tenants_do_not(
    settings: Settings, sessions
) -> None:  # type: ignore[no-untyped-def]
    from app.cli.runner import run_api

    own = settings.model_copy(update={"api_port": free_port(), "rate_limit_per_minute": 5})
    stop, ready = asyncio.Event(), asyncio.Event()
    api = asyncio.create_task(run_api(own, stop, ready))
    await asyncio.wait_for(ready.wait(), 30)
    busy, quiet = await make_tenant(sessions, "free"), await make_tenant(sessions, "free")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{own.api_port}") as http:

            async def ask(key: str) -> httpx.Response:
                return await http.post(
                    "/graphql",
                    json={"query": "{ viewer { role } }"},
                    headers={"Authorization": f"Bearer {key}"},
                )

            if time.time() % 60 > 55:  # the window is a calendar minute: don't straddle two
                await asyncio.sleep(6)
            # Two keys of one tenant share its budget.
            statuses = [(await ask(k)).status_code for k in [busy.admin, busy.viewer] * 3]
            assert statuses == [200] * 5 + [429]
            limited = await ask(busy.operator)
            assert limited.status_code == 429
            assert 1 <= int(limited.headers["Retry-After"]) <= 60
            error = limited.json()["errors"][0]
            assert error["extensions"]["code"] == "RATE_LIMITED"
            assert "5 requests per minute" in error["message"]
            assert (await ask(quiet.admin)).status_code == 200
    finally:
        stop.set()
        await api
