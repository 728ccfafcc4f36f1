"""CORS and the socket Origin rule, seen from pages on other origins in a real Chromium: a page
on an origin in CORS_ALLOWED_ORIGINS reads the API with its key over HTTP and the WebSocket;
a page on any other origin gets neither."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.api.app import create_app
from app.api.cors import cors_origins, socket_origins
from app.settings import Settings
from tests.browser.conftest import PageServer
from tests.conftest import TenantKeys, make_tenant
from tests.support import own_service

MAX_AGE = 321

FETCH = """async ([url, key]) => {
  try {
    const response = await fetch(url, {
      method: "POST",
      headers: {"Content-Type": "application/json", "Authorization": "Bearer " + key},
      body: JSON.stringify({query: "{ viewer { role tenant { name } } }"}),
    });
    return {status: response.status, body: await response.json()};
  } catch (error) {
    return {error: error.name + ": " + error.message};
  }
}"""

# Opens the socket and sends connection_init; answers the first message's type, or how the
# socket closed before one came.
SOCKET = """([url, key]) => new Promise((resolve) => {
  const ws = new WebSocket(url, "graphql-transport-ws");
  ws.onopen = () => ws.send(JSON.stringify(
    {type: "connection_init", payload: {authorization: "Bearer " + key}}));
  ws.onmessage = (event) => { resolve(JSON.parse(event.data).type); ws.close(); };
  ws.onclose = (event) => resolve("closed " + event.code);
})"""


@pytest.fixture(scope="module")
async def api(settings: Settings, sessions, allowed_site: PageServer) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    async with own_service(
        settings,
        cors_allowed_origins=[allowed_site.origin],
        cors_max_age=MAX_AGE,
        # The browser calls from 127.0.0.1, an address other tests spend anonymously too.
        anonymous_rate_limit_per_minute=10_000,
    ) as url:
        yield url


@pytest.fixture(scope="module")
async def keys(sessions) -> TenantKeys:  # type: ignore[no-untyped-def]
    return await make_tenant(sessions, "pro")


async def page_on(browser: Any, site: PageServer) -> Any:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(site.origin + "/")
    return page


async def test_a_listed_origin_reads_the_api_with_its_key(
    browser: Any, api: str, allowed_site: PageServer, keys: TenantKeys
) -> None:
    page = await page_on(browser, allowed_site)
    try:
        answer = await page.evaluate(FETCH, [f"{api}/graphql", keys.viewer])
        assert answer == {
            "status": 200,
            "body": {"data": {"viewer": {"role": "VIEWER", "tenant": {"name": keys.name}}}},
        }
        socket = api.replace("http://", "ws://") + "/graphql"
        assert await page.evaluate(SOCKET, [socket, keys.viewer]) == "connection_ack"
    finally:
        await page.context.close()


async def test_another_origin_gets_neither_http_nor_the_socket(
    browser: Any, api: str, foreign_site: PageServer, keys: TenantKeys
) -> None:
    page = await page_on(browser, foreign_site)
    try:
        answer = await page.evaluate(FETCH, [f"{api}/graphql", keys.viewer])
        assert answer == {"error": "TypeError: Failed to fetch"}
        socket = api.replace("http://", "ws://") + "/graphql"
        # Refused with 403 before the upgrade: the browser reports an abnormal close (1006).
        assert await page.evaluate(SOCKET, [socket, keys.viewer]) == "closed 1006"
    finally:
        await page.context.close()


async def test_preflight_and_response_headers(
    api: str, settings: Settings, allowed_site: PageServer, foreign_site: PageServer
) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        allowed = await http.options(
            "/graphql", headers={"Origin": allowed_site.origin, **preflight}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == allowed_site.origin
        assert allowed.headers["access-control-max-age"] == str(MAX_AGE)
        assert "POST" in allowed.headers["access-control-allow-methods"]
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in allowed.headers

        refused = await http.options(
            "/graphql", headers={"Origin": foreign_site.origin, **preflight}
        )
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers

        answered = await http.post(
            "/graphql",
            json={"query": "{ __typename }"},
            headers={"Origin": allowed_site.origin},
        )
        assert answered.headers["access-control-allow-origin"] == allowed_site.origin
        exposed = answered.headers["access-control-expose-headers"].split(", ")
        assert exposed == ["Retry-After", "X-Request-ID"]
        assert "origin" in answered.headers["vary"].lower()

        # A refusal below the CORS layer is readable by the page too (it can say why).
        oversize = await http.post(
            "/graphql",
            content=b"x" * (settings.max_request_bytes + 1),
            headers={"Origin": allowed_site.origin, "Content-Type": "application/json"},
        )
        assert oversize.status_code == 413
        assert oversize.headers["access-control-allow-origin"] == allowed_site.origin


@pytest.mark.parametrize(
    "origins",
    [["*"], ["https://app.example/path"], ["app.example"], ["null"], ["https://ok.example", "*"]],
)
def test_origins_that_are_not_exact_stop_the_api_at_startup(
    settings: Settings, origins: list[str]
) -> None:
    bad = settings.model_copy(update={"cors_allowed_origins": origins})
    with pytest.raises(ValueError, match="CORS_ALLOWED_ORIGINS"):
        create_app(bad)


def test_the_socket_allows_the_cors_origins_and_the_deprecated_list(settings: Settings) -> None:
    both = settings.model_copy(
        update={
            "cors_allowed_origins": ["https://App.example:443", "http://localhost:3000"],
            "ws_allowed_origins": ["https://legacy.example"],
        }
    )
    assert cors_origins(both) == ["http://localhost:3000", "https://app.example"]
    assert socket_origins(both) == [
        "http://localhost:3000",
        "https://app.example",
        "https://legacy.example",
    ]
