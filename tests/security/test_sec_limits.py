"""Limits that sit between the pieces: a step's output, a fan-out's outputs together, and the
defaults every copy agrees on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import fields
from typing import Any

import pytest

from app.executions.workflow_io import RunLimits
from app.settings import Settings
from tests.api.test_execution_flow import wait_terminal
from tests.conftest import TenantKeys
from tests.support import GraphQLClient, own_service
from tests.templates.template_kit import make_spec, published, start, unique_name
from workers.workflows import BATCH_OUTPUT_BYTES

OUTPUT_LIMIT = 2_000


@pytest.fixture
async def small_output_server(settings: Settings, sessions) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    """API and worker whose steps may return at most OUTPUT_LIMIT bytes."""
    async with own_service(settings, worker=True, max_step_output_bytes=OUTPUT_LIMIT) as url:
        yield url


async def test_a_step_output_over_the_limit_fails_the_step_once_and_clearly(
    small_output_server: str, tenant: TenantKeys
) -> None:
    client = GraphQLClient(small_output_server, tenant.admin)
    template = await published(client, make_spec())
    small = await start(client, templateId=template["id"], params={"rows": [{"v": 1}]})
    big_rows = [{"v": i, "text": "x" * 60} for i in range(100)]  # ~8 KB sorted
    big = await start(client, templateId=template["id"], params={"rows": big_rows})

    assert (await wait_terminal(client, small["id"]))["status"] == "COMPLETED"
    failed = await wait_terminal(client, big["id"])
    assert failed["status"] == "FAILED"
    step = next(s for s in failed["steps"] if s["id"] == "sort")
    assert "MAX_STEP_OUTPUT_BYTES" in step["error"]
    assert f"at most {OUTPUT_LIMIT} bytes" in step["error"]
    assert step["attempts"] == 1  # permanent: retrying cannot make the output smaller


def test_settings_take_their_defaults_from_the_run_limits() -> None:
    """The workflow has no Settings: RunLimits carries the configured values, and with nothing
    configured both sides agree (an execution recorded before RunLimits existed gets these)."""
    configured = Settings(_env_file=None)  # type: ignore[call-arg]
    for field in fields(RunLimits):
        assert getattr(configured, field.name) == getattr(RunLimits(), field.name), field.name
    changed = Settings(_env_file=None, max_for_each_items=7)  # type: ignore[call-arg]
    assert RunLimits.of(changed).max_for_each_items == 7


async def test_template_checks_use_the_configured_expression_limits(
    settings: Settings,
    sessions,
    tenant: TenantKeys,
    server: str,  # type: ignore[no-untyped-def]
) -> None:
    """validateTemplate checks expressions with the same limits the executions run under."""
    spec = make_spec()
    spec["steps"][0]["input"]["note"] = "{{ params.rows | length }} rows" + " " * 300
    query = "query($s: JSON!) { validateTemplate(spec: $s) { valid problems { path message } } }"
    default = await GraphQLClient(server, tenant.viewer).data(query, {"s": spec})
    assert default["validateTemplate"]["valid"], default
    async with own_service(settings, max_expression_chars=200) as url:
        tight = await GraphQLClient(url, tenant.viewer).data(query, {"s": spec})
    problems = tight["validateTemplate"]["problems"]
    assert not tight["validateTemplate"]["valid"]
    assert any(p["path"] == "$.steps[0].input.note" and "200" in p["message"] for p in problems)


# ------------------------------------------------- a fan-out's outputs together (red team H4)


def fan_out_spec(for_each: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": unique_name("fan"),
        "title": "Fan-out",
        "parameters": {
            "type": "object",
            "properties": {"n": {"type": "integer"}, "w": {"type": "integer"}},
        },
        "steps": [
            {
                "id": "fan",
                "activity": "data.transform",
                "for_each": for_each,
                "input": {"data": data, "ops": []},
            }
        ],
    }


async def test_a_fan_out_whose_outputs_together_pass_the_step_limit_fails_clearly(
    small_output_server: str, tenant: TenantKeys
) -> None:
    """Each item's output is within the limit; together they are one step output (events,
    later steps' inputs), so they are held to the same limit, measured as they arrive: in
    child slices (more than for_each_batch_size = 50 items) and inline. A fan-out within the
    limit completes."""
    client = GraphQLClient(small_output_server, tenant.admin)
    spec = fan_out_spec("range(params.n)", {"i": "{{ index }}", "t": "{{ 'x' * params.w }}"})
    template = await published(client, spec)
    cases = [  # (params, fails): items are ~16 bytes plus w as JSON
        ({"n": 120, "w": 40}, True),  # 3 slices of up to 50, ~6.6 KB together
        ({"n": 45, "w": 40}, True),  # inline, ~2.5 KB together
        ({"n": 100, "w": 0}, False),  # 2 slices, ~1.6 KB together
    ]
    started = [await start(client, templateId=template["id"], params=p) for p, _ in cases]
    ended = await asyncio.gather(*(wait_terminal(client, e["id"], 90) for e in started))
    message = f"its items' outputs together are more than {OUTPUT_LIMIT} bytes as JSON"
    for execution, (params, fails) in zip(ended, cases, strict=True):
        step = next(s for s in execution["steps"] if s["id"] == "fan")
        if not fails:
            assert execution["status"] == "COMPLETED", execution
            continue
        assert execution["status"] == "FAILED", (params, execution)
        assert message in execution["error"], execution["error"]
        assert step["status"] == "FAILED" and message in step["error"], step


@pytest.fixture
async def large_output_server(settings: Settings, sessions) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    """API and worker whose steps may return 4 MiB: more than one Temporal payload holds."""
    async with own_service(settings, worker=True, max_step_output_bytes=4 * 2**20) as url:
        yield url


async def test_a_slice_whose_outputs_would_pass_the_payload_limit_fails_the_step(
    large_output_server: str, tenant: TenantKeys
) -> None:
    """Red team H4: 50 outputs of 40 KB (2 MB) from one child slice were refused by Temporal
    (payload over 2 MiB) on every completion: the execution stayed RUNNING, each replay of the
    history swung the worker's memory. Now the slice stops at BATCH_OUTPUT_BYTES and the step
    fails with the message, even though the step's own limit (4 MiB) is not reached."""
    client = GraphQLClient(large_output_server, tenant.admin)
    spec = {
        "name": unique_name("fanbig"),
        "title": "Large item outputs",
        "parameters": {"type": "object"},
        "steps": [
            {
                "id": "w",
                "activity": "files.write",
                "input": {"path": "h4/big.txt", "content": "{{ 'a' * 40000 }}", "overwrite": True},
            },
            {
                "id": "r",
                "activity": "files.read",
                "needs": ["w"],
                "for_each": "range(60)",
                "input": {"path": "h4/big.txt"},
            },
        ],
    }
    template = await published(client, spec)
    execution = await start(client, templateId=template["id"], params={})
    ended = await wait_terminal(client, execution["id"], 90)
    assert ended["status"] == "FAILED", ended
    message = f"more than {BATCH_OUTPUT_BYTES} bytes as JSON, the most one batch of items"
    step = next(s for s in ended["steps"] if s["id"] == "r")
    assert step["status"] == "FAILED" and message in step["error"], step
    assert message in ended["error"], ended["error"]
