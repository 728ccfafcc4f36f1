"""FanOut: the `for_each` steps of TemplateWorkflow. The activity runs once per item (`item`,
`index` in scope) with bounded concurrency: here when the items are at most
`for_each_batch_size`, else in slices of that many, each a ForEachBatchWorkflow child. The item
count, each input's size and the outputs together are held to the execution's limits.

Workflow code: deterministic, no I/O (activities only).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError, ChildWorkflowError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from app.executions.workflow_io import (
        BATCH_WORKFLOW_NAME,
        BatchInput,
        ItemEnhancement,
        RunInput,
        StepPlan,
    )
    from app.templates.expressions import Programs, wrap

from workers.enhancements import ItemPoints
from workers.workflows.enhancing import Enhancing
from workers.workflows.patches import FAN_OUT_OUTPUT_PATCH, LIMITS_PATCH
from workers.workflows.step_calls import (
    OutputTally,
    StepFailed,
    _all_or_cancel,
    run_items,
    step_output_tally,
)

CHILD_CONCURRENCY = 4


class FanOut(Enhancing):
    """TemplateWorkflow's `for_each` steps (see the module docstring)."""

    async def _fan_out(self, inp: RunInput, step: StepPlan, context: dict[str, Any]) -> list[Any]:
        items = self._render(step, wrap(step.for_each or ""), context)
        if not isinstance(items, list):
            raise StepFailed(
                step.id, f"step {step.id}: for_each gave {type(items).__name__}, not a list"
            )
        most = inp.limits.max_for_each_items
        if len(items) > most and workflow.patched(LIMITS_PATCH):
            raise StepFailed(
                step.id, f"step {step.id}: for_each gave {len(items)} items; the limit is {most}"
            )
        programs: Programs = {}  # each string compiles once for all the items
        inputs = [
            self._render(step, step.input, {**context, "item": item, "index": i}, programs)
            for i, item in enumerate(items)
        ]
        sizes = [self._check_input(inp, step, payload, i) for i, payload in enumerate(inputs)]
        plans = await self._decide_items(inp, step, context, items)
        enhanced = [plan for _, plan in plans if isinstance(plan, ItemEnhancement)]
        points = ItemPoints(enhanced, inp.ai_task_queue) if enhanced else None
        ids = (inp.execution_id, inp.tenant_id)
        size = max(1, inp.for_each_batch_size)
        inline = len(inputs) <= size
        limit = inp.limits.max_step_output_bytes
        tally = step_output_tally(step, limit) if workflow.patched(FAN_OUT_OUTPUT_PATCH) else None
        try:
            if inline:
                outputs = await run_items(ids, step, inputs, 0, points, tally)
                outcomes = points.ordered() if points else []
            else:
                self._check_batches(inp, step, sizes)
                outputs, outcomes = await self._fan_out_children(inp, step, inputs, enhanced, tally)
        except StepFailed:
            # The points are recorded as far as known: their decisions, and the AI outcomes of
            # the items run here before the failure (a child's are lost with its failure).
            if plans and workflow.patched("fan-out-failure-records"):
                known = points.ordered() if points is not None and inline else None
                await self._record_plans(step, plans, known, len(items))
            raise
        await self._record_plans(step, plans, outcomes, len(items))
        return outputs

    @staticmethod
    def _check_batches(inp: RunInput, step: StepPlan, sizes: list[int]) -> None:
        """Each slice of a fan-out is one child workflow's input: it must fit in a payload."""
        size, limit = max(1, inp.for_each_batch_size), inp.limits.max_step_input_bytes
        for k in range(0, len(sizes), size):
            if sum(sizes[k : k + size]) > limit and workflow.patched(LIMITS_PATCH):
                raise StepFailed(
                    step.id,
                    f"step {step.id}: items {k} to {min(k + size, len(sizes)) - 1} together are"
                    f" more than {limit} bytes as JSON (the limit for one batch of"
                    f" {size}); make the items smaller",
                )

    async def _fan_out_children(
        self,
        inp: RunInput,
        step: StepPlan,
        inputs: list[Any],
        enhanced: list[ItemEnhancement],
        tally: OutputTally | None = None,
    ) -> tuple[list[Any], list[list[dict[str, Any]]]]:
        """Slices of `for_each_batch_size` items as child workflows, a few at a time:
        (outputs in item order, each enhanced point's outcomes in item order). With `tally`,
        each slice measures its own outputs (within the step's limit and a payload's), and
        here each slice's outputs are added as it finishes."""
        size = max(1, inp.for_each_batch_size)
        gate = asyncio.Semaphore(CHILD_CONCURRENCY)
        info = workflow.info()

        progress = workflow.patched("fan-out-progress")
        finished = [0]

        def batch(k: int) -> Callable[[], Awaitable[Any]]:
            async def run() -> Any:
                async with gate:
                    sliced = [
                        ItemEnhancement(e.task, e.apply, e.inputs[k : k + size]) for e in enhanced
                    ]
                    result = await workflow.execute_child_workflow(
                        BATCH_WORKFLOW_NAME,
                        BatchInput(
                            inp.execution_id,
                            inp.tenant_id,
                            step,
                            inputs[k : k + size],
                            k,
                            enhancements=sliced,
                            ai_task_queue=inp.ai_task_queue,
                            max_output_bytes=tally.limit if tally is not None else 0,
                        ),
                        id=f"{info.workflow_id}-{step.id}-{k // size}",
                        task_queue=info.task_queue,
                    )
                if tally is not None:
                    chunk = result["outputs"] if isinstance(result, dict) else result
                    for j, output in enumerate(chunk):
                        tally.add(output, k + j)
                if progress:  # long fan-outs show progress: one event per finished slice
                    finished[0] += len(inputs[k : k + size])
                    self._partial[step.id] = finished[0] / len(inputs)
                    await self._record(
                        f"step:{step.id}:items:{k // size}",
                        "STEP_PROGRESS",
                        step_id=step.id,
                        message=f"{finished[0]} of {len(inputs)} items",
                        payload={"items_done": finished[0], "items": len(inputs)},
                    )
                return result

            return run

        try:
            chunks = await _all_or_cancel([batch(k) for k in range(0, len(inputs), size)])
        except ChildWorkflowError as exc:
            if is_cancelled_exception(exc):
                raise
            cause = exc.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(exc)
            raise StepFailed(step.id, message) from None
        outputs: list[Any] = []
        outcomes: list[list[dict[str, Any]]] = [[] for _ in enhanced]
        for chunk in chunks:
            if isinstance(chunk, dict):  # a slice with enhanced points
                outputs.extend(chunk["outputs"])
                for k, point_outcomes in enumerate(chunk["outcomes"]):
                    outcomes[k].extend(point_outcomes)
            else:
                outputs.extend(chunk)
        return outputs, outcomes
