"""GraphQL over HTTP (https://graphql.github.io/graphql-over-http/draft/): the graphql-http
audit against the real API, and what the audit does not look at (406, the rate limit and
field errors under `application/graphql-response+json`, the GraphiQL page); and the real
graphql-ws client set up as docs/frontend.md shows it.

Both run in Node (tests/audit, installed by `make test` with `npm ci`); without node or those
packages those two tests skip and say how to install them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.settings import Settings
from tests.conftest import TenantKeys, make_tenant
from tests.support import GraphQLClient, own_service

AUDIT_DIR = Path(__file__).resolve().parents[1] / "audit"
GRAPHQL_RESPONSE = "application/graphql-response+json"
# Audits knowingly left failing, with why (none today: every MUST, SHOULD and MAY passes).
EXPECTED_NOT_OK: dict[str, str] = {}


async def run_node(*args: str, timeout: float = 120) -> dict[str, Any]:
    """Run a script of tests/audit with node (as a subprocess: the API under test runs in
    this event loop) and return the JSON it prints."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (Node 20+ runs the GraphQL-over-HTTP audit)")
    if not (AUDIT_DIR / "node_modules").is_dir():
        pytest.skip(
            "tests/audit has no node_modules: run `make test` or `npm ci --prefix tests/audit`"
        )
    proc = await asyncio.create_subprocess_exec(
        node, *args, cwd=AUDIT_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    return json.loads(out)


async def test_graphql_http_audit_passes_without_warnings(server: str, tenant: TenantKeys) -> None:
    """graphql-http's server audit (every MUST, SHOULD and MAY) against /graphql with a key."""
    report = await run_node("audit.mjs", f"{server}/graphql", tenant.viewer)
    not_ok = {r["id"]: r for r in report["results"] if r["status"] != "ok"}
    assert set(not_ok) == set(EXPECTED_NOT_OK), json.dumps(not_ok, indent=1)
    assert report["counts"]["error"] == 0 and report["counts"]["warn"] == 0, report["counts"]
    assert report["counts"]["ok"] >= 60, report["counts"]  # the audit ran, all of it


async def post(
    server: str, key: str | None, body: dict[str, Any], accept: str | None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if accept is not None:
        headers["Accept"] = accept
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        return await http.post("/graphql", json=body, headers=headers)


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
        (f"{GRAPHQL_RESPONSE}, application/json;q=0.9", GRAPHQL_RESPONSE),
        (f"application/json, {GRAPHQL_RESPONSE}", GRAPHQL_RESPONSE),
        (f"{GRAPHQL_RESPONSE};q=0.5, application/json", "application/json"),
        ("text/html,application/xhtml+xml,*/*;q=0.8", "application/json"),
    ],
)
async def test_accept_chooses_the_media_type(
    server: str, tenant: TenantKeys, accept: str | None, media_type: str
) -> None:
    resp = await post(server, tenant.viewer, {"query": "{ viewer { role } }"}, accept)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == f"{media_type}; charset=utf-8"
    assert resp.json() == {"data": {"viewer": {"role": "VIEWER"}}}


async def test_no_acceptable_media_type_is_406(server: str, tenant: TenantKeys) -> None:
    """Answered before the operation runs, in plain text: it is no GraphQL response."""
    for accept in ("text/html", "application/xml", "application/json;q=0"):
        resp = await post(server, tenant.viewer, {"query": "{ viewer { role } }"}, accept)
        assert resp.status_code == 406, (accept, resp.text)
        assert resp.headers["content-type"].startswith("text/plain")
        assert "application/graphql-response+json" in resp.text


async def test_graphiql_page_is_still_served_to_a_browser(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        resp = await http.get("/graphql", headers={"Accept": "text/html"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert "graphiql" in resp.text.lower()


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("{ viewer {", None),  # does not parse
        ("{ viewer { noSuchField } }", None),  # does not validate
        ("query($id: ID!) { execution(id: $id) { id } }", {"id": None}),  # variables
    ],
    ids=["parse", "validation", "variables"],
)
async def test_request_errors_are_400_without_data_in_graphql_response_json(
    server: str, tenant: TenantKeys, query: str, variables: dict[str, Any] | None
) -> None:
    body = {"query": query, "variables": variables}
    strict = await post(server, tenant.viewer, body, GRAPHQL_RESPONSE)
    assert strict.status_code == 400, strict.text
    assert strict.headers["content-type"] == f"{GRAPHQL_RESPONSE}; charset=utf-8"
    assert "data" not in strict.json() and strict.json()["errors"]
    # A legacy client keeps what it always got: 200, data null, the same errors.
    legacy = await post(server, tenant.viewer, body, "application/json")
    assert legacy.status_code == 200, legacy.text
    assert legacy.json() == {"data": None, "errors": strict.json()["errors"]}


async def test_field_errors_are_200_with_data_and_their_codes(
    server: str, tenant: TenantKeys
) -> None:
    """A well-formed operation that ran is 200 whatever its fields raised, also when an error
    nulls `data` itself (`execution` is non-null), and the error keeps its extensions.code."""
    unknown = "RXhlY3V0aW9uOjAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMA"
    query = f'{{ viewer {{ role }} execution(id: "{unknown}") {{ id }} }}'
    resp = await post(server, tenant.viewer, {"query": query}, GRAPHQL_RESPONSE)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert "data" in body and body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert body["errors"][0]["path"] == ["execution"]


async def test_node_is_null_for_an_id_that_names_nothing(server: str, tenant: TenantKeys) -> None:
    """`node(id: ID!): Node` is nullable (Relay): no error, the rest of the query answers."""
    unknown = "RXhlY3V0aW9uOjAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMA"
    for node_id in (unknown, "not-an-id"):
        query = f'{{ node(id: "{node_id}") {{ id }} viewer {{ role }} }}'
        resp = await post(server, tenant.viewer, {"query": query}, GRAPHQL_RESPONSE)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"data": {"node": None, "viewer": {"role": "VIEWER"}}}


async def test_a_rate_limited_request_keeps_429_and_retry_after(
    settings: Settings, sessions
) -> None:  # type: ignore[no-untyped-def]
    async with own_service(settings, rate_limit_per_minute=2) as url:
        tenant = await make_tenant(sessions, "free")
        if time.time() % 60 > 55:  # the window is a calendar minute: don't straddle two
            await asyncio.sleep(6)
        query = {"query": "{ viewer { role } }"}
        statuses = [
            (await post(url, tenant.viewer, query, GRAPHQL_RESPONSE)).status_code for _ in range(2)
        ]
        assert statuses == [200, 200]
        for accept in (GRAPHQL_RESPONSE, "application/json"):
            limited = await post(url, tenant.viewer, query, accept)
            assert limited.status_code == 429, limited.text
            assert 1 <= int(limited.headers["Retry-After"]) <= 60
            assert limited.headers["content-type"] == f"{accept}; charset=utf-8"
            assert limited.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
            assert ("data" in limited.json()) == (accept == "application/json")


async def test_guide_graphql_ws_code_follows_an_execution_and_resumes_after_seq(
    server: str, tenant: TenantKeys
) -> None:
    """The guide's own graphql-ws code (connectionParams as a function, followExecution) in
    the real client: every event of a run once and in order until it completes; following
    again from the seq of an event seen gets exactly the events after it."""
    client = GraphQLClient(server, tenant.operator)
    template = (await client.data('{ template(name: "order-summary") { id exampleParams } }'))[
        "template"
    ]
    started = await client.data(
        "mutation($input: StartExecutionInput!) { startExecution(input: $input) "
        "{ ... on Execution { id } ... on UserError { code message } } }",
        {
            "input": {
                "templateId": template["id"],
                "params": {**template["exampleParams"], "wait_seconds": 0},
            }
        },
    )
    execution_id = started["startExecution"]["id"]
    ws_url = server.replace("http", "ws", 1) + "/graphql"
    first = await run_node("subscribe.mjs", ws_url, tenant.viewer, execution_id, "0")
    seqs = [e["seq"] for e in first["events"]]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 3, first
    assert first["events"][-1]["type"] == "COMPLETED"
    resumed = await run_node("subscribe.mjs", ws_url, tenant.viewer, execution_id, str(seqs[-3]))
    assert resumed["events"] == first["events"][-2:]
