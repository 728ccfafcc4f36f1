"""Limits that sit between the pieces: a step's output, and the defaults every copy agrees on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import fields

import pytest

from app.executions.workflow_io import RunLimits
from app.settings import Settings
from tests.api.test_execution_flow import wait_terminal
from tests.conftest import TenantKeys
from tests.support import GraphQLClient, own_service
from tests.templates.template_kit import make_spec, published, start

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
