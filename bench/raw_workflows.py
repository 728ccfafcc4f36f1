"""The raw-Temporal side of the bench: the least a workflow can do to run the same steps.

No side effects at import (the worker's sandbox re-imports this module for every run). The
activity is called by name with the JSON the service's workflow sends (a `StepCall`), so the raw
worker runs the project's own `data.transform` with the same input, timeouts and heartbeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow

GO_SIGNAL = "go"


@dataclass
class StepsInput:
    steps: int = 0  # data.transform calls, in sequence
    step_input: dict[str, Any] = field(default_factory=dict)
    wait: bool = False  # wait for the `go` signal first (an open, idle workflow)


@workflow.defn(name="BenchSteps")
class BenchSteps:
    def __init__(self) -> None:
        self._go = False

    @workflow.signal(name=GO_SIGNAL)
    def go(self) -> None:
        self._go = True

    @workflow.run
    async def run(self, inp: StepsInput) -> int:
        if inp.wait:
            await workflow.wait_condition(lambda: self._go)
        info = workflow.info()
        for i in range(inp.steps):
            call = {
                "execution_id": info.workflow_id,
                "tenant_id": "bench",
                "step_id": f"s{i}",
                "input": inp.step_input,
                "index": None,
            }
            # The service's defaults: 300 s per attempt, heartbeats every 10 s (timeout 30 s).
            await workflow.execute_activity(
                "data.transform",
                call,
                start_to_close_timeout=timedelta(seconds=300),
                heartbeat_timeout=timedelta(seconds=30),
            )
        return inp.steps
