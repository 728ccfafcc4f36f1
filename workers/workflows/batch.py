"""ForEachBatchWorkflow runs one slice of a large fan-out as a child workflow of
TemplateWorkflow, so a 10,000-item step stays well inside Temporal's history limits.

Workflow code: deterministic, no I/O (activities only).
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from app.executions.workflow_io import BATCH_WORKFLOW_NAME, BatchInput
    from app.templates.expressions import json_size

from workers.enhancements import ItemPoints
from workers.workflows.patches import FAN_OUT_OUTPUT_PATCH
from workers.workflows.step_calls import OutputTally, StepFailed, run_items, step_output_tally

# A child slice returns its outputs in one payload, which Temporal refuses past 2 MiB
# (2,097,152 bytes; a refused completion is retried forever): the outputs stop at
# BATCH_OUTPUT_BYTES whatever the step's limit, the whole result (AI outcomes too) at
# BATCH_RESULT_BYTES.
BATCH_OUTPUT_BYTES = 1_500_000
BATCH_RESULT_BYTES = 2_000_000


@workflow.defn(name=BATCH_WORKFLOW_NAME)
class ForEachBatchWorkflow:
    @workflow.run
    async def run(self, inp: BatchInput) -> list[Any] | dict[str, Any]:
        points = ItemPoints(inp.enhancements, inp.ai_task_queue) if inp.enhancements else None
        tally = None
        if inp.max_output_bytes and workflow.patched(FAN_OUT_OUTPUT_PATCH):
            tally = self._tally(inp)
        try:
            outputs = await run_items(
                (inp.execution_id, inp.tenant_id),
                inp.step,
                inp.inputs,
                inp.first_index,
                points,
                tally,
            )
        except StepFailed as failed:
            raise ApplicationError(failed.message, type="StepFailed", non_retryable=True) from None
        result = outputs if points is None else {"outputs": outputs, "outcomes": points.ordered()}
        # Outputs alone were measured as they came (at most BATCH_OUTPUT_BYTES): only with
        # AI outcomes beside them can the whole result still pass the payload limit.
        if (
            tally is not None
            and points is not None
            and json_size(result, BATCH_RESULT_BYTES) > BATCH_RESULT_BYTES
        ):
            # Outputs within their bound and AI outcomes together: failing here is clear,
            # a refused completion would be retried forever.
            message = (
                f"step {inp.step.id}: items {inp.first_index} to"
                f" {inp.first_index + len(inp.inputs) - 1} return more than {BATCH_RESULT_BYTES}"
                " bytes as JSON together (the most one batch may return); make their outputs"
                " smaller"
            )
            raise ApplicationError(message, type="StepFailed", non_retryable=True)
        return result

    @staticmethod
    def _tally(inp: BatchInput) -> OutputTally:
        """The step's limit, or a payload's when that is smaller."""
        if inp.max_output_bytes <= BATCH_OUTPUT_BYTES:
            return step_output_tally(inp.step, inp.max_output_bytes)
        last = inp.first_index + len(inp.inputs) - 1
        return OutputTally(
            inp.step,
            BATCH_OUTPUT_BYTES,
            f"the outputs of items {inp.first_index} to {last} together are more than"
            f" {BATCH_OUTPUT_BYTES} bytes as JSON, the most one batch of items may return;"
            " make them smaller",
        )
