"""Template diffs and the shared validation pool stall nothing and starve nobody (issue 9).

Red-team findings H1 and M2, measured through GraphQL against the real API, which runs in this
test's event loop (a ticker task there sees every stall):
- H1: two versions whose `parameters` hold 10,000-value enums of near-repeating numbers made
  `diff { changedFields }` run difflib over 10,000 lines of JSON on the event loop (5.9 s,
  twice that with two aliases). Now the structural fields compare the parsed specs, the text
  diff is computed only when asked for, off the loop, and past MAX_DIFF_LINES it lists the
  changed places by JSON path (linear) instead of running a line diff.
- M2: one tenant's loop of starts on an exponential parameters schema held every thread of the
  validation pool, and another tenant's start waited for it. Now a tenant holds at most
  MAX_RUNNING_PER_TENANT pool threads; its other validations wait within their own deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from app.settings import Settings
from app.templates.lifecycle import MAX_DIFF_CHANGES, MAX_DIFF_LINES, diff_specs, unified_diff
from tests.conftest import TenantKeys, make_tenant
from tests.security.test_sec_jsonschema import MAX_STALL, gql, spec_with
from tests.support import loop_watch, own_service
from tests.templates.template_kit import make_spec, op

N = 10_000  # values of each enum in the red team's repro
OLD_ENUM = [i % 100 for i in range(N)]
NEW_ENUM = [(i * 37) % 101 for i in range(N)]
DIFF = "diff(from: 1, to: 2) { changedFields addedSteps removedSteps }"
DIFF_TEXT = "diff(from: 1, to: 2) { changedFields unified }"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=120) as client:
        yield client


def enum_spec(name: str, values: list[int]) -> dict[str, Any]:
    return spec_with({"type": "object", "properties": {"e": {"enum": values}}}, name=name)


async def two_versions(
    http: httpx.AsyncClient, base: str, admin: str, old: dict[str, Any], new: dict[str, Any]
) -> str:
    """A template published as `old` (v1), then as `new` (v2); returns its id."""
    created = await gql(http, base, admin, op("CreateTemplate"), {"input": {"spec": old}})
    template_id = created["data"]["createTemplate"]["id"]
    first = await gql(
        http, base, admin, op("PublishTemplate"), {"input": {"templateId": template_id}}
    )
    assert first["data"]["publishTemplate"]["latestVersion"] == 1, first
    draft = {"input": {"templateId": template_id, "spec": new}}
    updated = await gql(http, base, admin, op("UpdateTemplateDraft"), draft)
    assert updated["data"]["updateTemplateDraft"]["__typename"] == "Template", updated
    second = await gql(
        http, base, admin, op("PublishTemplate"), {"input": {"templateId": template_id}}
    )
    assert second["data"]["publishTemplate"]["latestVersion"] == 2, second
    return template_id


def diff_query(fields: str, aliases: int) -> str:
    picks = " ".join(f"d{i}: {fields}" for i in range(aliases))
    return f"query($id: ID) {{ template(id: $id) {{ {picks} }} }}"


# --- H1: diffs -------------------------------------------------------------------------------


async def test_a_diff_of_near_repeating_10000_value_enums_does_not_stall(
    http: httpx.AsyncClient, server: str, tenant: TenantKeys
) -> None:
    """The red team's repro, asked by a viewer: changedFields alone (30 aliases, the most a
    query may have), then with the text diff too. No loop stall of 100 ms; the answers are
    right, and the text lists the changed places instead of a line diff."""
    name = f"rt-diff-{time.monotonic_ns()}"
    template_id = await two_versions(
        http, server, tenant.admin, enum_spec(name, OLD_ENUM), enum_spec(name, NEW_ENUM)
    )
    async with loop_watch() as watch:
        fields = await gql(http, server, tenant.viewer, diff_query(DIFF, 30), {"id": template_id})
        text = await gql(http, server, tenant.viewer, diff_query(DIFF_TEXT, 2), {"id": template_id})
    assert watch.worst < MAX_STALL, watch
    diffs = fields["data"]["template"]
    assert len(diffs) == 30
    for diff in diffs.values():
        assert diff == {"changedFields": ["parameters"], "addedSteps": [], "removedSteps": []}
    for diff in text["data"]["template"].values():
        assert diff["changedFields"] == ["parameters"]
        lines = diff["unified"].splitlines()
        assert lines[:2] == ["--- v1", "+++ v2"]
        assert f"more than {MAX_DIFF_LINES} lines of JSON" in lines[2]
        # Index 0 is 0 on both sides; index 1 is the first that changed (1 -> 37).
        assert lines[3:6] == ["@@ $.parameters.properties.e.enum[1] @@", "-1", "+37"]
        changed = sum(a != b for a, b in zip(OLD_ENUM, NEW_ENUM, strict=True))
        assert lines[-1] == f"@@ ... and {changed - MAX_DIFF_CHANGES} more changed places @@"


async def test_a_small_diff_is_still_a_line_diff(
    http: httpx.AsyncClient, server: str, tenant: TenantKeys
) -> None:
    name = f"rt-diff-small-{time.monotonic_ns()}"
    template_id = await two_versions(
        http, server, tenant.admin, enum_spec(name, [1, 2, 3]), enum_spec(name, [1, 5, 3])
    )
    text = await gql(http, server, tenant.viewer, diff_query(DIFF_TEXT, 1), {"id": template_id})
    unified = text["data"]["template"]["d0"]["unified"]
    assert unified.startswith("--- v1\n+++ v2\n@@ ")
    assert "\n-          2,\n+          5,\n" in unified


def test_kit_the_repro_diff_takes_the_linear_path_at_the_spec_cap() -> None:
    """Offline, at the size the spec cap allows (max_spec_bytes, 256 KiB: ~85,000 one- and
    two-digit values), where difflib took 41 s for 20,000: the structural fields and the
    summary come back, with every changed place counted."""
    size = 85_000
    old = enum_spec("big", [i % 100 for i in range(size)])
    new = enum_spec("big", [(i * 37) % 101 for i in range(size)])
    assert len(json.dumps(new, separators=(",", ":"))) <= Settings().max_spec_bytes
    diff = diff_specs(old, new, 1, 2)
    assert diff.changed_fields == ["parameters"]
    changed = sum(
        a != b
        for a, b in zip(
            old["parameters"]["properties"]["e"]["enum"],
            new["parameters"]["properties"]["e"]["enum"],
            strict=True,
        )
    )
    assert diff.unified.endswith(f"@@ ... and {changed - MAX_DIFF_CHANGES} more changed places @@")


@hsettings(max_examples=40, deadline=None)
@given(
    pattern=st.lists(st.integers(0, 3), min_size=1, max_size=20),
    edits=st.dictionaries(st.integers(0, MAX_DIFF_LINES - 1), st.integers(0, 4), max_size=400),
    grow=st.integers(-50, 50),
)
def test_kit_property_the_summary_lists_exactly_the_changed_places(
    pattern: list[int], edits: dict[int, int], grow: int
) -> None:
    """Past MAX_DIFF_LINES, every index that differs (or exists on one side only) is one
    changed place: listed while there are at most MAX_DIFF_CHANGES, counted after."""
    old = (pattern * MAX_DIFF_LINES)[:MAX_DIFF_LINES]
    new = [edits.get(i, v) for i, v in enumerate(old)]
    new = new[:grow] if grow < 0 else new + [9] * grow
    expected = [
        i
        for i in range(max(len(old), len(new)))
        if i >= min(len(old), len(new)) or old[i] != new[i]
    ]
    text = unified_diff({"v": old}, {"v": new}, 1, 2)
    if not expected:
        assert text == ""
        return
    listed = [line for line in text.splitlines() if line.startswith("@@ $.v[")]
    assert listed == [f"@@ $.v[{i}] @@" for i in expected[:MAX_DIFF_CHANGES]]
    more = len(expected) - MAX_DIFF_CHANGES
    assert (f"@@ ... and {more} more changed places @@" in text) == (more > 0)


# --- M2: the validation pool -----------------------------------------------------------------


def exponential_parameters() -> dict[str, Any]:
    """The red team's t_pool.py schema: 40 levels of anyOf over shared $defs; `{"x": null}`
    fails every branch, 2^40 evaluations. `{}` passes at once, so publishing takes it."""
    defs: dict[str, Any] = {"d0": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}
    for i in range(1, 40):
        defs[f"d{i}"] = {"anyOf": [{"$ref": f"#/$defs/d{i - 1}"}] * 2}
    return {"type": "object", "$defs": defs, "properties": {"x": {"$ref": "#/$defs/d39"}}}


@pytest.fixture
async def pool_api(settings: Settings, sessions: Any) -> AsyncIterator[str]:
    """An API with a 2 s validation timeout (the default is 5 s), so the abuse ends sooner."""
    async with own_service(settings, validation_timeout_seconds=2.0) as url:
        yield url


async def test_one_tenant_cannot_starve_others_of_the_validation_pool(
    http: httpx.AsyncClient, pool_api: str, sessions: Any
) -> None:
    """Tenant A fires more concurrent starts on the exponential template than the pool has
    threads, while tenant B starts a normal template: every start of B succeeds, every start
    of A ends as VALIDATION_FAILED naming validation_timeout_seconds, and the loop never
    stalls. Without the per-tenant share, A's validations held every pool thread and B's
    params timed out behind them."""
    abuser, other = await make_tenant(sessions, "free"), await make_tenant(sessions, "pro")
    heavy = spec_with(exponential_parameters())
    created = await gql(
        http, pool_api, abuser.admin, op("CreateTemplate"), {"input": {"spec": heavy}}
    )
    heavy_id = created["data"]["createTemplate"]["id"]
    published = await gql(
        http, pool_api, abuser.admin, op("PublishTemplate"), {"input": {"templateId": heavy_id}}
    )
    assert published["data"]["publishTemplate"]["latestVersion"] == 1, published
    normal = make_spec()
    created = await gql(
        http, pool_api, other.admin, op("CreateTemplate"), {"input": {"spec": normal}}
    )
    normal_id = created["data"]["createTemplate"]["id"]
    await gql(
        http, pool_api, other.admin, op("PublishTemplate"), {"input": {"templateId": normal_id}}
    )

    async def start(key: str, template_id: str, params: dict[str, Any]) -> dict[str, Any]:
        variables = {"input": {"templateId": template_id, "params": params}}
        result = await gql(http, pool_api, key, op("StartExecution"), variables)
        return result["data"]["startExecution"]

    async def victim() -> list[dict[str, Any]]:
        await asyncio.sleep(0.3)  # the abuser's validations hold their threads by now
        found = []
        for _ in range(4):
            found.append(await start(other.operator, normal_id, {"rows": [{"v": 2}, {"v": 1}]}))
            await asyncio.sleep(0.2)
        return found

    threads = max(2, os.cpu_count() or 2)  # the pool's size (app.jsonschemas)
    async with loop_watch() as watch:
        abuse = [start(abuser.operator, heavy_id, {"x": None}) for _ in range(threads + 2)]
        *abused, victims = await asyncio.gather(*abuse, victim())
    assert watch.worst < MAX_STALL, watch
    assert [v["__typename"] for v in victims] == ["Execution"] * 4, victims
    for result in abused:
        assert result["code"] == "VALIDATION_FAILED", result
        assert "validation_timeout_seconds" in result["message"], result
