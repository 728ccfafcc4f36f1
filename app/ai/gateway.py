"""The AI gateway: one call per task, never failing for want of AI.

For a request it: checks the input; decides the candidates (tier, tenant switch and
overrides, configured providers, cheaper models past the budget's soft threshold); serves a
per-tenant cache hit at no cost; skips providers whose circuit is open; reserves the estimated
cost in the tenant's monthly budget (refused: baseline with reason BUDGET); calls the provider,
validates the output (one retry on invalid output, then baseline with INVALID_OUTPUT); fails
over to the next candidate on provider errors; settles the actual cost; and records every
outcome (calls, hits and fallbacks) as an ai_usage row, with a keyed fingerprint of the input
once it was looked at (app/ai/input_hash.py; never the text). The baseline is the task's
deterministic non-AI result. Every candidate tried or skipped leaves an attempt record
(provider, model, error kind, sanitised message; app/ai/attempts.py) on the usage row. A model
its provider refuses (404 unknown or retired, 403 not allowed, a 400 about the output format or
a parameter it does not support) fails over like an outage and is marked unavailable in the
provider health, so later calls skip it at once; any other 400 (the request itself is wrong)
goes straight to the baseline. Trying one candidate
(reserve, call, validate, settle, cache) and the baseline answer are in app/ai/provider_call.py
(ProviderCalls, AiGateway's base).

Tenant input may be a megabyte of hostile text, and in `wfs dev` this loop also serves the API
and the workers: every CPU-bound step on the input (checks, the cut to what the task reads, the
cache key's hash, the prompt, the baseline, validating and sanitising the output) runs on the
CPU pool of app/steps/base.py, never on the event loop.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import structlog

from app.ai import attempts as attempt_records
from app.ai import metrics
from app.ai.budget import BudgetLedger
from app.ai.cache import AiCache, input_digest
from app.ai.contracts import (
    AiOutcome,
    AiRequest,
    Provider,
    TaskSpec,
)
from app.ai.health import ProviderHealth
from app.ai.input_hash import fingerprint
from app.ai.provider_call import ProviderCalls, TenantAi
from app.ai.repository import AiRepository
from app.ai.routing import candidates
from app.ai.tasks import (
    BaseTask,
    InvalidInput,
    PreparedTask,
    bound_input,
    check_input,
    find_task,
    truncation,
)
from app.ai_catalog import Catalog, default_catalog
from app.cpu import run_cpu
from app.db import SessionFactory
from app.models import AiUsage
from app.models.base import utcnow
from app.tiers import TIERS

log = structlog.get_logger(__name__)


class AiInputError(ValueError):
    """The task input is wrong: a permanent failure of the step, not a reason to fall back."""


def _checked(task: str, input: dict[str, Any]) -> dict[str, Any]:
    """The part of `input` the task reads, checked (InvalidInput otherwise). CPU pool."""
    bounded = bound_input(task, input)
    check_input(task, bounded)
    return bounded


def _cache_input(input: dict[str, Any]) -> dict[str, str]:
    """What the cache hashes for `input`: its digest, computed here on the CPU pool, so the
    cache's own hashing (on the event loop) only sees a few bytes. Inputs the cache treats as
    equal (key order, spacing) still share an entry. CPU pool."""
    return {"input_sha256": input_digest(input)}


def _prepared(task: TaskSpec, input: dict[str, Any]) -> tuple[TaskSpec, int]:
    """`task` with its prompt for `input` built (providers read it on the loop), and the input's
    size for the cost estimate. CPU pool."""
    prepared = PreparedTask(task, input) if isinstance(task, BaseTask) else task
    return prepared, len(str(input))


class AiGateway(ProviderCalls):
    def __init__(
        self,
        *,
        providers: dict[str, Provider],
        ledger: BudgetLedger,
        cache: AiCache,
        health: ProviderHealth,
        sessions: SessionFactory | None,
        timeout_seconds: float = 30.0,
        clock: Callable[[], datetime] = utcnow,
        input_hash_key: bytes | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        """`input_hash_key`: the deployment key of the recorded input fingerprints (None: none
        recorded). `catalog`: the model catalogue (None: the shipped one)."""
        self.catalog = catalog if catalog is not None else default_catalog()
        self.providers = providers
        self.input_hash_key = input_hash_key
        self.ledger, self.cache, self.health = ledger, cache, health
        self.sessions = sessions
        self.timeout = timeout_seconds
        self.clock = clock

    def task(self, name: str) -> TaskSpec:
        spec = find_task(name)  # a built-in task or a plugin's
        if spec is None:
            raise AiInputError(f"unknown AI task {name!r}")
        return spec

    async def run(self, request: AiRequest, tenant: TenantAi) -> AiOutcome:
        task = self.task(request.task)
        try:
            bounded = await run_cpu(_checked, request.task, request.input)
        except InvalidInput as exc:
            raise AiInputError(str(exc)) from exc
        if bounded is not request.input:
            log.info(
                "ai.input_truncated",
                tenant_id=request.tenant_id,
                execution_id=request.execution_id,
                task=request.task,
                fields=truncation(request.task, request.input),
            )
            request = dataclasses.replace(request, input=bounded)
        outcome, digest = await self._decide(request, task, tenant)
        metrics.record_outcome(outcome)
        await self._record(request, outcome, digest)
        return outcome

    async def should_enhance(
        self, tenant_id: str, task: str, tenant: TenantAi, min_tier: str
    ) -> tuple[bool, str]:
        """An enhancement point's decision: (enhance?, reason). Reasons: ENHANCE, TIER (below
        the point's minimum tier or no model for it), DISABLED, NO_PROVIDER, BUDGET (spent),
        PROVIDERS_DOWN (every candidate's breaker is open)."""
        if TIERS.index(tenant.tier) < TIERS.index(min_tier):
            return False, "TIER"
        if not tenant.enabled:
            return False, "DISABLED"
        configured = {p for p in self.providers if p != "baseline"}
        choices = candidates(
            tenant.tier,
            task,
            overrides=tenant.overrides,
            configured=configured,
            catalog=self.catalog,
        )
        if not choices:
            routed = candidates(
                tenant.tier,
                task,
                overrides=tenant.overrides,
                configured={"openai", "anthropic"},
                catalog=self.catalog,
            )
            return False, "NO_PROVIDER" if routed else "TIER"
        status = await self.ledger.status(tenant_id, tenant.budget_usd)
        if tenant.budget_usd >= 0 and status.spent_usd + status.reserved_usd >= tenant.budget_usd:
            return False, "BUDGET"
        if all(
            self.health.state(c.provider, c.model) == "OPEN"
            or self.health.unavailable(c.provider, c.model) is not None
            for c in choices
        ):
            return False, "PROVIDERS_DOWN"
        return True, "ENHANCE"

    async def _decide(
        self, request: AiRequest, task: TaskSpec, tenant: TenantAi
    ) -> tuple[AiOutcome, str | None]:
        """The outcome, and the input's digest when it was computed (to fingerprint)."""
        if not tenant.enabled:
            return await self._baseline(request, task, "DISABLED"), None
        status = await self.ledger.status(request.tenant_id, tenant.budget_usd)
        near = tenant.budget_usd > 0 and status.spent_usd + status.reserved_usd >= (
            tenant.budget_usd * Decimal(str(self.ledger.soft_threshold))
        )
        choices = candidates(
            tenant.tier,
            request.task,
            overrides=tenant.overrides,
            configured={p for p in self.providers if p != "baseline"},
            near_budget=near,
            catalog=self.catalog,
        )
        if not choices:
            reason = (
                "TIER"
                if not candidates(
                    tenant.tier,
                    request.task,
                    overrides=tenant.overrides,
                    configured={"openai", "anthropic"},
                    catalog=self.catalog,
                )
                else "NO_PROVIDER"
            )
            return await self._baseline(request, task, reason), None
        cache_input = await run_cpu(_cache_input, request.input)
        digest = cache_input["input_sha256"]
        for choice in choices:
            hit = await self.cache.get(request.tenant_id, request.task, choice.model, cache_input)
            if hit is not None:
                return AiOutcome(
                    task=request.task,
                    output=hit.output,
                    provider=choice.provider,
                    model=choice.model,
                    input_tokens=hit.input_tokens,
                    output_tokens=hit.output_tokens,
                    saved_usd=hit.cost_usd,
                    cached=True,
                    outcome="CACHED",
                ), digest
        attempts: list[dict[str, Any]] = []
        reason = "PROVIDER_ERROR"
        prepared, size = await run_cpu(_prepared, task, request.input)
        for choice in choices:
            refused = self.health.unavailable(choice.provider, choice.model)
            if refused is not None:  # the provider refused this model lately: the next one
                attempts.append(
                    attempt_records.record(
                        choice, "unavailable", f"marked unavailable after {refused}"
                    )
                )
                continue
            if not self.health.allow(choice.provider, choice.model):
                attempts.append(attempt_records.record(choice, "breaker_open", "breaker open"))
                reason = "BREAKER_OPEN" if reason != "INVALID_OUTPUT" else reason
                continue
            result = await self._call(
                request, prepared, tenant, choice, attempts, size, cache_input
            )
            if isinstance(result, AiOutcome):
                return result, digest
            if result == "BUDGET":
                return await self._baseline(request, task, "BUDGET", attempts), digest
            reason = result
            if result in ("INVALID_OUTPUT", "BAD_REQUEST"):
                break
        return await self._baseline(
            request, task, "PROVIDER_ERROR" if reason == "BAD_REQUEST" else reason, attempts
        ), digest

    async def _record(self, request: AiRequest, outcome: AiOutcome, digest: str | None) -> None:
        if self.sessions is None:
            return
        input_hash = (
            fingerprint(self.input_hash_key, request.tenant_id, digest)
            if digest is not None and self.input_hash_key is not None
            else None
        )
        async with self.sessions() as session:
            await AiRepository(session).add_usage(
                AiUsage(
                    tenant_id=uuid.UUID(request.tenant_id),
                    execution_id=uuid.UUID(request.execution_id) if request.execution_id else None,
                    step_id=request.step_id,
                    task=request.task,
                    provider=outcome.provider,
                    model=outcome.model,
                    input_tokens=outcome.input_tokens,
                    output_tokens=outcome.output_tokens,
                    cost_usd=outcome.cost_usd,
                    saved_usd=outcome.saved_usd,
                    latency_ms=outcome.latency_ms,
                    cached=outcome.cached,
                    fallback_reason=outcome.fallback_reason,
                    outcome=outcome.outcome,
                    input_hash=input_hash,
                    at=self.clock(),
                    attempts=attempt_records.stored(outcome.attempts) or None,
                )
            )
            await session.commit()
