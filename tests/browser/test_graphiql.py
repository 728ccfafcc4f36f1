"""GraphiQL in a real Chromium, from the service's own files only: every request that is not
to the service is aborted and recorded, and the tests assert there was none."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import expect
from starlette.requests import Request

from app.api.graphiql.fetch import PACKAGES, VENDOR, check_integrity, is_complete
from app.api.graphiql.page import SCRIPTS, STYLES, GraphiQLSite
from app.settings import Settings
from tests.browser.conftest import STEP_MS
from tests.conftest import TenantKeys, make_tenant
from tests.support import own_service

EDITOR = ".graphiql-query-editor .CodeMirror"
RESPONSE = ".graphiql-response"
RUN = ".graphiql-execute-button"


@pytest.fixture(scope="module")
async def api(settings: Settings, sessions) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    # The browser calls from 127.0.0.1, an address other tests spend anonymously too.
    async with own_service(settings, anonymous_rate_limit_per_minute=10_000) as url:
        yield url


@pytest.fixture(scope="module")
async def keys(sessions) -> TenantKeys:  # type: ignore[no-untyped-def]
    return await make_tenant(sessions, "pro")


@dataclass
class Offline:
    """A browser context whose network reaches the service and nothing else."""

    context: Any
    aborted: list[str] = field(default_factory=list)  # URLs of requests not to the service
    errors: list[str] = field(default_factory=list)  # console errors (CSP violations too)
    sent: list[str] = field(default_factory=list)  # WebSocket frames the page sent

    def _watch_socket(self, socket: Any) -> None:
        socket.on("framesent", lambda data: self.sent.append(str(data)))

    async def page(self, url: str) -> Any:
        page = await self.context.new_page()
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("websocket", self._watch_socket)
        await page.goto(url)
        await page.locator(EDITOR).wait_for(timeout=STEP_MS)
        return page


@pytest.fixture
async def offline(browser: Any, api: str) -> AsyncIterator[Offline]:
    context = await browser.new_context()
    offline = Offline(context)

    async def only_the_service(route: Any) -> None:
        if route.request.url.startswith(api + "/"):
            await route.continue_()
        else:
            offline.aborted.append(route.request.url)
            await route.abort()

    await context.route("**/*", only_the_service)
    try:
        yield offline
    finally:
        await context.close()


async def run(page: Any, document: str) -> None:
    """Type `document` into the query editor (replacing what it holds) and run it."""
    await page.locator(EDITOR).click()
    await page.keyboard.press("Control+A")
    await page.keyboard.press("Delete")
    # The editor closes brackets as they open; typing the closing one steps over it.
    await page.keyboard.type(document)
    await page.keyboard.press("Escape")  # an open autocomplete list
    # GraphiQL reads the operation name from the editor after a debounce, and stores the
    # query in the same step: run before that and it sends the previous operation's name.
    await page.wait_for_function(
        "doc => localStorage.getItem('graphiql:query') === doc", arg=document, timeout=STEP_MS
    )
    await page.locator(RUN).click()


async def test_graphiql_runs_a_query_offline_with_the_key_from_the_url(
    offline: Offline, api: str, keys: TenantKeys
) -> None:
    page = await offline.page(f"{api}/graphql#apiKey={keys.viewer}")
    assert "apiKey" not in page.url and keys.viewer not in page.url
    await run(page, "query Who { viewer { role tenant { name } } }")
    await expect(page.locator(RESPONSE)).to_contain_text(keys.name, timeout=STEP_MS)
    await expect(page.locator(RESPONSE)).to_contain_text("VIEWER")

    # The explorer plugin is there and draws the schema's fields.
    await page.get_by_role("button", name=re.compile("GraphiQL Explorer")).click()
    await expect(page.locator(".graphiql-explorer-root")).to_contain_text("viewer")

    # A later visit without the key: GraphiQL remembered the headers (and the query).
    again = await offline.page(f"{api}/graphql")
    await again.locator(RUN).click()
    await expect(again.locator(RESPONSE)).to_contain_text(keys.name, timeout=STEP_MS)

    # Another fragment key replaces the remembered one.
    other = await offline.page(f"{api}/graphql#apiKey={keys.admin}")
    await run(other, "{ viewer { role } }")
    await expect(other.locator(RESPONSE)).to_contain_text("ADMIN", timeout=STEP_MS)

    # A query string is never read (proxies log it before any script runs): the remembered
    # admin key still answers, not the operator key in the address.
    logged = await offline.page(f"{api}/graphql?apiKey={keys.operator}")
    await run(logged, "{ viewer { role } }")
    await expect(logged.locator(RESPONSE)).to_contain_text("ADMIN", timeout=STEP_MS)

    assert offline.aborted == []
    assert offline.errors == []


async def test_graphiql_runs_a_subscription_over_the_socket_with_the_headers_key(
    offline: Offline, api: str, keys: TenantKeys
) -> None:
    page = await offline.page(f"{api}/graphql#apiKey={keys.viewer}")
    await run(page, "subscription Queues { queueStatus(intervalSeconds: 1) { name purpose } }")
    await expect(page.locator(RESPONSE)).to_contain_text("WORKFLOWS", timeout=STEP_MS)
    await page.locator(RUN).click()  # stop
    init = [frame for frame in offline.sent if '"connection_init"' in frame]
    assert len(init) == 1 and f'"authorization":"Bearer {keys.viewer}"' in init[0]
    assert offline.aborted == []
    assert offline.errors == []


async def test_the_browser_enforces_the_policy(offline: Offline, api: str) -> None:
    page = await offline.page(f"{api}/graphql")
    # An injected inline script (what an XSS would add) does not run, and says why.
    with pytest.raises(PlaywrightError, match="violates the following Content Security Policy"):
        await page.add_script_tag(content="window.injected = true;")
    assert await page.evaluate("window.injected === undefined")


async def test_page_has_no_inline_script_and_a_strict_policy(api: str) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        page = await http.get("/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 200
        policy = page.headers["content-security-policy"]
        host = api.removeprefix("http://")
        assert "script-src 'self';" in policy and "style-src 'self';" in policy
        assert f"connect-src 'self' ws://{host} wss://{host};" in policy
        assert "frame-ancestors 'none'" in policy
        # A Host that is not a host name never reaches the policy.
        odd = await http.get("/graphql", headers={"Accept": "text/html", "Host": "x;script-src *"})
        assert "connect-src 'self';" in odd.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        # Every script is a file of ours; no script element has a body.
        scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
        assert len(scripts) == len(SCRIPTS) + 1
        assert all('src="graphiql/' in attrs and body == "" for attrs, body in scripts)
        sources = re.findall(r'(?:src|href)="(graphiql/[^"]+)"', page.text)
        assert len(sources) == len(SCRIPTS) + len(STYLES) + 2
        for source in sources:
            asset = await http.get(f"/{source}")
            assert asset.status_code == 200, source
            assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
            kind = "text/css" if source.endswith(".css") else "text/javascript"
            assert asset.headers["content-type"].startswith(kind), source
        # Only the listed files: nothing else of the package folder, no path outside it.
        for path in (
            "/graphiql/react@18.3.1/package.json",
            "/graphiql/../settings.py",
            "/graphiql/fetch.py",
        ):
            assert (await http.get(path)).status_code == 404, path
        # API clients are unaffected: a GET with a query is GraphQL.
        answered = await http.get("/graphql", params={"query": "{ __typename }"})
        assert answered.json() == {"data": {"__typename": "Query"}}


async def test_graphiql_false_turns_page_and_files_off(settings: Settings, sessions) -> None:  # type: ignore[no-untyped-def]
    async with (
        own_service(settings, graphiql=False) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        assert (await http.get("/graphql", headers={"Accept": "text/html"})).status_code == 404
        assert (await http.get(f"/graphiql/{SCRIPTS[0]}")).status_code == 404


def test_without_its_files_the_page_says_how_to_get_them(tmp_path: Path) -> None:
    request = Request({"type": "http", "method": "GET", "path": "/graphql", "headers": []})
    missing = GraphiQLSite(vendor=tmp_path).page(request)
    assert missing.status_code == 503
    text = bytes(missing.body).decode()
    assert "make install" in text and "python -m app.api.graphiql.fetch" in text
    assert "<script" not in text and "unpkg" not in text
    assert str(tmp_path) not in text  # no server path shown to whoever asks
    assert GraphiQLSite().page(request).status_code == 200


def test_vendor_files_are_the_pinned_ones() -> None:
    assert is_complete(VENDOR), "run `make install` (python -m app.api.graphiql.fetch)"
    for package in PACKAGES:
        assert any("LICENSE" in name or name == "package.json" for name in package.files)
    good = b"tarball bytes"
    pin = "sha512-" + base64.b64encode(hashlib.sha512(good).digest()).decode()
    check_integrity(good, pin)
    with pytest.raises(ValueError, match="integrity mismatch"):
        check_integrity(good + b"!", pin)
