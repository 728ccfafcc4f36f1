"""Every standard template runs to COMPLETED with its example params (as in `wfs dev`), and
does what it says: files written, mails sent once, webhooks called, archives checksummed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.embedded.mail import DevMailSink
from app.settings import Settings
from app.templates.standard import STANDARD_TEMPLATES
from app.tenants.service import TenantService
from tests.conftest import TenantKeys, make_tenant
from tests.support import GraphQLClient, WebhookSink, record_history
from tests.workers.test_template_graph import run

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"
EXAMPLES = {t["name"]: t["example_params"] for t in STANDARD_TEMPLATES}


@pytest.fixture
async def demo(sessions: Any, settings: Settings) -> tuple[TenantKeys, Path]:
    """A new tenant as `wfs tenant create` or `createTenant` makes it: nothing in its storage
    yet. Its first file step finds the sample files its example params read (app/steps/storage.py
    seeds them), so every standard template runs for any tenant, not only the demo ones."""
    keys = await make_tenant(sessions, "free")
    async with sessions() as session:
        tenant = await TenantService(session).get_by_name(keys.name)
    root = settings.files_root / str(tenant.id)
    assert not root.exists()
    return keys, root


def test_there_are_seven_standard_templates_with_examples() -> None:
    assert sorted(EXAMPLES) == [
        "backup-cleanup",
        "data-sync",
        "document-processing",
        "email-campaign",
        "notification",
        "order-summary",
        "user-onboarding",
    ]
    # their enhancement points: tests/workers/test_enhancements.py


async def _run(server: str, keys: TenantKeys, name: str, params: Any) -> tuple[list[Any], Any]:
    client = GraphQLClient(server, keys.admin)
    events, execution = await run(client, server, keys.admin, name, params)
    assert execution["status"] == "COMPLETED", execution["error"]
    if os.environ.get("WFS_RECORD_HISTORIES"):
        # `<template>.local`: today's code (events recorded by local activities); `<template>`
        # stays as first recorded, the older paths running executions may still be on.
        await record_history(name, execution["id"], TEMPORAL["address"])
        await record_history(f"{name}.local", execution["id"], TEMPORAL["address"])
    return events, execution["result"]


TEMPORAL: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _temporal_address(settings: Settings) -> None:
    assert settings.temporal_address
    TEMPORAL["address"] = settings.temporal_address


def _mails_to(sink: DevMailSink, address: str) -> list[Any]:
    return [m for m in sink.messages() if address in (m["To"] or "")]


async def test_user_onboarding(
    server: str, demo: tuple[TenantKeys, Path], mail_sink: DevMailSink
) -> None:
    keys, root = demo
    _, result = await _run(server, keys, "user-onboarding", EXAMPLES["user-onboarding"])
    assert result == {
        "email": "ada@example.com",
        "profile": "users/ada_at_example.com/profile.json",
        "welcomed": True,
        "activated": False,
    }
    profile = json.loads((root / result["profile"]).read_text())
    assert profile["name"] == "Ada Lovelace"
    mails = _mails_to(mail_sink, "ada@example.com")
    assert any(m["Subject"] == "Welcome to Analytical Engines, Ada Lovelace!" for m in mails)


async def test_user_onboarding_activation_event(server: str, demo: tuple[TenantKeys, Path]) -> None:
    keys, _ = demo
    client = GraphQLClient(server, keys.admin)
    params = {
        "user": {"email": "g@example.com", "name": "Grace"},
        "send_welcome": False,
        "activation_timeout_seconds": 60,
    }
    started = await client.data(
        (OPS / "StartExecution.graphql").read_text(),
        {"input": {"templateName": "user-onboarding", "params": params}},
    )
    execution_id = started["startExecution"]["id"]
    await client.data(
        (OPS / "SendExecutionEvent.graphql").read_text(),
        {"input": {"executionId": execution_id, "name": "activated"}},
    )
    from tests.api.test_execution_flow import wait_terminal

    execution = await wait_terminal(client, execution_id)
    assert execution["result"]["activated"] is True
    assert execution["result"]["welcomed"] is False


async def test_document_processing(server: str, demo: tuple[TenantKeys, Path]) -> None:
    keys, root = demo
    _, result = await _run(server, keys, "document-processing", EXAMPLES["document-processing"])
    assert result["category"] == "invoice"
    types = {e["type"] for e in result["entities"]}
    assert {"email", "money", "date", "url", "percent"} <= types
    assert 0 < len(result["summary"]) <= 600
    report = json.loads((root / result["report"]).read_text())
    assert report["category"] == "invoice" and report["source"] == "samples/invoice.txt"
    _, contract = await _run(server, keys, "document-processing", {"path": "samples/contract.txt"})
    assert contract["category"] == "contract"


async def test_email_campaign_sends_once_per_subscribed_recipient(
    server: str, demo: tuple[TenantKeys, Path], mail_sink: DevMailSink
) -> None:
    keys, _ = demo
    before = len(mail_sink.messages())
    _, result = await _run(server, keys, "email-campaign", EXAMPLES["email-campaign"])
    assert (result["recipients"], result["sent"], result["skipped"]) == (3, 2, 1)
    assert len(set(result["message_ids"])) == 2
    assert len(mail_sink.messages()) == before + 2
    assert not _mails_to(mail_sink, "linus@example.com")


async def test_email_campaign_to_nobody_completes(
    server: str, demo: tuple[TenantKeys, Path]
) -> None:
    """Every recipient unsubscribed: the fan-out has no items and the campaign still ends."""
    keys, _ = demo
    params = {
        **EXAMPLES["email-campaign"],
        "recipients": [{"email": "gone@example.com", "unsubscribed": True}],
    }
    _, result = await _run(server, keys, "email-campaign", params)
    assert (result["recipients"], result["sent"], result["skipped"]) == (1, 0, 1)


async def test_data_sync_then_resync_then_change(
    server: str, demo: tuple[TenantKeys, Path]
) -> None:
    keys, root = demo
    params = EXAMPLES["data-sync"]
    _, first = await _run(server, keys, "data-sync", params)
    assert (first["added"], first["changed"], first["written"]) == (4, 0, True)
    assert [r["id"] for r in json.loads((root / params["target"]).read_text())] == [
        "1",
        "2",
        "3",
        "4",
    ]
    _, again = await _run(server, keys, "data-sync", params)
    assert (again["added"], again["unchanged"], again["written"]) == (0, 4, False)
    csv = (
        (root / params["source"])
        .read_text()
        .replace(
            "Grace Hopper,grace@example.com,premium", "Grace Hopper,grace@example.com,enterprise"
        )
    )
    (root / params["source"]).write_text(
        csv.replace("4,Margaret Hamilton,margaret@example.com,free\n", "")
    )
    _, changed = await _run(server, keys, "data-sync", params)
    assert (changed["changed"], changed["removed"], changed["written"]) == (1, 1, True)
    report = json.loads((root / changed["report"]).read_text())
    assert report["changed"][0]["fields"] == ["plan"]


async def test_notification_on_every_channel(
    server: str,
    demo: tuple[TenantKeys, Path],
    mail_sink: DevMailSink,
    webhook_sink: WebhookSink,
    settings: Settings,
    sessions: Any,
) -> None:
    keys, _ = demo
    async with sessions() as session:
        tenant = await TenantService(session).get_by_name(keys.name)
    assert settings.redis_url
    redis = aioredis.from_url(settings.redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"wfs:tenant:{tenant.id}:notifications")
    params = {
        **EXAMPLES["notification"],
        "channels": ["email", "webhook", "in_app"],
        "email_to": ["oncall@example.com"],
        "webhook_url": f"{webhook_sink.url}/hooks/ops",
    }
    _, result = await _run(server, keys, "notification", params)
    assert result == {"email": True, "webhook": 204, "in_app": True}
    assert _mails_to(mail_sink, "oncall@example.com")[0]["Subject"] == "[warning] Nightly import"
    hook = [h for h in webhook_sink.received if h["path"] == "/hooks/ops"][-1]
    assert hook["body"]["message"] == params["message"]
    async with asyncio.timeout(10):
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if msg:
                break
    assert json.loads(msg["data"])["data"]["subject"] == "Nightly import"
    await pubsub.aclose()
    await redis.aclose()


async def test_backup_cleanup_checksums_and_retention(
    server: str, demo: tuple[TenantKeys, Path]
) -> None:
    keys, root = demo
    results = [
        (await _run(server, keys, "backup-cleanup", {**EXAMPLES["backup-cleanup"], "keep": 2}))[1]
        for _ in range(3)
    ]
    for result in results[1:]:
        archive = root / result["archive"]
        assert hashlib.sha256(archive.read_bytes()).hexdigest() == result["sha256"]
        line = (root / (result["archive"] + ".sha256")).read_text()
        assert line == f"{result['sha256']}  {archive.name}\n"
    assert not (root / results[0]["archive"]).exists()
    assert results[2]["deleted"] == [results[0]["archive"]]
    left = sorted(p.name for p in (root / "backups").iterdir())
    assert len([n for n in left if n.endswith(".tar.gz")]) == 2
    assert len([n for n in left if n.endswith(".sha256")]) == 2


async def test_order_summary(server: str, demo: tuple[TenantKeys, Path]) -> None:
    keys, _ = demo
    _, result = await _run(
        server, keys, "order-summary", {**EXAMPLES["order-summary"], "wait_seconds": 0}
    )
    assert result["total_value"] == 39
