"""Values JSON, Temporal or PostgreSQL cannot carry (NaN, Infinity, NUL characters, nesting past
the limit) never wedge an execution: refused where they enter (a step's output, an event's
payload), and recorded harmlessly if they get further."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from app.executions.recorder import Recorder
from app.executions.workflow_io import EventRecord
from app.models import Execution, ExecutionEvent
from tests.api.test_enhancement_metrics import new_execution
from tests.api.test_execution_flow import wait_terminal
from tests.conftest import TenantKeys
from tests.support import GraphQLClient
from tests.templates.template_kit import make_spec, op, published, start


def parse_spec(text_expr: str) -> dict[str, Any]:
    return make_spec(
        parameters={"type": "object", "properties": {"text": {"type": "string"}}},
        steps=[
            {
                "id": "parse",
                "activity": "data.parse",
                "input": {"text": text_expr, "format": "json"},
            }
        ],
        example_params={"text": "[]"},
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[NaN, Infinity, 1e999]", "NaN or Infinity"),
        ('["a\\u0000b"]', "NUL character"),
        ('["a\\ud800b"]', "lone surrogate"),
        ("[" * 900 + "]" * 900, "nested"),
    ],
    ids=["nan", "nul", "surrogate", "deep"],
)
async def test_a_step_output_json_cannot_carry_fails_the_step_not_the_execution(
    client: GraphQLClient, text: str, reason: str
) -> None:
    template = await published(client, parse_spec("{{ params.text }}"))
    started = await start(client, templateId=template["id"], params={"text": text})
    done = await wait_terminal(client, started["id"], timeout=60)
    assert done["status"] == "FAILED", done
    step = next(s for s in done["steps"] if s["id"] == "parse")
    assert reason in step["error"], step["error"]
    assert step["attempts"] == 1


async def test_event_payloads_are_bounded_like_params(
    server: str, client: GraphQLClient, tenant: TenantKeys
) -> None:
    spec = make_spec(
        parameters={"type": "object"},
        steps=[
            {"id": "ask", "activity": "wait.event", "input": {"event": "go", "timeout_seconds": 60}}
        ],
        example_params={},
    )
    template = await published(client, spec)
    started = await start(client, templateId=template["id"], params={})
    document = op("SendExecutionEvent")

    async def send(payload_json: str) -> dict[str, Any]:
        body = (
            '{"query": '
            + json.dumps(document)
            + ', "variables": {"input": {"executionId": '
            + json.dumps(started["id"])
            + ', "name": "go", "payload": '
            + payload_json
            + "}}}"
        )
        resp = await GraphQLClient(server, tenant.admin).post_body(body)
        assert resp.status_code in (200, 400), resp.text
        return resp.json()

    refused = [
        await send('{"a": NaN}'),
        await send('{"a": "x\\u0000"}'),
        await send('{"a": "x\\udc00"}'),
        await send(json.dumps({"a": "x" * 70_000})),
        await send("[" * 40 + "]" * 40),
    ]
    for body in refused:
        result = (body.get("data") or {}).get("sendExecutionEvent")
        if result is not None:  # refused by the service: a typed error
            assert result["__typename"] == "ValidationError", body
        else:  # refused by the edge before GraphQL ran
            assert body["errors"], body
    accepted = await send('{"approved": true}')
    assert accepted["data"]["sendExecutionEvent"]["__typename"] == "Execution", accepted
    assert (await wait_terminal(client, started["id"]))["status"] == "COMPLETED"


async def test_what_is_recorded_survives_values_postgresql_refuses(
    client: GraphQLClient, sessions: Any
) -> None:
    """The recorder's net: an event whose payload, message or result holds NaN, Infinity or
    NUL is stored (the values replaced), never refused and retried forever."""
    pk = await new_execution(sessions)  # RUNNING
    async with sessions() as session:
        event, _ = await Recorder(session).record(
            EventRecord(
                str(pk),
                f"test-{uuid.uuid4().hex[:8]}",
                "STEP_PROGRESS",
                "RUNNING",
                100.0,
                message="bad\x00text",
                payload={"x": float("nan"), "y": [float("inf"), "a\x00b", "c\ud800"], "a\x00": 1},
            )
        )
        await session.commit()
        stored = await session.get(ExecutionEvent, event.id)
        assert stored is not None
        assert stored.message == "bad\ufffdtext"
        assert stored.payload["x"] is None
        assert stored.payload["y"] == [None, "a\ufffdb", "c\ufffd"]
        assert stored.payload["a\ufffd"] == 1
        assert (await session.get(Execution, pk)) is not None


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ('{ templates(search: "a\\u0000b") { edges { node { id } } } }', {}),
        ("query($n: String) { template(name: $n) { id } }", {"n": "x\x00"}),
        ("query($s: String) { templates(category: $s) { edges { node { id } } } }", {"s": "\x00"}),
        ("query($s: JSON!) { validateTemplate(spec: $s) { valid } }", {"s": {"title": "a\x00"}}),
        ("query($n: String) { template(name: $n) { id } }", {"n": "x\ud800"}),
        ('{ templates(search: "a\\udc00") { edges { node { id } } } }', {}),
    ],
    ids=["literal", "name", "category", "json", "surrogate", "surrogate-literal"],
)
async def test_nul_characters_are_refused_before_any_resolver_runs(
    server: str, tenant: TenantKeys, query: str, variables: dict[str, Any]
) -> None:
    """NUL characters and lone surrogates (text PostgreSQL cannot store) in variables or literals:
    a typed refusal, never a masked error. (A lone surrogate escape in a literal is already a
    syntax error for graphql-core.)"""
    # json.dumps escapes lone surrogates; httpx's own encoder cannot
    body = json.dumps({"query": query, "variables": variables})
    resp = await GraphQLClient(server, tenant.admin).post_body(body)
    body = resp.json()
    assert resp.status_code in (200, 400) and body["data"] is None, body
    error = body["errors"][0]
    assert error["message"] != "Unexpected error."
    if "extensions" in error:
        assert error["extensions"]["code"] == "VALIDATION_FAILED"
        assert "NUL" in error["message"] or "surrogate" in error["message"]
    else:
        assert "Syntax Error" in error["message"] or "Invalid" in error["message"], error


async def test_a_time_without_offset_is_read_as_utc(client: GraphQLClient) -> None:
    query = (
        "query($f: DateTime!, $t: DateTime!) "
        "{ aiUsageSummary(from: $f, to: $t, groupBy: DAY) { key calls } }"
    )
    naive = await client.raw(query, {"f": "2026-11-01T00:00:00", "t": "2026-12-01T00:00:00"})
    aware = await client.raw(query, {"f": "2026-11-01T00:00:00Z", "t": "2026-12-01T00:00:00Z"})
    assert not naive.get("errors"), naive
    assert naive["data"] == aware["data"]


async def test_a_body_that_is_not_utf8_is_a_bad_request(server: str) -> None:
    resp = await GraphQLClient(server, None).post_body(b'\xff\xfe{"query": "{ viewer { role } }"}')
    assert resp.status_code == 400, resp.text
