"""Fan-out: how a `for_each` step scales, and that its history stays bounded (service only:
the batching into child workflows is the service's own design, raw Temporal has no equivalent).

With `--fan-out-ai` (the stack then runs with `--fake-llm`) the step has a `summarize`
enhancement point applied per item, and the table adds the items AI improved and the cost.

Publishes a template with one fan-out step, starts it with each item count, waits, and reports
the child workflows, the events in the parent's history, the largest child's history and the
wall time. Temporal's limits are 51,200 events / 50 MB per history; the batch size
(FOR_EACH_BATCH_SIZE, default 200) keeps the parent at a few events per child.
"""

from __future__ import annotations

import asyncio
import base64
import time
from argparse import Namespace
from typing import Any

from bench.harness import Bench

SPEC: dict[str, Any] = {
    "title": "Fan-out benchmark",
    "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}},
    "steps": [
        {
            "id": "each",
            "activity": "data.transform",
            "for_each": "range(params.n) | list",
            "for_each_concurrency": 50,
            "input": {"data": {"i": "{{ item }}"}, "ops": []},
        },
    ],
    "output": {"count": "{{ steps.each | length }}"},
}
AI_POINT = {
    "task": "summarize",
    "min_tier": "pro",
    "fallback": "no note",
    "input": {"text": "Item {{ item }} of the fan-out benchmark. It is number {{ index }}."},
    "apply": {"data.note": "summary"},
}
STATUS = (
    "query($id: ID!) { execution(id: $id) { status error aiCostUsd "
    "steps { enhancements { enhancedItems } } } }"
)


def spec(name: str, ai: bool) -> dict[str, Any]:
    """With `ai`, the step has an enhancement point: decided once, one AI call per item."""
    if not ai:
        return {**SPEC, "name": name}
    (step,) = SPEC["steps"]
    return {**SPEC, "name": name, "steps": [{**step, "enhancements": [AI_POINT]}]}


async def run(bench: Bench, args: Namespace) -> dict[str, Any]:
    api = bench.apis["demo-enterprise"]
    name = f"bench-fan-out-{bench.run_id}"
    await api.publish(spec(name, args.fan_out_ai))
    rows = []
    for n in args.fan_out:
        t0 = time.monotonic()
        execution_id = await api.start(name, {"n": n})
        while (execution := (await api.gql(STATUS, {"id": execution_id}))["execution"])[
            "status"
        ] in ("PENDING", "RUNNING"):
            await asyncio.sleep(0.5)
        seconds = time.monotonic() - t0
        if execution["status"] != "COMPLETED":
            raise RuntimeError(f"fan-out of {n}: {execution['status']}: {execution['error']}")
        # The workflow of an execution is `exec-<execution pk>` (app/executions/service.py).
        pk = base64.urlsafe_b64decode(execution_id + "==").decode().split(":", 1)[1]
        parent = await bench.temporal.get_workflow_handle(f"exec-{pk}").fetch_history()
        children = [
            w async for w in bench.temporal.list_workflows(f"WorkflowId STARTS_WITH 'exec-{pk}-'")
        ]
        largest = 0
        for child in children:
            history = await bench.temporal.get_workflow_handle(child.id).fetch_history()
            largest = max(largest, len(history.events))
        rows.append(
            {
                "metric": f"{n} items",
                "children": len(children),
                "parent events": len(parent.events),
                "largest child events": largest,
                "seconds": round(seconds, 1),
                "items/s": round(n / seconds, 1),
            }
        )
        if args.fan_out_ai:
            points = [p for step in execution["steps"] for p in step["enhancements"]]
            rows[-1]["AI items"] = sum(p["enhancedItems"] or 0 for p in points)
            rows[-1]["AI cost USD"] = execution["aiCostUsd"]
    return {"title": "fan-out: one for_each step (service only)", "rows": rows}
