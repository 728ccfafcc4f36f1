"""Enhancement points: the same onboarding template COMPLETES for a free tenant (baseline, no
AI call), for a premium tenant (AI applied to the welcome email) and when every provider
fails; each decision and its reason are in the audit trail and the steps view."""

from __future__ import annotations

import uuid
from typing import Any

from app.ai.fake_llm import FakeLLMServer
from app.embedded.mail import DevMailSink
from tests.conftest import make_tenant
from tests.support import GraphQLClient
from tests.workers.test_template_graph import run


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


async def test_every_provider_failing_still_completes_on_the_baseline(
    server: str, sessions: Any, fake_llm: FakeLLMServer
) -> None:
    marker = f"Down{uuid.uuid4().hex[:6]}"
    fake_llm.fake.rule(contains=marker, status=500)
    out = await onboard(server, sessions, "enterprise", marker)
    (point,) = out["points"]
    assert point["decision"] == "BASELINE"
    assert point["fallback"] == "PROVIDER_ERROR"
