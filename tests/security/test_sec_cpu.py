"""CPU-heavy pure functions on tenant text (issue 9): linear patterns, off the event loop, bounded.

The entity rules once held a quadratic email pattern that ran inline in the AI gateway's
baseline: 40 KB of `"a." * n` stalled every coroutine of the process for seconds. Here every
rule meets 200 KB of adversarial text for each pattern, the whole AI path meets 120 KB through
document-processing (free tenant: baselines; premium tenant: unusable model output, then the
baseline) and the gateway meets it with failing providers, while a ticker on this event loop
(which also runs the API, the worker and the AI worker) is never late by 100 ms.
Correctness: the rewritten patterns find exactly what the original ones found (differential
Hypothesis test against the original, backtracking patterns kept below as the reference).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from app.ai.budget import BudgetLedger
from app.ai.cache import AiCache
from app.ai.contracts import AiRequest
from app.ai.fake_llm import FakeLLMServer
from app.ai.gateway import AiGateway, AiInputError, TenantAi
from app.ai.health import ProviderHealth
from app.ai.providers import build_providers
from app.ai.rules import ENTITY_PATTERNS, classify, extract_entities, summarize
from app.ai.tasks import MAX_TEXT_CHARS, InvalidInput, check_input, truncation
from app.settings import Settings
from app.steps.base import StepInputError, run_cpu
from app.steps.data import filter_records, transform
from app.tenants.service import TenantService
from tests.conftest import TenantKeys, make_tenant
from tests.support import MAX_LOOP_STALL, GraphQLClient, LoopWatch, loop_watch
from tests.workers.test_template_graph import run
from workers.ai_activities import step_output

T = TypeVar("T")
MAX_GAP_SECONDS = MAX_LOOP_STALL

# The entity patterns as they were before issue 9 (backtracking, quadratic on some inputs):
# the reference the linear scan must agree with, match for match.
REFERENCE = {
    "email": re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"),
    "url": re.compile(r"\bhttps?://[^\s<>\"')]+"),
    "phone": re.compile(r"(?<!\w)\+?\d{1,3}?[\s.-]?\(?\d{2,4}\)?[\s.-]\d{3,4}[\s.-]\d{3,4}(?!\w)"),
    "date": re.compile(
        r"\b(?:\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4}|\d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|"
        r"Aug|Sep|Oct|Nov|Dec)[a-z]* \d{4})\b"
    ),
    "money": re.compile(r"(?:[$€£]\s?\d[\d,]*(?:\.\d+)?|\b\d[\d,]*(?:\.\d+)? ?(?:USD|EUR|GBP)\b)"),
    "percent": re.compile(r"\b\d+(?:\.\d+)?\s?%"),
}

DOC = (
    "Invoice INV-2 from ACME Corp. Total due: $1,250.00 by 2026-12-01 or 3 Dec 2026. "
    "Contact billing@acme.com or +1 555 123 4567. We paid 50% upfront, 400 EUR in fees. "
    "Details at https://acme.com/inv/2. The invoice covers consulting for the invoice period."
)
SIZE = 200_000


def _repeat(unit: str, size: int = SIZE) -> str:
    return unit * (size // len(unit))


# Per pattern, texts that make a backtracking scan read the same run again from each position
# (each holds no entity of its own, so the DOC after it must give exactly DOC's entities).
ADVERSARIAL = {
    "email": ["a.", "a@", "a.@", ".a", "a-"],
    "money": ["1,", "$", "1 ", "\u0661,", "1,1 US"],
    "phone": ["1 ", "+1 (12) ", "1-", "1"],
    "date": ["1/", "2024-0-", "1 Jan" + "a" * 1000],
    "percent": ["1.", "1"],
    "url": ["https:/", "http:"],
}
PADS = sorted({unit for units in ADVERSARIAL.values() for unit in units})


async def watched(work: Awaitable[T]) -> tuple[T, LoopWatch]:
    async with loop_watch() as watch:
        result = await work
    return result, watch


def spans(entities: list[dict[str, Any]], offset: int = 0) -> list[tuple[str, str, int]]:
    return [(e["type"], e["text"], e["start"] + offset) for e in entities]


# -- the rules, directly ---------------------------------------------------------------------


@pytest.mark.parametrize("unit", PADS)
async def test_rules_on_200kb_adversarial_text_find_the_same_entities_without_a_stall(
    unit: str,
) -> None:
    pad = _repeat(unit)
    text = pad + "\n\n" + DOC
    found, watch = await watched(run_cpu(extract_entities, text))
    assert spans(found["entities"]) == spans(extract_entities(DOC)["entities"], len(pad) + 2)
    assert {e["type"] for e in found["entities"]} == set(ENTITY_PATTERNS)
    assert watch.ticks > 0 and watch.worst < MAX_GAP_SECONDS, watch
    summary, watch = await watched(run_cpu(summarize, text, 3, 600))
    assert summary["summary"] and watch.worst < MAX_GAP_SECONDS, watch
    scored, watch = await watched(
        run_cpu(classify, text, ["invoice", "contract"], {"invoice": ["total due", "paid"]})
    )
    assert scored["category"] == "invoice" and watch.worst < MAX_GAP_SECONDS, watch


# Texts of the pieces the patterns care about, so near-misses are common.
NEAR_MISSES = st.lists(
    st.sampled_from(
        list("a1Z_.@-+ ,$€£%/:()\n\t") + ["USD", "EUR", "http://", "Jan ", "é", "\u0661", "²"]
    ),
    max_size=30,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(NEAR_MISSES)
def test_linear_patterns_match_exactly_what_the_backtracking_ones_did(text: str) -> None:
    for kind, reference in REFERENCE.items():
        expected = [m.span() for m in reference.finditer(text)]
        assert [m.span() for m in ENTITY_PATTERNS[kind].finditer(text)] == expected, kind


@settings(max_examples=150, deadline=None)
@given(st.one_of(NEAR_MISSES, st.text(max_size=300)), st.integers(1, 5), st.integers(20, 400))
def test_rules_return_well_formed_results_on_any_text(
    text: str, max_sentences: int, max_chars: int
) -> None:
    entities = extract_entities(text)["entities"]
    for entity in entities:
        assert entity["type"] in ENTITY_PATTERNS
        assert text[entity["start"] : entity["end"]] == entity["text"] != ""
    assert entities == sorted(entities, key=lambda e: (e["start"], e["type"]))
    out = classify(text, ["invoice", "other"], {"invoice": ["total due"]})
    assert out["category"] in ("invoice", "other") and set(out["scores"]) == {"invoice", "other"}
    summary = summarize(text, max_sentences, max_chars)
    assert isinstance(summary["summary"], str) and len(summary["summary"]) <= max_chars
    assert 0 <= summary["sentences"] <= max_sentences


# -- other pure functions on tenant input ----------------------------------------------------


class Counted:
    """A value that counts its equality comparisons (filter `in` must not compare n x m)."""

    comparisons = 0

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        Counted.comparisons += 1
        return isinstance(other, Counted) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


def test_filter_in_compares_each_record_a_bounded_number_of_times() -> None:
    n = 5_000
    records = [{"id": i, "v": Counted(i)} for i in range(n)]
    where = [{"field": "v", "op": "in", "value": [Counted(i) for i in range(0, 2 * n, 2)]}]
    Counted.comparisons = 0
    kept = filter_records({"data": records, "where": where})
    assert [r["id"] for r in kept] == list(range(0, n, 2))
    assert Counted.comparisons <= 2 * n  # a list scan would be n x n/2 = 12.5 million


def test_passes_over_the_records_are_capped() -> None:
    ops = [{"op": "strip", "field": "x"}] * 201
    with pytest.raises(StepInputError, match="`ops` has 201 entries, more than 200"):
        transform({"data": [{"x": " a "}], "ops": ops})


# -- AI task inputs: the cap on what a task reads --------------------------------------------


def test_extract_entities_refuses_text_past_the_limit_clearly() -> None:
    text = "x" * (MAX_TEXT_CHARS + 1)
    with pytest.raises(InvalidInput) as caught:
        check_input("extract_entities", {"text": text})
    assert caught.value.problems == [
        f"$.text: has {MAX_TEXT_CHARS + 1} characters, more than the {MAX_TEXT_CHARS} "
        "extract_entities reads; split the text and extract each part"
    ]


def test_a_schema_problem_never_quotes_a_megabyte() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_input("summarize", {"text": "y" * 1_000_001})
    assert len(str(caught.value)) < 400 and "is too long" in str(caught.value)


def test_personalize_refuses_a_user_object_past_the_limit() -> None:
    user = {"bio": "z" * MAX_TEXT_CHARS}
    with pytest.raises(InvalidInput, match=r"\$.user: is \d+ characters as JSON, more than"):
        check_input("personalize_content", {"template": "Hi {{ user.bio }}", "user": user})


@pytest.fixture
async def gateway(settings: Settings, sessions: Any) -> AsyncIterator[AiGateway]:
    """A gateway in this event loop, with its own breakers (failures here stay here)."""
    assert settings.redis_url
    redis = aioredis.from_url(settings.redis_url)
    yield AiGateway(
        providers=build_providers(settings),
        ledger=BudgetLedger(redis),
        cache=AiCache(redis),
        health=ProviderHealth(),
        sessions=sessions,
        timeout_seconds=5,
    )
    await redis.aclose()


async def _tenant_id(sessions: Any, tier: str) -> str:
    async with sessions() as session:
        tenant = await TenantService(session).create_tenant(f"cpu-{uuid.uuid4().hex[:8]}", tier)
        await session.commit()
    return str(tenant.id)


FREE = TenantAi(tier="free", enabled=True, budget_usd=Decimal("0"), overrides={})
PREMIUM = TenantAi(tier="premium", enabled=True, budget_usd=Decimal("100"), overrides={})


async def test_long_texts_are_cut_for_classify_and_summarize_and_recorded(
    gateway: AiGateway, sessions: Any
) -> None:
    tenant_id = await _tenant_id(sessions, "free")
    # The tail's keyword would win the classification if the task read that far.
    text = DOC + " " + _repeat("Filler words here. ", MAX_TEXT_CHARS + 50_000) + " qqq99" * 10
    for task, input in (
        ("summarize", {"text": text, "max_sentences": 2}),
        ("classify_content", {"text": text, "categories": ["invoice", "qqq99"]}),
    ):
        outcome = await gateway.run(AiRequest(task, input, tenant_id), FREE)
        assert outcome.fallback_reason == "TIER"
        assert truncation(task, input) == {"text": len(text)}
        record = step_output(outcome, truncation(task, input))["ai"]
        assert record["input_truncated"] == {"text": len(text)}
    assert outcome.output["category"] == "invoice"  # the tail was not read
    with pytest.raises(AiInputError, match="more than the 200000 extract_entities reads"):
        await gateway.run(AiRequest("extract_entities", {"text": text}, tenant_id), FREE)


async def test_failing_providers_on_120kb_adversarial_text_never_stall_the_loop(
    gateway: AiGateway, sessions: Any, fake_llm: FakeLLMServer
) -> None:
    marker = f"cpu-{uuid.uuid4().hex[:8]}"
    fake_llm.fake.rule(contains=marker, status=500)
    tenant_id = await _tenant_id(sessions, "premium")
    text = f"{marker} " + "".join(_repeat(unit, 7_000) for unit in PADS) + "\n\n" + DOC
    assert len(text) > 120_000
    requests = [
        AiRequest("classify_content", {"text": text, "categories": ["invoice", "x"]}, tenant_id),
        AiRequest("summarize", {"text": text}, tenant_id),
        AiRequest("extract_entities", {"text": text}, tenant_id),
    ]
    outcomes, watch = await watched(
        asyncio.gather(*(gateway.run(request, PREMIUM) for request in requests))
    )
    assert [o.outcome for o in outcomes] == ["FALLBACK"] * 3
    assert {o.fallback_reason for o in outcomes} <= {"PROVIDER_ERROR", "BREAKER_OPEN"}
    assert outcomes[0].output["category"] == "invoice"
    assert {e["type"] for e in outcomes[2].output["entities"]} == set(ENTITY_PATTERNS)
    assert watch.ticks > 0 and watch.worst < MAX_GAP_SECONDS, watch


# -- end to end: document-processing in the process that serves everyone --------------------


async def _document_processing(
    server: str, settings: Settings, sessions: Any, keys: TenantKeys, content: str
) -> tuple[dict[str, Any], LoopWatch]:
    async with sessions() as session:
        tenant = await TenantService(session).get_by_name(keys.name)
    path = Path(settings.files_root) / str(tenant.id) / "inbox" / "adversarial.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    client = GraphQLClient(server, keys.admin)
    params = {"path": "inbox/adversarial.txt"}
    await run(client, server, keys.admin, "document-processing", {"text": DOC})  # warm up
    async with loop_watch(f"{server}/healthz") as watch:
        _, execution = await run(client, server, keys.admin, "document-processing", params)
    assert execution["status"] == "COMPLETED", execution["error"]
    return execution["result"], watch


def _adversarial_document(marker: str) -> str:
    text = f"{marker}\n" + "\n".join(_repeat(unit, 7_000) for unit in PADS) + "\n\n" + DOC
    assert len(text) >= 120_000
    return text


async def test_free_tenant_document_processing_of_120kb_adversarial_text(
    server: str, settings: Settings, sessions: Any
) -> None:
    keys = await make_tenant(sessions, "free")
    result, watch = await _document_processing(
        server, settings, sessions, keys, _adversarial_document("free")
    )
    assert {a["provider"] for a in result["ai"].values()} == {"baseline"}
    assert result["category"] == "invoice"
    expected = {(e["type"], e["text"]) for e in extract_entities(DOC)["entities"]}
    assert {(e["type"], e["text"]) for e in result["entities"]} == expected
    assert watch.worst < MAX_GAP_SECONDS, watch
    assert watch.healthz and set(watch.healthz) == {200}


async def test_premium_tenant_with_unusable_model_output_on_120kb_adversarial_text(
    server: str, settings: Settings, sessions: Any, fake_llm: FakeLLMServer
) -> None:
    """The shared AI worker's breakers are left alone (other tests use its models): the model
    answers, is paid, and every answer is unusable and heavy to check (500 entities not in the
    text, 40 KB of markup as a summary), so validation and then the baseline run on 120 KB."""
    marker = f"cpu-{uuid.uuid4().hex[:8]}"
    unusable = {
        "category": "hacked",
        "confidence": 2,
        "summary": "<b>made up</b> " * 3_000,
        "entities": [{"type": "email", "text": f"x{i}@nowhere.example"} for i in range(500)],
    }
    fake_llm.fake.rule(contains=marker, json=unusable, times=6)
    keys = await make_tenant(sessions, "premium")
    result, watch = await _document_processing(
        server, settings, sessions, keys, _adversarial_document(marker)
    )
    assert {a["fallback_reason"] for a in result["ai"].values()} == {"INVALID_OUTPUT"}
    assert {a["provider"] for a in result["ai"].values()} == {"openai"}
    assert result["category"] == "invoice"
    assert {e["type"] for e in result["entities"]} == {
        "email",
        "url",
        "phone",
        "date",
        "money",
        "percent",
    }
    assert watch.worst < MAX_GAP_SECONDS, watch
    assert watch.healthz and set(watch.healthz) == {200}
