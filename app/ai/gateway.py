"""The AI gateway: one call per task, never failing for want of AI.

For a request it: checks the input; decides the candidates (tier, tenant switch and
overrides, configured providers, cheaper models past the budget's soft threshold); serves a
per-tenant cache hit at no cost; skips providers whose circuit is open; reserves the estimated
cost in the tenant's monthly budget (refused: baseline with reason BUDGET); calls the provider,
validates the output (one retry on invalid output, then baseline with INVALID_OUTPUT); fails
over to the next candidate on provider errors; settles the actual cost; and records every
outcome (calls, hits and fallbacks) as an ai_usage row. The baseline is the task's
deterministic non-AI result.

Tenant input may be a megabyte of hostile text, and in `wfs dev` this loop also serves the API
and the workers: every CPU-bound step on the input (checks, the cut to what the task reads, the
cache key's hash, the prompt, the baseline, validating and sanitising the output) runs on the
CPU pool of app/steps/base.py, never on the event loop.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import structlog
from redis.exceptions import RedisError

from app.ai import metrics, pricing
from app.ai.budget import BudgetLedger, BudgetStatus, Reservation
from app.ai.cache import AiCache, input_digest
from app.ai.contracts import (
    AiOutcome,
    AiRequest,
    InvalidOutput,
    InvalidReply,
    ModelChoice,
    Provider,
    ProviderError,
    ProviderResult,
    TaskSpec,
)
from app.ai.health import ProviderHealth
from app.ai.repository import AiRepository
from app.ai.routing import candidates
from app.ai.tasks import (
    TASK_SPECS,
    BaseTask,
    InvalidInput,
    PreparedTask,
    bound_input,
    check_input,
    max_output_tokens,
    truncation,
)
from app.cpu import run_cpu
from app.db import SessionFactory
from app.models import AiUsage
from app.models.base import utcnow
from app.tiers import TIERS

log = structlog.get_logger(__name__)
# The event bus prefix (app/events/bus.py) + the tenant's AI channel.
AI_EVENTS_CHANNEL = "wfs:tenant:{tenant_id}:ai"


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


@dataclass(frozen=True)
class TenantAi:
    """What the gateway needs to know about the calling tenant."""

    tier: str
    enabled: bool
    budget_usd: Decimal
    overrides: dict[str, Any]


class AiGateway:
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
    ) -> None:
        self.providers = providers
        self.ledger, self.cache, self.health = ledger, cache, health
        self.sessions = sessions
        self.timeout = timeout_seconds
        self.clock = clock

    def task(self, name: str) -> TaskSpec:
        spec = TASK_SPECS.get(name)
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
        outcome = await self._decide(request, task, tenant)
        metrics.record_outcome(outcome)
        await self._record(request, outcome)
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
        choices = candidates(tenant.tier, task, overrides=tenant.overrides, configured=configured)
        if not choices:
            routed = candidates(
                tenant.tier, task, overrides=tenant.overrides, configured={"openai", "anthropic"}
            )
            return False, "NO_PROVIDER" if routed else "TIER"
        status = await self.ledger.status(tenant_id, tenant.budget_usd)
        if tenant.budget_usd >= 0 and status.spent_usd + status.reserved_usd >= tenant.budget_usd:
            return False, "BUDGET"
        if all(self.health.state(c.provider, c.model) == "OPEN" for c in choices):
            return False, "PROVIDERS_DOWN"
        return True, "ENHANCE"

    async def _decide(self, request: AiRequest, task: TaskSpec, tenant: TenantAi) -> AiOutcome:
        if not tenant.enabled:
            return await self._baseline(request, task, "DISABLED")
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
        )
        if not choices:
            reason = (
                "TIER"
                if not candidates(
                    tenant.tier,
                    request.task,
                    overrides=tenant.overrides,
                    configured={"openai", "anthropic"},
                )
                else "NO_PROVIDER"
            )
            return await self._baseline(request, task, reason)
        cache_input = await run_cpu(_cache_input, request.input)
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
                )
        attempts: list[dict[str, Any]] = []
        reason = "PROVIDER_ERROR"
        prepared, size = await run_cpu(_prepared, task, request.input)
        for choice in choices:
            if not self.health.allow(choice.provider, choice.model):
                attempts.append(
                    {"provider": choice.provider, "model": choice.model, "error": "breaker open"}
                )
                reason = "BREAKER_OPEN" if reason != "INVALID_OUTPUT" else reason
                continue
            result = await self._call(
                request, prepared, tenant, choice, attempts, size, cache_input
            )
            if isinstance(result, AiOutcome):
                return result
            if result == "BUDGET":
                return await self._baseline(request, task, "BUDGET", attempts)
            reason = result
            if result in ("INVALID_OUTPUT", "BAD_REQUEST"):
                break
        return await self._baseline(
            request, task, "PROVIDER_ERROR" if reason == "BAD_REQUEST" else reason, attempts
        )

    async def _call(
        self,
        request: AiRequest,
        task: TaskSpec,
        tenant: TenantAi,
        choice: ModelChoice,
        attempts: list[dict[str, Any]],
        size: int,
        cache_input: dict[str, str],
    ) -> AiOutcome | str:
        """One provider: the outcome, or why to move on (BUDGET, PROVIDER_ERROR, ...).

        `task` has its prompt built; `size` is the input's length for the cost estimate."""
        provider = self.providers[choice.provider]
        limit = max_output_tokens(task, request.input)
        estimate = pricing.estimate(choice.provider, choice.model, size, limit)
        tokens_in = tokens_out = latency = 0
        spent = Decimal(0)
        for attempt in (1, 2):  # a second try only after invalid output
            reservation = await self.ledger.reserve(request.tenant_id, estimate, tenant.budget_usd)
            if reservation is None:
                return "BUDGET"
            started = time.monotonic()
            paid: ProviderResult | InvalidReply
            try:
                paid = await provider.complete(
                    choice.model, task, request.input, timeout=self.timeout
                )
            except InvalidReply as exc:  # answered and paid, but not JSON: invalid output
                paid = exc
            except ProviderError as exc:
                await self.ledger.release(reservation)
                self.health.record(
                    choice.provider, choice.model, False, int((time.monotonic() - started) * 1000)
                )
                attempts.append(
                    {
                        "provider": choice.provider,
                        "model": choice.model,
                        "error": f"{exc.kind}: {exc}",
                    }
                )
                log.warning(
                    "ai.provider_failed",
                    provider=choice.provider,
                    model=choice.model,
                    kind=exc.kind,
                    error=str(exc),
                )
                return "PROVIDER_ERROR" if exc.retryable else "BAD_REQUEST"
            # The provider answered (it is healthy) and the call is paid, usable or not.
            self.health.record(choice.provider, choice.model, True, paid.latency_ms)
            cost = await self._settle(request, choice, reservation, paid)
            tokens_in += paid.input_tokens
            tokens_out += paid.output_tokens
            latency += paid.latency_ms
            spent += cost
            try:
                if isinstance(paid, InvalidReply):
                    raise InvalidOutput(str(paid))
                result = paid
                output = await run_cpu(task.validate, request.input, result.output)
            except InvalidOutput as exc:
                attempts.append(
                    {
                        "provider": choice.provider,
                        "model": choice.model,
                        "error": f"invalid output: {exc}",
                        "attempt": attempt,
                    }
                )
                continue
            await self.cache.set(
                request.tenant_id,
                request.task,
                choice.model,
                cache_input,
                output,
                cost,
                result.input_tokens,
                result.output_tokens,
            )
            return AiOutcome(
                task=request.task,
                output=output,
                provider=choice.provider,
                model=choice.model,
                input_tokens=tokens_in,
                output_tokens=tokens_out,
                cost_usd=spent,
                latency_ms=latency,
                attempts=attempts,
            )
        # Paid twice for unusable output (invalid, or not JSON at all): the baseline answers,
        # the cost is still recorded.
        outcome = await self._baseline(request, task, "INVALID_OUTPUT", attempts)
        outcome.provider, outcome.model = choice.provider, choice.model
        outcome.input_tokens, outcome.output_tokens = tokens_in, tokens_out
        outcome.cost_usd, outcome.latency_ms = spent, latency
        return outcome

    async def _settle(
        self,
        request: AiRequest,
        choice: ModelChoice,
        reservation: Reservation,
        usage: ProviderResult | InvalidReply,
    ) -> Decimal:
        """Charge what a call cost against its reservation; returns the cost."""
        cost = pricing.cost(choice.provider, choice.model, usage.input_tokens, usage.output_tokens)
        budget = await self.ledger.settle(reservation, cost)
        if budget.crossed_soft_threshold:
            await self._soft_threshold_event(request.tenant_id, budget)
        return cost

    async def _soft_threshold_event(self, tenant_id: str, budget: BudgetStatus) -> None:
        """Once a month per tenant: a live event on the tenant's `ai` channel (and a log line;
        the ledger counts the metric) so frontends can warn before AI calls stop."""
        event = {
            "type": "AI_BUDGET_SOFT_THRESHOLD",
            "tenantId": tenant_id,
            "month": budget.month,
            "limitUsd": str(budget.limit_usd),
            "spentUsd": str(budget.spent_usd),
            "at": self.clock().isoformat(),
        }
        log.warning(
            "ai.budget.soft_threshold",
            tenant_id=tenant_id,
            spent_usd=event["spentUsd"],
            limit_usd=event["limitUsd"],
        )
        try:
            await self.ledger.redis.publish(
                AI_EVENTS_CHANNEL.format(tenant_id=tenant_id), json.dumps(event)
            )
        except (RedisError, OSError) as exc:
            log.warning("ai.budget.event_not_published", error=str(exc))

    @staticmethod
    async def _baseline(
        request: AiRequest,
        task: TaskSpec,
        reason: str,
        attempts: list[dict[str, Any]] | None = None,
    ) -> AiOutcome:
        return AiOutcome(
            task=request.task,
            output=await run_cpu(task.baseline, request.input),
            provider="baseline",
            model="baseline",
            fallback_reason=reason,
            outcome="FALLBACK",
            attempts=attempts or [],
        )

    async def _record(self, request: AiRequest, outcome: AiOutcome) -> None:
        if self.sessions is None:
            return
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
                    at=self.clock(),
                )
            )
            await session.commit()
