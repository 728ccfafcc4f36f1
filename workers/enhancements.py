"""Enhancement points inside TemplateWorkflow: decide, call the AI task, apply, tally.

A point is *active* when it has `input` (what the AI task gets, rendered like step input) and
`apply` (`{step input field: AI output field}`; a dotted field such as `data.subject` sets a
nested value). For each active point the workflow asks the AI worker whether to enhance
(`ai.decide`: tier, tenant switch, budget, provider health); the answer is an activity result,
so a replay decides the same. An enhanced point runs `ai.<task>` and applies its output to the
step input; any failure leaves the plain input (the baseline). On a `for_each` step the decision
is taken once and the AI task runs per item.

An `ai.*` step is a point of its own: the activity decides and falls back inside, and its
output's `ai` record is what gets tallied.

Every point ends as one `STEP_ENHANCED` record: decision (AI or BASELINE), reason (ENHANCE, or
why not: TIER, DISABLED, NO_PROVIDER, BUDGET, PROVIDERS_DOWN), provider, model, cost, latency
and fallback (why an attempted call gave the baseline), plus item counts on a fan-out.

Workflow code: deterministic, no I/O (activities only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from app.executions.workflow_io import (
        DECIDE_ACTIVITY,
        DecideInput,
        Decision,
        ItemEnhancement,
        StepCall,
        StepPlan,
        active_point,
    )
    from app.tiers import DEFAULT_ENHANCEMENT_TIER

DECIDE_TIMEOUT = timedelta(seconds=30)
DECIDE_RETRY = RetryPolicy(maximum_attempts=3)
AI_RETRY = RetryPolicy(maximum_attempts=2)
AI_HEARTBEAT_TIMEOUT = timedelta(seconds=30)
# Reasons the AI gateway gives for not trying at all (a decision, not a failed attempt).
NOT_TRIED = frozenset({"TIER", "DISABLED", "NO_PROVIDER", "BUDGET", "PROVIDERS_DOWN"})


def active_points(step: StepPlan) -> list[dict[str, Any]]:
    return [p for p in step.enhancements if active_point(p)]


def apply(step_input: dict[str, Any], mapping: dict[str, str], out: dict[str, Any]) -> dict:
    """A copy of `step_input` with each mapped AI output field set (dotted paths nest);
    `step_input` itself when the output has none of them."""
    if not any(source in out for source in mapping.values()):
        return step_input
    result = dict(step_input)
    for target, source in mapping.items():
        if source not in out:
            continue
        *parents, last = target.split(".")
        node = result
        for name in parents:
            child = node.get(name)
            node[name] = dict(child) if isinstance(child, dict) else {}
            node = node[name]
        node[last] = out[source]
    return result


def error_text(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    return str(cause.message if isinstance(cause, ApplicationError) else cause)[:300]


def outcome_of(ai: dict[str, Any] | None) -> dict[str, Any]:
    """One AI call's `ai` record as a point outcome."""
    ai = ai or {}
    provider = ai.get("provider") or "baseline"
    fallback = ai.get("fallback_reason")
    tried = provider != "baseline" or fallback not in NOT_TRIED
    # A model that answered twice with unusable output is named (and was paid) but the task's
    # baseline answered: that is no AI result.
    enhanced = provider != "baseline" and not fallback
    return {
        "decision": "AI" if enhanced else "BASELINE",
        "reason": "ENHANCE" if tried else fallback,
        "provider": provider,
        "model": ai.get("model") or "baseline",
        "cost_usd": str(ai.get("cost_usd") or "0"),
        "latency_ms": ai.get("latency_ms"),
        "fallback": fallback if tried else None,
    }


def failed_outcome(reason: str, fallback: str | None, error: str | None = None) -> dict[str, Any]:
    """The baseline outcome of a point that was not tried (fallback None) or failed."""
    return {
        "decision": "BASELINE",
        "reason": reason,
        "provider": "baseline",
        "model": "baseline",
        "cost_usd": "0",
        "latency_ms": None,
        "fallback": fallback,
        **({"error": error} if error else {}),
    }


def tally(task: str, outcomes: list[dict[str, Any]], items: bool) -> dict[str, Any]:
    """The point's record: one outcome as it is; a fan-out's outcomes summed (AI if any item
    was enhanced; provider and model of the first enhanced item; the first fallback)."""
    if not items and len(outcomes) == 1:
        return {"task": task, **outcomes[0]}
    enhanced = [o for o in outcomes if o["decision"] == "AI"]
    first = (
        enhanced[0] if enhanced else (outcomes[0] if outcomes else failed_outcome("ENHANCE", None))
    )
    latencies = [o["latency_ms"] for o in outcomes if o.get("latency_ms") is not None]
    errors = [o["error"] for o in outcomes if o.get("error")]
    return {
        "task": task,
        "decision": "AI" if enhanced else "BASELINE",
        "reason": "ENHANCE" if enhanced else first["reason"],
        "provider": first["provider"],
        "model": first["model"],
        "cost_usd": str(sum((Decimal(o["cost_usd"]) for o in outcomes), Decimal(0))),
        "latency_ms": max(latencies) if latencies else None,
        "fallback": next((o["fallback"] for o in outcomes if o.get("fallback")), None),
        "items": len(outcomes),
        "enhanced_items": len(enhanced),
        **({"error": errors[0]} if errors else {}),
    }


def not_enhanced(decision: Decision | str) -> dict[str, Any] | None:
    """The baseline outcome of a point whose decision keeps it off AI (the decision could not
    be made: its error text; or it says no, and why); None when the point goes ahead."""
    if isinstance(decision, str):
        return failed_outcome("UNAVAILABLE", "AI_ERROR", decision)
    return None if decision.enhance else failed_outcome(decision.reason, None)


async def decide(tenant_id: str, ai_queue: str, point: dict[str, Any]) -> Decision | str:
    """The recorded decision, or the error text when the decision could not be made."""
    try:
        decision: Decision = await workflow.execute_activity(
            DECIDE_ACTIVITY,
            DecideInput(tenant_id, point["task"], point.get("min_tier", DEFAULT_ENHANCEMENT_TIER)),
            result_type=Decision,
            task_queue=ai_queue,
            start_to_close_timeout=DECIDE_TIMEOUT,
            retry_policy=DECIDE_RETRY,
        )
    except ActivityError as exc:
        if is_cancelled_exception(exc):
            raise
        return error_text(exc)
    return decision


async def call(
    call: StepCall, task: str, ai_queue: str, timeout_seconds: float
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Run `ai.<task>`: (its output, or None when it gave the baseline or failed; the outcome).
    A task's own baseline is never applied: the step's plain input is the point's baseline."""
    try:
        out: dict[str, Any] = await workflow.execute_activity(
            f"ai.{task}",
            call,
            task_queue=ai_queue,
            start_to_close_timeout=timedelta(seconds=timeout_seconds),
            heartbeat_timeout=AI_HEARTBEAT_TIMEOUT,  # AI activities beat every 2 s
            retry_policy=AI_RETRY,
        )
    except ActivityError as exc:
        if is_cancelled_exception(exc):
            raise
        return None, failed_outcome("ENHANCE", "AI_ERROR", error_text(exc))
    outcome = outcome_of(out.get("ai"))
    return (out if outcome["decision"] == "AI" else None), outcome


@dataclass
class ItemPoints:
    """A fan-out step's enhanced points and each item's outcomes (by point, then item)."""

    points: list[ItemEnhancement]
    ai_queue: str
    outcomes: list[dict[int, dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.outcomes = [{} for _ in self.points]

    async def enhance(
        self, ids: tuple[str, str], step: StepPlan, payload: dict[str, Any], index: int, at: int
    ) -> dict[str, Any]:
        """Item `index` (position `at` in this slice) with every enhanced point applied."""
        execution_id, tenant_id = ids
        for k, point in enumerate(self.points):
            point_input = point.inputs[at]
            if point_input is None:
                self.outcomes[k][index] = failed_outcome("ENHANCE", "INPUT_ERROR")
                continue
            out, outcome = await call(
                StepCall(execution_id, tenant_id, step.id, point_input, index),
                point.task,
                self.ai_queue,
                step.timeout_seconds,
            )
            self.outcomes[k][index] = outcome
            if out is not None:
                payload = apply(payload, point.apply, out)
        return payload

    def rejected(self, index: int, error: str) -> None:
        """Item `index` refused its enhanced input and runs on its plain one: its AI outcomes
        become baselines (what the calls cost stays)."""
        for by_item in self.outcomes:
            outcome = by_item.get(index)
            if outcome is not None and outcome["decision"] == "AI":
                by_item[index] = {
                    **outcome,
                    "decision": "BASELINE",
                    "fallback": "STEP_REJECTED",
                    "error": error[:300],
                }

    def ordered(self) -> list[list[dict[str, Any]]]:
        return [[by_item[i] for i in sorted(by_item)] for by_item in self.outcomes]
