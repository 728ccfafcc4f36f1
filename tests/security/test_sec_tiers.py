"""Tier entitlements are the platform's to give, never the tenant's to take (issue 9).

A tenant admin may override AI models only with its tier's allowed models and set a budget only
up to its tier's maximum; both hold again at call time, so a downgrade keeps no premium model or
budget. Only the platform operator's CLI changes a tier (no GraphQL mutation can), and no tenant
key gets a link to the Temporal Web UI, which shows every tenant's workflows.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from graphql import GraphQLEnumType, GraphQLInputObjectType, GraphQLNamedType, get_named_type
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from app.ai import routing
from app.ai.contracts import TASKS, ModelChoice
from app.ai.fake_llm import FakeLLMServer
from app.ai.service import AiService
from app.ai_catalog import default_catalog
from app.api.schema import build_schema
from app.models import TIERS
from app.settings import Settings
from app.tenants.service import TenantService
from tests.conftest import TenantKeys, make_tenant
from tests.support import GraphQLClient, own_service
from tests.workers.test_template_graph import run

WFS = Path(sys.executable).parent / "wfs"
TEXT = (
    "Invoice INV-7 from ACME. Total due: $1,250.00 by 2026-12-01. "
    "Contact billing@acme.example for questions. The invoice covers October."
)
UPDATE_AI = """
mutation($input: UpdateAiSettingsInput!) {
  updateAiSettings(input: $input) {
    __typename
    ... on AiSettings { overrides allowedModels { provider model } }
    ... on ValidationError { code message problems { path message } }
  }
}"""
SET_BUDGET = """
mutation($limitUsd: Decimal) {
  setBudget(limitUsd: $limitUsd) {
    __typename
    ... on Budget { limitUsd }
    ... on UserError { code message }
  }
}"""
AI_SETTINGS = """
{ aiSettings { budgetLimitUsd budgetMaxUsd overrides allowedModels { provider model } }
  viewer { budget { limitUsd } } }"""
ENTERPRISE_BEST = {"provider": "anthropic", "model": "claude-opus-5-5"}
PREMIUM_MODEL = {"provider": "anthropic", "model": "claude-sonnet-5-5"}
PRO_MODEL = {"provider": "anthropic", "model": "claude-haiku-5-5"}
PRO_MODELS = [
    {"provider": "openai", "model": "gpt-6-luna"},
    {"provider": "anthropic", "model": "claude-haiku-5-5"},
]


async def override(client: GraphQLClient, task: str, *models: dict[str, str]) -> dict[str, Any]:
    body = await client.data(UPDATE_AI, {"input": {"overrides": {task: list(models)}}})
    return dict(body["updateAiSettings"])


async def tier_of(sessions: Any, name: str) -> str:
    async with sessions() as s:
        return (await TenantService(s).get_by_name(name)).tier


async def wfs(database_url: str, cwd: Path, *args: str) -> tuple[int, str, str]:
    """The operator's CLI in its own process (off the event loop the API and worker share)."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "TEMPORAL_ADDRESS")}
    proc = await asyncio.create_subprocess_exec(
        str(WFS),
        *args,
        env={**env, "DATABASE_URL": database_url},
        cwd=cwd,  # no .env or services.json of the checkout
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


# -- model overrides -----------------------------------------------------------------------


async def test_free_admin_cannot_override_models_at_all(server: str, sessions: Any) -> None:
    keys = await make_tenant(sessions, "free")
    admin = GraphQLClient(server, keys.admin)
    refused = await override(admin, "summarize", ENTERPRISE_BEST)
    assert refused["__typename"] == "ValidationError" and refused["code"] == "VALIDATION_FAILED"
    assert refused["problems"] == [
        {"path": "$.summarize", "message": "the free tier has no models to override with"}
    ]
    settings = (await admin.data(AI_SETTINGS))["aiSettings"]
    assert settings["overrides"] == {} and settings["allowedModels"] == []
    # Clearing (no models) stays possible on every tier.
    cleared = await admin.data(UPDATE_AI, {"input": {"overrides": {}}})
    assert cleared["updateAiSettings"]["__typename"] == "AiSettings"


async def test_pro_admin_overrides_within_pro_only(server: str, sessions: Any) -> None:
    keys = await make_tenant(sessions, "pro")
    admin = GraphQLClient(server, keys.admin)
    accepted = await override(admin, "summarize", PRO_MODEL)
    assert accepted["__typename"] == "AiSettings", accepted
    assert accepted["overrides"] == {"summarize": [PRO_MODEL]}
    assert sorted(accepted["allowedModels"], key=str) == sorted(PRO_MODELS, key=str)

    refused = await override(admin, "summarize", PREMIUM_MODEL)
    assert refused["__typename"] == "ValidationError"
    [problem] = refused["problems"]
    assert problem["path"] == "$.summarize[0].model"
    # The problem names what the tier allows, so the admin knows what to choose.
    assert "not included in the pro tier" in problem["message"]
    assert "openai/gpt-6-luna" in problem["message"]
    assert "anthropic/claude-haiku-5-5" in problem["message"]
    # More entries than allowed models (a padded list) is refused before any is looked at.
    padded = await override(admin, "summarize", *([PRO_MODEL] * 50))
    assert padded["__typename"] == "ValidationError"
    assert padded["problems"][0]["message"].startswith("at most 2 models on the pro tier")
    # Non-string fields are a problem, not a server error.
    odd = await override(admin, "summarize", {"provider": ["openai"], "model": {"x": 1}})  # type: ignore[dict-item]
    assert odd["__typename"] == "ValidationError"
    # Nothing refused was stored.
    settings = (await admin.data(AI_SETTINGS))["aiSettings"]
    assert settings["overrides"] == {"summarize": [PRO_MODEL]}


MODELS = st.sampled_from(
    [{"provider": c.provider, "model": c.model} for c in default_catalog().models]
    + [{"provider": "openai", "model": "gpt-9"}, {"provider": "x", "model": "y"}, {}, "gpt-6.2-sol"]
)


@hsettings(max_examples=300, deadline=None)
@given(
    tier=st.sampled_from([*TIERS, "platinum"]),
    task=st.sampled_from(TASKS),
    stored=st.dictionaries(
        st.sampled_from(TASKS),
        st.one_of(st.lists(MODELS, max_size=6), st.text(max_size=5), st.none()),
        max_size=3,
    ),
    near_budget=st.booleans(),
)
def test_candidates_never_leave_the_tier(
    tier: str, task: str, stored: dict[str, Any], near_budget: bool
) -> None:
    """Whatever an override row holds (stored on another tier, or tampered with), the models
    called are the tier's allowed ones, and an override with none of them means the tier's table."""
    chosen = routing.candidates(
        tier, task, overrides=stored, configured={"openai", "anthropic"}, near_budget=near_budget
    )
    allowed = set(routing.allowed_models(tier))
    assert set(chosen) <= allowed
    entries = stored.get(task)
    wanted = [
        choice
        for o in (entries if isinstance(entries, list) else [])
        if isinstance(o, dict)
        and (choice := ModelChoice(str(o.get("provider")), str(o.get("model")))) in allowed
    ]
    if wanted:  # the allowed part of the override, in its order
        expected = [default_catalog().cheaper(c) if near_budget else c for c in wanted]
        assert chosen == list(dict.fromkeys(expected))
    else:  # nothing allowed in it: the tier's own table
        plain = routing.candidates(
            tier, task, configured={"openai", "anthropic"}, near_budget=near_budget
        )
        assert chosen == plain


def test_allowed_models_grow_with_the_tier() -> None:
    """Free allows none; each tier allows its routed models and their cheaper siblings, and all
    a lower tier allows (so an upgrade never invalidates an override)."""
    assert routing.allowed_models("free") == ()
    for lower, higher in zip(TIERS, TIERS[1:], strict=False):
        assert set(routing.allowed_models(lower)) <= set(routing.allowed_models(higher))
    for tier in TIERS:
        for models in default_catalog().routing[tier].values():
            for model in models:
                assert model in routing.allowed_models(tier)
                assert default_catalog().cheaper(model) in routing.allowed_models(tier)
    enterprise_only = set(routing.allowed_models("enterprise")) - set(
        routing.allowed_models("premium")
    )
    assert ModelChoice(**ENTERPRISE_BEST) in enterprise_only


# -- budgets -------------------------------------------------------------------------------


@pytest.mark.parametrize(("tier", "maximum"), [("free", "0"), ("pro", "100"), ("premium", "1000")])
async def test_set_budget_is_capped_by_the_tier_maximum(
    server: str, sessions: Any, tier: str, maximum: str
) -> None:
    admin = GraphQLClient(server, (await make_tenant(sessions, tier)).admin)
    over = str(Decimal(maximum) + Decimal("0.01"))
    for amount in (over, "1000000"):
        refused = (await admin.data(SET_BUDGET, {"limitUsd": amount}))["setBudget"]
        assert refused["__typename"] == "ValidationError" and refused["code"] == "VALIDATION_FAILED"
        assert f"between 0 and {Decimal(maximum):,} USD" in refused["message"]
        assert f"the {tier} tier's maximum" in refused["message"]
    accepted = (await admin.data(SET_BUDGET, {"limitUsd": maximum}))["setBudget"]
    assert accepted["__typename"] == "Budget"
    assert Decimal(accepted["limitUsd"]) == Decimal(maximum)
    settings = (await admin.data(AI_SETTINGS))["aiSettings"]
    assert Decimal(settings["budgetMaxUsd"]) == Decimal(maximum)


# -- a downgrade keeps nothing of the higher tier --------------------------------------------


async def test_downgrade_drops_premium_models_and_caps_the_budget(
    server: str,
    sessions: Any,
    settings: Settings,
    fake_llm: FakeLLMServer,
    tmp_path: Path,
) -> None:
    keys = await make_tenant(sessions, "premium")
    admin = GraphQLClient(server, keys.admin)
    premium_override = {task: [PREMIUM_MODEL] for task in TASKS}
    stored = await admin.data(UPDATE_AI, {"input": {"overrides": premium_override}})
    assert stored["updateAiSettings"]["__typename"] == "AiSettings"
    budget = (await admin.data(SET_BUDGET, {"limitUsd": "500"}))["setBudget"]
    assert Decimal(budget["limitUsd"]) == 500

    assert settings.database_url
    code, out, err = await wfs(
        settings.database_url, tmp_path, "tenant", "set-tier", keys.name, "pro"
    )
    assert code == 0, err
    assert out.strip() == f"tenant {keys.name}: tier premium -> pro"
    assert await tier_of(sessions, keys.name) == "pro"

    # The budget in force is the pro maximum, although 500 stays stored (for an upgrade back).
    view = await admin.data(AI_SETTINGS)
    assert Decimal(view["aiSettings"]["budgetLimitUsd"]) == 100
    assert Decimal(view["viewer"]["budget"]["limitUsd"]) == 100
    async with sessions() as s:
        tenant = await TenantService(s).get_by_name(keys.name)
        assert (await AiService(s).tenant_ai(tenant.id, settings)).budget_usd == 100

    seen = len(fake_llm.fake.calls())
    _, execution = await run(admin, server, keys.admin, "document-processing", {"text": TEXT})
    assert execution["status"] == "COMPLETED", execution["error"]
    used = {(a["provider"], a["model"]) for a in execution["result"]["ai"].values()}
    assert used == {("openai", "gpt-6-luna")}  # the pro table, not the stored premium override
    called = {c.model for c in fake_llm.fake.calls()[seen:] if c.api != "models"}
    assert called and called <= {m["model"] for m in PRO_MODELS}
    assert PREMIUM_MODEL["model"] not in called


# -- only the platform operator changes a tier ---------------------------------------------


async def test_set_tier_cli_refuses_unknown_tier_and_tenant(
    sessions: Any, settings: Settings, tmp_path: Path
) -> None:
    keys = await make_tenant(sessions, "free")
    assert settings.database_url
    code, _, err = await wfs(
        settings.database_url, tmp_path, "tenant", "set-tier", keys.name, "gold"
    )
    assert code == 1
    assert "unknown tier 'gold'; expected one of free, pro, premium, enterprise" in err
    assert "Traceback" not in err
    assert await tier_of(sessions, keys.name) == "free"

    code, _, err = await wfs(
        settings.database_url, tmp_path, "tenant", "set-tier", f"nobody-{uuid.uuid4().hex}", "pro"
    )
    assert code == 1 and "not found" in err

    code, out, err = await wfs(
        settings.database_url, tmp_path, "tenant", "set-tier", keys.name, "enterprise"
    )
    assert code == 0, err
    assert await tier_of(sessions, keys.name) == "enterprise"


# Platform credentials only: tests/api/test_platform_admin.py proves every tenant key, an
# admin's too, gets FORBIDDEN there.
PLATFORM_MUTATIONS = {"createTenant", "setTenantTier"}


def test_no_graphql_mutation_takes_a_tier() -> None:
    """No mutation argument or input field, however nested, is named tier or typed Tier: the
    tier is not the tenant's to set. Only the platform credential's mutations take one."""
    schema = build_schema()._schema
    assert schema.mutation_type is not None
    assert PLATFORM_MUTATIONS <= set(schema.mutation_type.fields)
    seen: set[str] = set()

    def check(name: str, named: GraphQLNamedType, where: str) -> None:
        assert "tier" not in name.lower(), where
        assert not (isinstance(named, GraphQLEnumType) and named.name == "Tier"), where
        if isinstance(named, GraphQLInputObjectType) and named.name not in seen:
            seen.add(named.name)
            for field_name, field in named.fields.items():
                check(field_name, get_named_type(field.type), f"{where}.{field_name}")

    for field_name, field in schema.mutation_type.fields.items():
        if field_name in PLATFORM_MUTATIONS:
            continue
        for arg_name, arg in field.args.items():
            check(arg_name, get_named_type(arg.type), f"{field_name}({arg_name})")


# -- the Temporal Web UI is not for tenants ------------------------------------------------


@pytest.fixture
async def api_with_ui(settings: Settings, server: str) -> AsyncIterator[str]:
    """An API whose deployment has a Temporal Web UI configured (the shared one has none), on
    the same database and task queue so the suite's worker runs what it starts."""
    async with own_service(settings, temporal_ui_url="http://127.0.0.1:8233") as url:
        yield url


async def test_temporal_ui_url_is_null_for_every_tenant_key(
    api_with_ui: str, sessions: Any
) -> None:
    keys: TenantKeys = await make_tenant(sessions, "free")
    started = await GraphQLClient(api_with_ui, keys.admin).data(
        """mutation($input: StartExecutionInput!) {
             startExecution(input: $input) { ... on Execution { id } ... on UserError { message } }
           }""",
        {"input": {"templateName": "document-processing", "params": {"text": TEXT}}},
    )
    execution_id = started["startExecution"]["id"]
    for key in (keys.admin, keys.operator, keys.viewer):
        body = await GraphQLClient(api_with_ui, key).data(
            "query($id: ID!) { execution(id: $id) { id temporalUiUrl } }", {"id": execution_id}
        )
        assert body["execution"] == {"id": execution_id, "temporalUiUrl": None}
