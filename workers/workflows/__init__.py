"""The Temporal workflows: TemplateWorkflow runs a template version's steps as a dependency
graph (template.py); ForEachBatchWorkflow runs one slice of a large fan-out as a child workflow
(batch.py), so a 10,000-item step stays well inside Temporal's history limits.
WebhookDeliveryWorkflow (webhook.py) delivers one outbound webhook with retries.

TemplateWorkflow is built from parts, each a base class: RunState (state.py: the execution's
state, rendering expressions within its budget, recording events), Enhancing (enhancing.py:
enhancement points) and FanOut (fan_out.py: `for_each` steps). step_calls.py runs step
activities for both workflows; patches.py holds the patch ids that keep old histories replaying.

Deterministic and free of I/O: expressions are rendered with the sandboxed Jinja2 (pure), waits
are Temporal timers and signals, and every transition is written by the
`execution.record_event` activity (commit to PostgreSQL, then publish to Redis). Event keys are
derived from step ids, so a retried recording writes once.

The worker's sandbox re-imports these modules for every run (only `app` and a few libraries are
passed through): they import nothing heavy, and nothing with side effects.
"""

from workers.workflows.batch import BATCH_OUTPUT_BYTES, BATCH_RESULT_BYTES, ForEachBatchWorkflow
from workers.workflows.fan_out import CHILD_CONCURRENCY
from workers.workflows.patches import (
    EXPRESSION_POOL_PATCH,
    FAN_OUT_OUTPUT_PATCH,
    LIMITS_PATCH,
    REJECTED_PATCH,
)
from workers.workflows.state import RECORD_RETRY, RECORD_TIMEOUT
from workers.workflows.step_calls import (
    OutputTally,
    StepFailed,
    run_activity,
    run_items,
    run_refusable,
    step_output_tally,
)
from workers.workflows.template import (
    COMPENSATE_RETRY,
    EXECUTION_EXPRESSION_BUDGETS,
    MAX_KEPT_OUTPUT,
    TemplateWorkflow,
)
from workers.workflows.webhook import WebhookDeliveryWorkflow

__all__ = [
    "BATCH_OUTPUT_BYTES",
    "BATCH_RESULT_BYTES",
    "CHILD_CONCURRENCY",
    "COMPENSATE_RETRY",
    "EXECUTION_EXPRESSION_BUDGETS",
    "EXPRESSION_POOL_PATCH",
    "FAN_OUT_OUTPUT_PATCH",
    "LIMITS_PATCH",
    "MAX_KEPT_OUTPUT",
    "RECORD_RETRY",
    "RECORD_TIMEOUT",
    "REJECTED_PATCH",
    "ForEachBatchWorkflow",
    "OutputTally",
    "StepFailed",
    "TemplateWorkflow",
    "WebhookDeliveryWorkflow",
    "run_activity",
    "run_items",
    "run_refusable",
    "step_output_tally",
]
