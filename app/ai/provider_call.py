"""One candidate of an AI gateway request, tried, and the baseline answer (ProviderCalls, the
base class of AiGateway in app/ai/gateway.py): reserve the estimated cost in the tenant's monthly
budget, call the provider, validate the output (one retry on invalid output), settle the actual
cost (a live event on the tenant's AI channel when it crosses the soft threshold) and cache the
output. CPU-bound steps (validating, the baseline) run on the CPU pool of app/steps/base.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import structlog

from app.ai import attempts as attempt_records
from app.ai import pricing
from app.ai.budget import BudgetLedger, BudgetStatus, Reservation
from app.ai.cache import AiCache
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
from app.ai.metrics import count_failover
from app.ai.tasks import max_output_tokens
from app.ai_catalog import Catalog
from app.cpu import run_cpu
from app.events import channels
from app.events.bus import publish_on

log = structlog.get_logger(__name__)
# The event bus prefix (app/events/bus.py) + the tenant's AI channel.


@dataclass(frozen=True)
class TenantAi:
    """What the gateway needs to know about the calling tenant."""

    tier: str
    enabled: bool
    budget_usd: Decimal
    overrides: dict[str, Any]


class ProviderCalls:
    """Trying one candidate with its budget, cache and health bookkeeping; the attributes
    below are set by AiGateway.__init__."""

    providers: dict[str, Provider]
    ledger: BudgetLedger
    cache: AiCache
    health: ProviderHealth
    timeout: float
    clock: Callable[[], datetime]
    catalog: Catalog

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
        estimate = pricing.estimate(
            choice.provider, choice.model, size, limit, catalog=self.catalog
        )
        tokens_in = tokens_out = latency = 0
        spent = Decimal(0)
        for _try in (1, 2):  # a second try only after invalid output
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
                self._provider_failed(choice, exc, int((time.monotonic() - started) * 1000))
                attempts.append(attempt_records.record(choice, exc.kind, str(exc)))
                return "PROVIDER_ERROR" if exc.retryable else "BAD_REQUEST"
            # The provider answered (it is healthy) and the call is paid, usable or not.
            self.health.record(choice.provider, choice.model, True, paid.latency_ms)
            cost = await self._settle(request, choice, reservation, paid)
            tokens_in += paid.input_tokens
            tokens_out += paid.output_tokens
            latency += paid.latency_ms
            spent += cost
            if isinstance(paid, InvalidReply):
                attempts.append(attempt_records.record(choice, paid.kind, str(paid)))
                continue
            result = paid
            try:
                output = await run_cpu(task.validate, request.input, result.output)
            except InvalidOutput as exc:
                attempts.append(attempt_records.record(choice, "invalid_output", str(exc)))
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

    def _provider_failed(self, choice: ModelChoice, exc: ProviderError, latency_ms: int) -> None:
        """Health bookkeeping of a failed call: a refused model is marked unavailable (a fact
        about the model, not an outage: it does not trip the breaker), anything else counts
        against the model's breaker."""
        if exc.model_level:
            self.health.mark_unavailable(choice.provider, choice.model, exc.kind)
        else:
            self.health.record(choice.provider, choice.model, False, latency_ms)
        if exc.retryable:
            count_failover(choice.provider, choice.model, exc.kind)
        log.warning(
            "ai.provider_failed",
            provider=choice.provider,
            model=choice.model,
            kind=exc.kind,
            error=attempt_records.sanitize(str(exc)),
        )

    async def _settle(
        self,
        request: AiRequest,
        choice: ModelChoice,
        reservation: Reservation,
        usage: ProviderResult | InvalidReply,
    ) -> Decimal:
        """Charge what a call cost against its reservation; returns the cost."""
        cost = pricing.cost(
            choice.provider,
            choice.model,
            usage.input_tokens,
            usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            catalog=self.catalog,
        )
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
        await publish_on(self.ledger.redis, channels.tenant(tenant_id, channels.AI), event)

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
