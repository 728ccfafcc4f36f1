"""Enhancing: the enhancement points of TemplateWorkflow's steps (workers/enhancements.py
decides, calls and applies; this records every decision as a STEP_ENHANCED event): a single
step's points, a fan-out step's points decided once for all its items, an `ai.*` step's own
record, and a refusal of AI output that sent a step back to its plain input.

Workflow code: deterministic, no I/O (activities only).
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from app.executions.workflow_io import ItemEnhancement, RunInput, StepCall, StepPlan
    from app.templates.expressions import ExpressionError, Programs

from workers.enhancements import (
    active_points,
    apply,
    call,
    decide,
    failed_outcome,
    not_enhanced,
    outcome_of,
    tally,
)
from workers.workflows.state import RunState
from workers.workflows.step_calls import run_refusable


class Enhancing(RunState):
    """TemplateWorkflow's enhancement points (see the module docstring)."""

    async def _enhance(
        self, inp: RunInput, step: StepPlan, context: dict[str, Any], step_input: dict[str, Any]
    ) -> tuple[dict[str, Any], list[str]]:
        """Each active enhancement point of a single step: decide (recorded in the history, so
        a replay decides the same), run the AI task, apply its output to the step input; on any
        failure the step keeps its plain input. Every decision is a STEP_ENHANCED event.
        Returns the step input and the tasks whose output it carries."""
        active = active_points(step)
        applied: list[str] = []
        if not active or not workflow.patched("enhancement-points"):
            return step_input, applied
        for i, point in enumerate(active):
            outcome = not_enhanced(await decide(inp.tenant_id, inp.ai_task_queue, point))
            if outcome is None:
                try:
                    payload = self._eval(point["input"], context)
                except ExpressionError as exc:
                    outcome = failed_outcome("ENHANCE", "INPUT_ERROR", str(exc)[:300])
                else:
                    call_ = StepCall(inp.execution_id, inp.tenant_id, step.id, payload)
                    out, outcome = await call(
                        call_, point["task"], inp.ai_task_queue, step.timeout_seconds
                    )
                    changed = apply(step_input, point["apply"], out) if out is not None else None
                    if changed is not None and changed != step_input:
                        step_input = changed
                        applied.append(point["task"])
            await self._record_point(step, str(i), {"task": point["task"], **outcome})
        return step_input, applied

    async def _run_enhanced(
        self,
        inp: RunInput,
        step: StepPlan,
        plain: dict[str, Any],
        enhanced: dict[str, Any],
        applied: list[str],
    ) -> Any:
        """Run the step (`run_refusable`); a refusal of the AI output is recorded, naming the
        tasks whose output was dropped."""

        async def refused(message: str) -> None:
            rejected = failed_outcome("ENHANCE", "STEP_REJECTED", message[:300])
            record = {"task": ", ".join(applied), "tasks": applied, **rejected}
            await self._record_point(step, "rejected", record)

        ids = (inp.execution_id, inp.tenant_id)
        return await run_refusable(ids, step, enhanced, plain, None, refused)

    async def _record_point(self, step: StepPlan, key: str, record: dict[str, Any]) -> None:
        items = (
            f" on {record['enhanced_items']} of {record['items']} items"
            if "items" in record
            else ""
        )
        error = f": {record['error']}" if record.get("error") else ""
        decided = f"{record['task']}: {record['decision']} ({record.get('reason')})"
        await self._record(
            f"step:{step.id}:enhancement:{key}",
            "STEP_ENHANCED",
            step_id=step.id,
            message=f"{decided}{items}{error}",
            payload={"enhancement": record},
        )

    async def _record_ai_step(self, step: StepPlan, output: Any) -> None:
        """An `ai.*` step is its own enhancement point: tally what its activity did."""
        if not step.activity.startswith("ai.") or not workflow.patched("ai-step-records"):
            return
        fan_out = step.for_each is not None and isinstance(output, list)
        outputs = output if fan_out else [output]
        outcomes = [outcome_of(o.get("ai") if isinstance(o, dict) else None) for o in outputs]
        await self._record_point(
            step, "ai", tally(step.activity.removeprefix("ai."), outcomes, fan_out)
        )

    async def _decide_items(
        self, inp: RunInput, step: StepPlan, context: dict[str, Any], items: list[Any]
    ) -> list[tuple[dict[str, Any], dict[str, Any] | ItemEnhancement]]:
        """A fan-out step's points, decided once: (point, the baseline outcome of a point not
        enhanced | the point's per-item AI inputs)."""
        active = active_points(step)
        if not active or not items or not workflow.patched("item-enhancements"):
            return []
        plans: list[tuple[dict[str, Any], dict[str, Any] | ItemEnhancement]] = []
        for point in active:
            outcome = not_enhanced(await decide(inp.tenant_id, inp.ai_task_queue, point))
            if outcome is not None:
                plans.append((point, outcome))
            else:
                inputs: list[dict[str, Any] | None] = []
                programs: Programs = {}
                for i, item in enumerate(items):
                    try:
                        scope = {**context, "item": item, "index": i}
                        inputs.append(self._eval(point["input"], scope, programs=programs))
                    except ExpressionError:
                        inputs.append(None)
                plans.append((point, ItemEnhancement(point["task"], point["apply"], inputs)))
        return plans

    async def _record_plans(
        self,
        step: StepPlan,
        plans: list[tuple[dict[str, Any], dict[str, Any] | ItemEnhancement]],
        outcomes: list[list[dict[str, Any]]] | None,
        items: int,
    ) -> None:
        """A fan-out step's STEP_ENHANCED records; with `outcomes` None (unknown), only the
        points decided against AI."""
        by_point = iter(outcomes or [])
        for i, (point, plan) in enumerate(plans):
            if isinstance(plan, ItemEnhancement):
                if outcomes is None:
                    continue
                record = tally(point["task"], next(by_point), True)
            else:
                record = {"task": point["task"], **plan, "items": items, "enhanced_items": 0}
            await self._record_point(step, str(i), record)
