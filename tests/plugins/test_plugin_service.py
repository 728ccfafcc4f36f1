"""The example plugin in the running service: its template (published like the standard
ones) completes with its step served on the plugin's queue; the `plugins` query shows what it
adds, its queue, the workers polling it and its health; the platform switches it per tenant
(setTenantPlugin), which template checks and starts obey.

The plugin's steps are served by the real plugin worker (workers/plugin_worker.py: each call
in a sandbox process), run in this process on plugin_task_queue("example").
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.client import Client

from app.api.relay import to_global_id
from app.models import Tenant
from app.plugins.registry import activate
from app.seed import seed_templates
from app.settings import Settings
from app.temporal import connect
from app.tenants.platform import PlatformKeys
from app.tenants.plugin_access import PluginAccessService
from tests.api.test_api_keys import op
from tests.api.test_execution_flow import wait_terminal
from tests.conftest import TenantKeys, make_tenant
from tests.support import GraphQLClient
from tests.workers.test_control import call, start, state
from tests.workers.test_template_graph import publish
from workers.plugin_worker import build_plugin_worker, describe_plugin, warm_pool

PLUGINS, SET_PLUGIN, START, VALIDATE = (
    op(name) for name in ("Plugins", "SetTenantPlugin", "StartExecution", "ValidateTemplate")
)
TEXT = "the cat and the hat and the bat"


@pytest.fixture(scope="module")
async def plugin_worker(settings: Settings, sessions, server: str) -> AsyncIterator[Client]:  # type: ignore[no-untyped-def]
    """The example plugin loaded and its template published, and its sandboxed worker."""
    registry = activate(settings)
    assert "example" in registry.loaded, registry.refused
    await seed_templates(sessions, settings)
    assert settings.temporal_address
    client = await connect(settings)
    manifest = await describe_plugin("example", settings)
    pool = warm_pool(manifest, settings)
    worker = build_plugin_worker(client, manifest, settings, pool=pool)
    pool.fill()
    try:
        async with worker:
            yield client
    finally:
        await pool.close()


async def platform_client(server: str, sessions) -> GraphQLClient:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        _, secret = await PlatformKeys(session).create(f"plugins-{uuid.uuid4().hex[:6]}")
        await session.commit()
    return GraphQLClient(server, secret)


async def tenant_id(sessions, name: str) -> str:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        found = await session.scalar(select(Tenant.id).where(Tenant.name == name))
    return to_global_id("Tenant", found)


def example_of(plugins: list[dict[str, Any]]) -> dict[str, Any]:
    return next(p for p in plugins if p["name"] == "example")


async def test_the_example_template_completes_on_the_plugin_queue(
    plugin_worker: Client, client: GraphQLClient
) -> None:
    started = (
        await client.data(
            START, {"input": {"templateName": "example-word-report", "params": {"text": TEXT}}}
        )
    )["startExecution"]
    assert started["__typename"] == "Execution", started
    done = await wait_terminal(client, started["id"])
    assert done["status"] == "COMPLETED", done
    assert done["result"] == {
        "words": 8,
        "distinct": 5,
        "top": [["the", 3], ["and", 2], ["cat", 1]],
    }
    # The plugins query: what it adds, its queue and the worker polling it.
    plugins = (await client.data(PLUGINS))["plugins"]
    example = example_of(plugins)
    assert example["health"] == "OK" and example["workersPolling"] >= 1
    assert example["enabledForTenant"] is True and example["problems"] == []
    assert example["queue"] == "plugin-example"
    assert {s["name"] for s in example["steps"]} == {"example.word_stats", "example.misbehave"}
    assert example["aiTasks"][0]["step"] == "ai.example.tone"
    assert example["providers"] == [{"name": "example.local", "models": ["example-small"]}]
    assert example["templates"] == ["example-word-report"]


async def test_the_platform_switches_a_plugin_per_tenant(
    plugin_worker: Client, server: str, sessions
) -> None:  # type: ignore[no-untyped-def]
    keys: TenantKeys = await make_tenant(sessions, "pro")
    admin = GraphQLClient(server, keys.admin)
    platform = await platform_client(server, sessions)
    tenant = await tenant_id(sessions, keys.name)
    spec = {
        "name": "my-words",
        "title": "Mine",
        "steps": [{"id": "s", "activity": "example.word_stats", "input": {"text": "a b"}}],
    }
    assert (await admin.data(VALIDATE, {"spec": spec}))["validateTemplate"]["valid"] is True

    switched = (
        await platform.data(
            SET_PLUGIN, {"input": {"tenant": tenant, "plugin": "example", "enabled": False}}
        )
    )["setTenantPlugin"]
    assert switched == {
        "__typename": "TenantPluginSwitch",
        "plugin": "example",
        "enabled": False,
        "tenant": {"id": tenant, "name": keys.name},
    }
    checked = (await admin.data(VALIDATE, {"spec": spec}))["validateTemplate"]
    assert checked["valid"] is False
    assert checked["problems"] == [
        {
            "path": "$.steps[0].activity",
            "message": "example.word_stats comes from the plugin 'example', which is not "
            "enabled for your tenant (the platform operator enables plugins per tenant)",
        }
    ]
    refused = (
        await admin.data(
            START, {"input": {"templateName": "example-word-report", "params": {"text": TEXT}}}
        )
    )["startExecution"]
    assert refused["code"] == "FORBIDDEN" and "not enabled for your tenant" in refused["message"]
    example = example_of((await admin.data(PLUGINS))["plugins"])
    assert (example["health"], example["enabledForTenant"]) == ("DISABLED", False)

    # Only the platform switches, and only loaded plugins.
    by_tenant = (
        await admin.data(
            SET_PLUGIN, {"input": {"tenant": tenant, "plugin": "example", "enabled": True}}
        )
    )["setTenantPlugin"]
    assert by_tenant["code"] == "FORBIDDEN"
    unknown = (
        await platform.data(
            SET_PLUGIN, {"input": {"tenant": tenant, "plugin": "nosuch", "enabled": True}}
        )
    )["setTenantPlugin"]
    assert unknown["code"] == "VALIDATION_FAILED" and "loaded: example" in unknown["message"]
    await platform.data(
        SET_PLUGIN, {"input": {"tenant": tenant, "plugin": "example", "enabled": True}}
    )
    assert (await admin.data(VALIDATE, {"spec": spec}))["validateTemplate"]["valid"] is True
    # The platform sees every installed plugin, with no tenant of its own.
    seen = example_of((await platform.data(PLUGINS))["plugins"])
    assert seen["enabledForTenant"] is None and seen["health"] == "OK"


async def test_plugins_default_to_none_for_tenants_without_a_switch(
    settings: Settings, sessions
) -> None:  # type: ignore[no-untyped-def]
    keys = await make_tenant(sessions, "free")
    strict = settings.model_copy(update={"plugins_default_tenants": "none"})
    async with sessions() as session:
        tid = await session.scalar(select(Tenant.id).where(Tenant.name == keys.name))
        service = PluginAccessService(session)
        assert (await service.of(tid, strict)).allows("example") is False
        assert (await service.of(tid, settings)).allows("example") is True
        await service.set(tid, "example", True, "test")
        await session.commit()
        assert (await service.of(tid, strict)).allows("example") is True


async def test_a_retry_checks_the_tenants_plugins_again(
    settings: Settings, server: str, sessions, client: GraphQLClient, tenant: TenantKeys
) -> None:  # type: ignore[no-untyped-def]
    """A run's start checks the tenant's plugins, a retry's too: a FAILED execution of a
    version with a plugin step is not retried once the plugin is switched off for the tenant
    (and is again once it is back on)."""
    assert "example" in activate(settings).loaded
    spec = {
        "name": "plugin-retry",
        "title": "Fails before its plugin step",
        "steps": [
            {"id": "read", "activity": "files.read", "input": {"path": "inbox/none.json"}},
            {"id": "count", "activity": "example.word_stats", "input": {"text": "a b"}},
        ],
    }
    name = await publish(sessions, tenant, spec)
    execution_id = await start(client, name)
    assert (await wait_terminal(client, execution_id))["status"] == "FAILED"
    platform = await platform_client(server, sessions)
    switch = {"tenant": await tenant_id(sessions, tenant.name), "plugin": "example"}
    await platform.data(SET_PLUGIN, {"input": switch | {"enabled": False}})
    try:
        refused = await call(client, "RetryExecution", {"id": execution_id})
        assert refused["code"] == "FORBIDDEN", refused
        assert "example.word_stats comes from the plugin 'example'" in refused["message"]
        # Nothing was recorded: still FAILED, no RETRIED event.
        after = await wait_terminal(client, execution_id)
        assert after["status"] == "FAILED"
        assert "RETRIED" not in [e["type"] for e in after["events"]]
    finally:
        await platform.data(SET_PLUGIN, {"input": switch | {"enabled": True}})
    retried = await call(client, "RetryExecution", {"id": execution_id})
    assert retried["__typename"] == "Execution", retried


async def test_a_queued_execution_is_checked_when_its_turn_comes(
    settings: Settings, server: str, sessions
) -> None:  # type: ignore[no-untyped-def]
    """Admission checks the plugins of a queued execution before it starts it: one switched
    off meanwhile ends FAILED with the reason (and frees nothing it never held)."""
    assert "example" in activate(settings).loaded
    keys: TenantKeys = await make_tenant(sessions, "free")
    admin = GraphQLClient(server, keys.admin)
    limit = settings.tier_concurrency["free"]
    hold = {
        "name": "plugin-hold",
        "title": "Holds a slot",
        "steps": [{"id": "hold", "activity": "wait.timer", "input": {"seconds": 60}}],
    }
    words = {
        "name": "plugin-words",
        "title": "Counts words",
        "steps": [{"id": "count", "activity": "example.word_stats", "input": {"text": "a b"}}],
    }
    holding = await publish(sessions, keys, hold)
    counting = await publish(sessions, keys, words)
    held = [await start(admin, holding) for _ in range(limit)]
    queued = await start(admin, counting)
    assert "QUEUED" in [e["type"] for e in (await state(admin, queued))["events"]]
    platform = await platform_client(server, sessions)
    switch = {"tenant": await tenant_id(sessions, keys.name), "plugin": "example"}
    await platform.data(SET_PLUGIN, {"input": switch | {"enabled": False}})
    try:
        await call(admin, "CancelExecution", {"id": held[0]})  # its end admits the next
        refused = await wait_terminal(admin, queued)
        assert refused["status"] == "FAILED"
        assert "not enabled for your tenant" in refused["error"], refused["error"]
    finally:
        await platform.data(SET_PLUGIN, {"input": switch | {"enabled": True}})
        for execution_id in held[1:]:
            await call(admin, "CancelExecution", {"id": execution_id})
