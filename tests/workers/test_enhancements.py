"""Enhancement points: every standard template COMPLETES for a free tenant (baseline at every
point, no AI call), for a premium tenant (AI at every point, its output applied) and when every
provider fails; each decision, its reason and cost are in the audit trail, the steps view and
the live updates (which carry the running cost)."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from app.ai.fake_llm import FakeLLMServer
from app.embedded.mail import DevMailSink
from app.seed import seed_sample_files
from app.settings import Settings
from app.templates.standard import STANDARD_TEMPLATES
from app.tenants.service import TenantService
from tests.conftest import TenantKeys, make_tenant
from tests.support import GraphQLClient, record_history
from tests.workers.test_template_graph import publish, run

SPECS = {t["name"]: t for t in STANDARD_TEMPLATES}
OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"


def points_of(name: str) -> set[tuple[str, str]]:
    """(step, task) of every point of a standard template: active enhancement points (input
    and apply) and `ai.*` steps, which are points of their own."""
    found = set()
    for step in SPECS[name]["steps"]:
        if step["activity"].startswith("ai."):
            found.add((step["id"], step["activity"].removeprefix("ai.")))
        for point in step.get("enhancements", []):
            if point.get("input") is not None and point.get("apply"):
                found.add((step["id"], point["task"]))
    return found


def params_for(name: str, marker: str, root: Path) -> dict[str, Any]:
    """Params that put `marker` into every AI input of the template (so the fake LLM's
    calls can be told apart), with the sample files the template reads."""
    low = marker.lower()
    if name == "user-onboarding":
        user = {"email": f"{low}@example.com", "name": marker, "company": "Analytical Engines"}
        return {"user": user, "activation_timeout_seconds": 1}
    if name == "document-processing":
        invoice = (root / "samples" / "invoice.txt").read_text()
        return {"text": f"Reference {marker}.\n{invoice}"}
    if name == "email-campaign":
        return {
            "subject": f"Autumn update {marker}",
            "body": f"Here is what we shipped this season ({marker}).",
            "recipients": [
                {"email": f"ada.{low}@example.com", "name": "Ada"},
                {"email": f"grace.{low}@example.com", "name": "Grace"},
                {"email": f"linus.{low}@example.com", "unsubscribed": True},
            ],
        }
    if name == "data-sync":
        source = f"in/{low}.csv"
        (root / "in").mkdir(exist_ok=True)
        (root / source).write_text((root / "samples" / "customers.csv").read_text())
        return {"source": source, "target": f"synced/{low}.json", "key": "id"}
    if name == "notification":
        return {
            "message": f"The nightly import {marker} finished with 3 warnings.",
            "subject": "Nightly import",
            "severity": "warning",
            "channels": ["email", "in_app"],
            "email_to": [f"ops.{low}@example.com"],
        }
    if name == "backup-cleanup":
        return {"source_prefix": "samples/", "archive_prefix": f"bk-{low}/", "keep": 3}
    raise AssertionError(name)


async def run_template(
    server: str, sessions: Any, settings: Settings, tier: str, name: str, marker: str
) -> dict[str, Any]:
    keys: TenantKeys = await make_tenant(sessions, tier)
    async with sessions() as session:
        tenant = await TenantService(session).get_by_name(keys.name)
    seed_sample_files(settings, str(tenant.id))
    root = settings.files_root / str(tenant.id)
    client = GraphQLClient(server, keys.admin)
    events, execution = await run(client, server, keys.admin, name, params_for(name, marker, root))
    assert execution["status"] == "COMPLETED", execution["error"]
    if os.environ.get("WFS_RECORD_HISTORIES"):
        await record_history(f"{name}.{tier}", execution["id"], settings.temporal_address)
    points = {
        (step["id"], p["task"]): p for step in execution["steps"] for p in step["enhancements"]
    }
    assert set(points) == points_of(name)  # one record per point, whatever the tier
    return {"events": events, "execution": execution, "points": points, "root": root}


def calls_with(fake_llm: FakeLLMServer, marker: str) -> list[Any]:
    """The fake LLM's calls whose request mentions `marker` (in any case: some templates
    lower-case it into paths)."""
    return [c for c in fake_llm.fake.calls() if marker.lower() in str(c.body).lower()]


ENHANCED = sorted(n for n in SPECS if points_of(n))


def test_every_standard_template_but_order_summary_has_points() -> None:
    assert ENHANCED == sorted(set(SPECS) - {"order-summary"})
    declared_only = [
        (t["name"], s["id"], p["task"])
        for t in STANDARD_TEMPLATES
        for s in t["steps"]
        for p in s.get("enhancements", [])
        if p.get("input") is None or not p.get("apply")
    ]
    assert declared_only == []


@pytest.mark.parametrize("name", ENHANCED)
async def test_free_tenant_runs_every_template_on_baselines(
    name: str, server: str, sessions: Any, settings: Settings, fake_llm: FakeLLMServer
) -> None:
    marker = f"Free{uuid.uuid4().hex[:8]}"
    out = await run_template(server, sessions, settings, "free", name, marker)
    for point in out["points"].values():
        assert (point["decision"], point["reason"], point["fallback"]) == (
            "BASELINE",
            "TIER",
            None,
        ), point
        assert Decimal(point["costUsd"]) == 0
    assert not calls_with(fake_llm, marker)
    assert Decimal(out["events"][-1]["costUsd"]) == 0


@pytest.mark.parametrize("name", ENHANCED)
async def test_premium_tenant_gets_ai_at_every_point(
    name: str, server: str, sessions: Any, settings: Settings, fake_llm: FakeLLMServer
) -> None:
    marker = f"Prem{uuid.uuid4().hex[:8]}"
    out = await run_template(server, sessions, settings, "premium", name, marker)
    points = out["points"]
    for point in points.values():
        assert (point["decision"], point["reason"], point["fallback"]) == ("AI", "ENHANCE", None)
        assert point["provider"] in ("openai", "anthropic"), point
        assert Decimal(point["costUsd"]) > 0 and point["latencyMs"] is not None
    assert calls_with(fake_llm, marker)
    # The live updates carry each decision and the running cost, which only grows and ends
    # at what the points cost.
    events = out["events"]
    live = {(e["stepId"], e["enhancement"]["task"]) for e in events if e["enhancement"]}
    assert live == set(points)
    costs = [Decimal(e["costUsd"]) for e in events]
    assert costs == sorted(costs) and costs[0] == 0
    assert costs[-1] == sum(Decimal(p["costUsd"]) for p in points.values())
    assert Decimal(out["execution"]["aiCostUsd"]) == costs[-1]


async def test_premium_ai_output_is_applied_per_item(
    server: str,
    sessions: Any,
    settings: Settings,
    fake_llm: FakeLLMServer,
    mail_sink: DevMailSink,
) -> None:
    """A fan-out step's point decides once and runs per item: each recipient gets their own
    personalised text, and the composed subject is the generated one."""
    marker = f"Item{uuid.uuid4().hex[:8]}"
    fake_llm.fake.rule(
        contains=f"Message: Here is what we shipped this season ({marker})",
        json={"text": f"Shipped! {marker}"},
    )
    for who in ("Ada", "Grace"):
        fake_llm.fake.rule(
            contains=f"{who.lower()}.{marker.lower()}@example.com",
            json={"text": f"Dear {who}, news from {marker} (AI)."},
        )
    out = await run_template(server, sessions, settings, "premium", "email-campaign", marker)
    send = out["points"][("send", "personalize_content")]
    assert (send["items"], send["enhancedItems"]) == (2, 2)
    mails = [m for m in mail_sink.messages() if marker.lower() in (m["To"] or "")]
    assert sorted(m["Subject"] for m in mails) == [f"Shipped! {marker}"] * 2
    bodies = sorted(m.get_payload().strip() for m in mails)
    assert bodies == [
        f"Dear Ada, news from {marker} (AI).",
        f"Dear Grace, news from {marker} (AI).",
    ]


def params(name: str) -> dict[str, Any]:
    return {
        "user": {
            "email": f"{uuid.uuid4().hex[:8]}@example.com",
            "name": name,
            "company": "Analytical Engines",
        },
        "activation_timeout_seconds": 1,
    }


async def onboard(server: str, sessions: Any, tier: str, user: str) -> dict[str, Any]:
    keys = await make_tenant(sessions, tier)
    client = GraphQLClient(server, keys.admin)
    _, execution = await run(client, server, keys.admin, "user-onboarding", params(user))
    assert execution["status"] == "COMPLETED", execution["error"]
    welcome = next(s for s in execution["steps"] if s["id"] == "welcome")
    return {"execution": execution, "points": welcome["enhancements"]}


async def test_free_tenant_gets_the_baseline_without_an_ai_call(
    server: str, sessions: Any, fake_llm: FakeLLMServer
) -> None:
    marker = f"Free{uuid.uuid4().hex[:6]}"
    out = await onboard(server, sessions, "free", marker)
    assert [(p["task"], p["decision"], p["reason"]) for p in out["points"]] == [
        ("personalize_content", "BASELINE", "TIER")
    ]
    assert not [c for c in fake_llm.fake.calls() if marker in str(c.body)]
    types = [e["type"] for e in out["execution"]["events"]]
    assert types.index("STEP_ENHANCED") < types.index("COMPLETED")


async def test_premium_tenant_gets_ai_applied_to_the_step(
    server: str, sessions: Any, fake_llm: FakeLLMServer, mail_sink: DevMailSink
) -> None:
    marker = f"Prem{uuid.uuid4().hex[:6]}"
    fake_llm.fake.rule(contains=marker, json={"text": f"Dear {marker}, welcome aboard (AI)."})
    out = await onboard(server, sessions, "premium", marker)
    (point,) = out["points"]
    assert (point["decision"], point["reason"], point["provider"]) == ("AI", "ENHANCE", "openai"), (
        point
    )
    assert float(point["costUsd"]) > 0
    mails = [m for m in mail_sink.messages() if marker in m.get_payload()]
    assert mails and "welcome aboard (AI)" in mails[-1].get_payload()


def rejecting_template(marker: str, fan_out: bool) -> dict[str, Any]:
    """An email step whose subject a premium tenant's AI rewrites, on one recipient or each."""
    point = {
        "task": "generate_text",
        "min_tier": "premium",
        "fallback": "the subject as given",
        "input": {"prompt_template": f"Write a subject about {marker}.", "max_chars": 200},
        "apply": {"subject": "text"},
    }
    step: dict[str, Any] = {
        "id": "send",
        "activity": "email.send",
        "input": {
            "to": "{{ item if item is defined else params.to[0] }}",
            "subject": f"Plain {marker}",
            "text": "Hello.",
        },
        "enhancements": [point],
    }
    if fan_out:
        step["for_each"] = "params.to"
    return {
        "name": "rejecting",
        "title": "AI output the step refuses",
        "parameters": {"type": "object", "properties": {"to": {"type": "array"}}},
        "steps": [step],
    }


@pytest.mark.parametrize("fan_out", [False, True], ids=["single", "for-each"])
async def test_a_step_refusing_ai_output_runs_on_its_plain_input(
    fan_out: bool,
    server: str,
    sessions: Any,
    settings: Settings,
    fake_llm: FakeLLMServer,
    mail_sink: DevMailSink,
) -> None:
    """A model's subject with a line break is refused by email.send (StepInputError): the step
    runs again on its plain input and the point records STEP_REJECTED with what it cost."""
    marker = f"Rej{uuid.uuid4().hex[:8]}"
    fake_llm.fake.rule(contains=marker, json={"text": "Two\nlines"}, first=True)
    keys = await make_tenant(sessions, "premium")
    name = await publish(sessions, keys, rejecting_template(marker, fan_out))
    to = [f"{who}.{marker.lower()}@example.com" for who in ("ada", "grace")]
    client = GraphQLClient(server, keys.admin)
    events, execution = await run(client, server, keys.admin, name, {"to": to})
    assert execution["status"] == "COMPLETED", execution["error"]
    if os.environ.get("WFS_RECORD_HISTORIES"):
        stem = f"custom/refused-ai-{'for-each' if fan_out else 'single'}"
        await record_history(stem, execution["id"], settings.temporal_address)
    (send,) = execution["steps"]
    (point,) = send["enhancements"]  # one record per point, marked as refused
    assert (point["decision"], point["reason"]) == ("BASELINE", "ENHANCE"), point
    assert point["fallback"] == "STEP_REJECTED" and Decimal(point["costUsd"]) > 0
    if fan_out:
        assert (point["items"], point["enhancedItems"]) == (2, 0)
    else:  # the live view saw the AI decision, then the refusal
        live = [e["enhancement"] for e in events if e["type"] == "STEP_ENHANCED"]
        assert [(r["decision"], r["fallback"]) for r in live] == [
            ("AI", None),
            ("BASELINE", "STEP_REJECTED"),
        ]
    assert Decimal(execution["aiCostUsd"]) > 0
    mails = [m for m in mail_sink.messages() if marker.lower() in (m["To"] or "")]
    assert [m["Subject"] for m in mails] == [f"Plain {marker}"] * (2 if fan_out else 1)
    # Impact analytics count the run with the baseline ones: its result used no AI output.
    now = datetime.now(UTC)
    window = {
        "templateId": execution["template"]["id"],
        "from": (now - timedelta(hours=1)).isoformat(),
        "to": (now + timedelta(hours=1)).isoformat(),
    }
    impact = await client.data((OPS / "TemplateImpact.graphql").read_text(), window)
    groups = impact["templateImpact"]
    assert (groups["enhanced"]["executions"], groups["baseline"]["executions"]) == (0, 1)


async def test_a_failed_fan_out_still_records_its_points(
    server: str,
    sessions: Any,
    settings: Settings,
    fake_llm: FakeLLMServer,
) -> None:
    """One recipient's address is refused with or without AI: the step fails, and its point
    is recorded as far as it got (the failed item: AI output refused, then the plain input)."""
    marker = f"Bad{uuid.uuid4().hex[:8]}"
    fake_llm.fake.rule(contains=marker, json={"text": f"AI subject {marker}"}, first=True)
    keys = await make_tenant(sessions, "premium")
    name = await publish(sessions, keys, rejecting_template(marker, fan_out=True))
    client = GraphQLClient(server, keys.admin)
    _, execution = await run(client, server, keys.admin, name, {"to": ["not an address"]})
    assert execution["status"] == "FAILED" and "not one email address" in execution["error"]
    if os.environ.get("WFS_RECORD_HISTORIES"):
        await record_history("custom/fan-out-failed", execution["id"], settings.temporal_address)
    (send,) = execution["steps"]
    assert send["status"] == "FAILED"
    (point,) = send["enhancements"]
    assert (point["task"], point["items"], point["enhancedItems"]) == ("generate_text", 1, 0)
    assert (point["decision"], point["fallback"]) == ("BASELINE", "STEP_REJECTED"), point
    assert Decimal(point["costUsd"]) > 0


async def test_every_provider_failing_still_completes_on_the_baseline(
    server: str, sessions: Any, fake_llm: FakeLLMServer
) -> None:
    marker = f"Down{uuid.uuid4().hex[:6]}"
    fake_llm.fake.rule(contains=marker, status=500)
    out = await onboard(server, sessions, "enterprise", marker)
    (point,) = out["points"]
    assert point["decision"] == "BASELINE"
    assert point["fallback"] == "PROVIDER_ERROR"


@pytest.mark.parametrize("name", ENHANCED)
async def test_every_provider_failing_still_completes_every_template(
    name: str,
    server: str,
    sessions: Any,
    settings: Settings,
    fake_llm: FakeLLMServer,
    mail_sink: DevMailSink,
) -> None:
    marker = f"fail{uuid.uuid4().hex[:8]}"  # lower case: some templates lower-case it
    fake_llm.fake.rule(contains=marker, status=500, first=True)
    out = await run_template(server, sessions, settings, "enterprise", name, marker)
    for point in out["points"].values():
        assert point["decision"] == "BASELINE" and Decimal(point["costUsd"]) == 0, point
        assert (point["reason"], point["fallback"]) in (
            ("ENHANCE", "PROVIDER_ERROR"),
            ("ENHANCE", "BREAKER_OPEN"),  # breakers opened by the failures before
            ("PROVIDERS_DOWN", None),
        ), point
    assert calls_with(fake_llm, marker) or any(
        p["reason"] == "PROVIDERS_DOWN" or p["fallback"] == "BREAKER_OPEN"
        for p in out["points"].values()
    )
    if name == "email-campaign":  # the plain text and subject went out to each recipient
        assert out["points"][("send", "personalize_content")]["enhancedItems"] == 0
        mails = [m for m in mail_sink.messages() if marker in (m["To"] or "")]
        assert sorted(m["Subject"] for m in mails) == [f"Autumn update {marker}"] * 2
        assert sorted(m.get_payload().split(",")[0] for m in mails) == ["Hi Ada", "Hi Grace"]
