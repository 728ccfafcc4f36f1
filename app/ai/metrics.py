"""Prometheus metrics of the AI layer (registered in the default registry, served with the
service's other metrics). Labels stay low-cardinality: no tenant ids."""

from __future__ import annotations

from decimal import Decimal

from prometheus_client import Counter, Gauge, Histogram

from app.ai.contracts import AiOutcome

AI_CALL_LATENCY = Histogram(
    "wfs_ai_call_latency_seconds",
    "Latency of AI provider calls",
    ["provider", "model", "task"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
)
AI_TOKENS = Counter(
    "wfs_ai_tokens_total", "Tokens used by AI calls", ["provider", "model", "direction"]
)
AI_COST = Counter("wfs_ai_cost_usd_total", "Cost of AI calls in USD", ["provider", "model"])
AI_CACHE_HITS = Counter("wfs_ai_cache_hits_total", "AI cache hits", ["task"])
AI_CACHE_MISSES = Counter("wfs_ai_cache_misses_total", "AI cache misses", ["task"])
AI_FALLBACKS = Counter(
    "wfs_ai_fallbacks_total", "AI calls answered by the baseline, by reason", ["reason"]
)
AI_BREAKER_STATE = Gauge(
    "wfs_ai_breaker_state",
    "Circuit breaker state per provider model in this process: 0 closed, 1 half-open, 2 open",
    ["provider", "model"],
)
AI_MODEL_UNAVAILABLE = Gauge(
    "wfs_ai_model_unavailable",
    "1 while a model is unusable: its provider answered 404 (unknown or retired: "
    "model_not_found), 403 (model_forbidden) or a 400 about the output format or an "
    "unsupported parameter (unsupported_output) in this process, or does not list it "
    "(not_listed, the model check)",
    ["provider", "model", "reason"],
)
AI_MODEL_FAILOVERS = Counter(
    "wfs_ai_model_failovers_total",
    "Provider calls that failed over to the next candidate, by model and error kind",
    ["provider", "model", "kind"],
)
AI_BUDGET_SOFT_THRESHOLD = Counter(
    "wfs_ai_budget_soft_threshold_total",
    "Tenants whose monthly AI spend crossed the soft threshold (once per tenant per month)",
)

BREAKER_STATE_VALUES = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2}


def observe_call(
    provider: str,
    model: str,
    task: str,
    *,
    latency_ms: int,
    input_tokens: int,
    output_tokens: int,
    cost_usd: Decimal,
) -> None:
    """Record one completed provider call: latency, tokens in each direction and cost."""
    AI_CALL_LATENCY.labels(provider, model, task).observe(latency_ms / 1000)
    AI_TOKENS.labels(provider, model, "input").inc(input_tokens)
    AI_TOKENS.labels(provider, model, "output").inc(output_tokens)
    AI_COST.labels(provider, model).inc(float(cost_usd))


def record_outcome(outcome: AiOutcome) -> None:
    """Record what the gateway answered: fallbacks by reason, and the paid provider work behind
    it (also for INVALID_OUTPUT fallbacks, which were paid for). Cache hits and misses are
    counted by AiCache.get."""
    if outcome.fallback_reason:
        AI_FALLBACKS.labels(outcome.fallback_reason).inc()
    if outcome.cached or outcome.provider == "baseline":
        return
    observe_call(
        outcome.provider,
        outcome.model,
        outcome.task,
        latency_ms=outcome.latency_ms,
        input_tokens=outcome.input_tokens,
        output_tokens=outcome.output_tokens,
        cost_usd=outcome.cost_usd,
    )


def set_breaker_state(provider: str, model: str, state: str) -> None:
    AI_BREAKER_STATE.labels(provider, model).set(BREAKER_STATE_VALUES[state])


def set_model_unavailable(provider: str, model: str, reason: str, unavailable: bool) -> None:
    AI_MODEL_UNAVAILABLE.labels(provider, model, reason).set(1 if unavailable else 0)


def count_failover(provider: str, model: str, kind: str) -> None:
    AI_MODEL_FAILOVERS.labels(provider, model, kind).inc()
