"""Patch ids of the workflow code. Executions started before a release replay its workflow
code: changed decisions sit behind `workflow.patched(...)`, and an id never changes once
released (recorded histories carry it). Besides the ones here, a few ids are written where they
are decided: "enhancement-points", "item-enhancements", "ai-step-records", "fan-out-progress"
and "fan-out-failure-records".

The bounded expression engine (issue 9) is only partly patched: the execution-wide expression
pool (EXPRESSION_POOL_PATCH), the fan-out and input-size limits (LIMITS_PATCH) and the limit on
a fan-out's outputs together (FAN_OUT_OUTPUT_PATCH) are, so an old history is not cut short by
them. Each rendering's own budget, the refused filters and statements (macros, `random`,
`batch`, `str.format`...) and a failed rendering failing its step (instead of the workflow
task) are not: an execution started before that release whose expressions used what is now
refused fails that step on replay. Operators drain such executions (let them finish, or cancel
them) before upgrading the workers.
"""

# Patch: for_each item count and step input size limits (RunInput.limits).
LIMITS_PATCH = "run-limits"
# Patch: the execution-wide expression pool (EXECUTION_EXPRESSION_BUDGETS). Executions started
# before it render each value within its own budget only, as they did, so their histories replay.
EXPRESSION_POOL_PATCH = "expression-pool"
# Patch: a fan-out's item outputs together are measured as they arrive, inline and in each
# child slice, against RunLimits.max_step_output_bytes (they become one step output, which
# goes into events and later steps' inputs); a slice's result stays under Temporal's payload
# limit. Before it, a slice of 200 outputs of 100 KB failed its completion (20 MB over 2 MB)
# forever, and the execution stayed RUNNING.
FAN_OUT_OUTPUT_PATCH = "fan-out-output-limit"
# Patch: a step that refuses its AI-enhanced input runs again on its plain input.
REJECTED_PATCH = "baseline-on-rejected-input"
# Patch: transitions are recorded by a local activity (run by this worker within the workflow
# task, its result a marker in the history) instead of an activity scheduled through the
# server: a 5-step run records 12 events, and each scheduled activity cost a round trip
# through Temporal's matching service and another workflow task.
LOCAL_RECORD_PATCH = "local-records"
