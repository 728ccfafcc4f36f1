"""What a workflow recorded, read back from its Temporal history (for `wfs restore`).

Workflows record their transitions with the `execution.record_event` local activity, whose
input a history does not keep (a local activity leaves only a marker with its result). So each
history is replayed with today's workflow code, as Temporal's own replay does, and an
outbound interceptor captures the `EventRecord` of every record call the code makes on the
way: the same records, in the same order, with the same idempotency keys (the workflow is
deterministic). Replay runs nothing: activities and timers resolve from the history.

Unsandboxed: the captured records go to a list of this process, and the code replayed is the
code the worker runs (already checked deterministic by the sandboxed worker).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import structlog
from temporalio import workflow
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import (
    Interceptor,
    Replayer,
    StartActivityInput,
    StartLocalActivityInput,
    UnsandboxedWorkflowRunner,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from app.backup.replay import RecordedRun
from app.executions.workflow_io import RECORD_EVENT_ACTIVITY, EventRecord, RunInput
from workers.workflows import TemplateWorkflow

log = structlog.get_logger(__name__)


class _Capture(Interceptor):
    """Keeps the EventRecord of every record call, per workflow run."""

    def __init__(self) -> None:
        self.records: dict[str, list[EventRecord]] = defaultdict(list)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        records = self.records

        def keep(activity: str, args: Any) -> None:
            if activity == RECORD_EVENT_ACTIVITY and args and isinstance(args[0], EventRecord):
                records[workflow.info().run_id].append(args[0])

        class Outbound(WorkflowOutboundInterceptor):
            def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle[Any]:
                keep(input.activity, input.args)  # histories from before records were local
                return super().start_activity(input)

            def start_local_activity(
                self, input: StartLocalActivityInput
            ) -> workflow.ActivityHandle[Any]:
                keep(input.activity, input.args)
                return super().start_local_activity(input)

        class Inbound(WorkflowInboundInterceptor):
            def init(self, outbound: WorkflowOutboundInterceptor) -> None:
                super().init(Outbound(outbound))

        return Inbound


async def recorded_runs(client: Client, query: str) -> AsyncIterator[RecordedRun]:
    """Each TemplateWorkflow run the visibility `query` lists, with the records its code
    made (fan-out slices record nothing: their parent does). One replayer for them all."""
    listed = [execution async for execution in client.list_workflows(query)]
    inputs: dict[str, RunInput] = {}

    async def histories() -> AsyncIterator[WorkflowHistory]:
        for execution in listed:
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            history = await handle.fetch_history()
            started = history.events[0].workflow_execution_started_event_attributes
            (given,) = await client.data_converter.decode(started.input.payloads, [RunInput])
            inputs[execution.run_id] = given
            yield history

    capture = _Capture()
    replayer = Replayer(
        workflows=[TemplateWorkflow],
        workflow_runner=UnsandboxedWorkflowRunner(),
        interceptors=[capture],
        data_converter=client.data_converter,
    )
    async with replayer.workflow_replay_iterator(histories()) as results:
        async for result in results:
            if result.replay_failure is not None:  # its records up to the failure are right
                log.warning(
                    "restore.replay_failed",
                    workflow_id=result.history.workflow_id,
                    error=str(result.replay_failure),
                )
    for execution in listed:
        yield RecordedRun(
            workflow_id=execution.id,
            run_id=execution.run_id,
            started_at=execution.start_time,
            run_input=inputs[execution.run_id],
            records=capture.records.get(execution.run_id, []),
        )
