"""After a restore: bring back from Temporal what workflows recorded after the backup point.

Temporal keeps its own persistence, so a restored database is older than the workflows it
describes. Every transition a workflow records goes through `execution.record_event` with an
`EventRecord` carrying its idempotency key; workers/recorded.py reads those records back by
replaying each history listed by `visibility_query` (running, or closed after the backup
point less a margin for clocks). `replay_runs` then records, through the recorder, the
events whose keys the database lacks, in the order the workflow made them: status, progress,
the terminal outcome and its notification come back with them, and the workflows' next events
continue the numbering.

An execution created after the backup point has no row: it is re-created from the run input
its workflow started with (tenant, template name and version, params) when its tenant and
exactly one template of that name and version exist, then its events are replayed; otherwise
it is reported. What no workflow recorded is not brought back: events written by the API
itself (CANCEL_REQUESTED, RETRIED, QUEUED), AI usage rows, notifications other than
executions' ends, webhook deliveries. docs/backup.md lists them.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from app.db import SessionFactory
from app.executions.recorder import Publisher, Recorder, TransitionRefused
from app.executions.repository import ExecutionRepository
from app.executions.workflow_io import WORKFLOW_NAME, EventRecord, RunInput
from app.models import Execution
from app.models.states import EventType, Status

log = structlog.get_logger(__name__)
# Workflows closed this long before the backup point are looked at too: the database's and
# Temporal's clocks differ, and a replay of what is already recorded changes nothing.
CLOCK_MARGIN = timedelta(minutes=5)


@dataclass
class RecordedRun:
    """One workflow run of an execution: how it started and what it recorded, in order."""

    workflow_id: str
    run_id: str
    started_at: datetime
    run_input: RunInput
    records: list[EventRecord]


@dataclass
class Missing:
    """An execution Temporal ran that the restored database does not have, and why it was
    not re-created."""

    execution_id: str
    workflow_id: str
    tenant_id: str
    template: str
    reason: str = ""


@dataclass
class ReplayReport:
    workflows: int = 0  # histories read
    replayed: int = 0  # events recorded from them
    refused: int = 0  # events the state machine refused (logged)
    executions: set[str] = field(default_factory=set)  # executions that got events back
    recreated: list[str] = field(default_factory=list)  # rows re-created from a run input
    missing: list[Missing] = field(default_factory=list)


def visibility_query(since: datetime, task_queue: str) -> str:
    """Temporal visibility: the deployment's template workflows that may have recorded
    something after `since` (running, or closed after it less CLOCK_MARGIN)."""
    after = (since - CLOCK_MARGIN).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    queue = task_queue.replace("'", "")
    return (
        f"TaskQueue = '{queue}' AND WorkflowType = '{WORKFLOW_NAME}' "
        f"AND (ExecutionStatus = 'Running' OR CloseTime >= '{after}')"
    )


async def replay_runs(
    sessions: SessionFactory,
    runs: AsyncIterable[RecordedRun],
    publisher: Publisher | None = None,
) -> ReplayReport:
    """Record what the runs recorded and the database lacks, one execution at a time."""
    report = ReplayReport()
    by_execution: dict[str, list[RecordedRun]] = defaultdict(list)
    async for run in runs:
        report.workflows += 1
        by_execution[run.run_input.execution_id].append(run)
    for execution_id, found in by_execution.items():
        found.sort(key=lambda r: r.started_at)  # a retried execution's runs, in order
        await _replay_execution(sessions, execution_id, found, report, publisher)
    return report


async def _replay_execution(
    sessions: SessionFactory,
    execution_id: str,
    runs: list[RecordedRun],
    report: ReplayReport,
    publisher: Publisher | None,
) -> None:
    records = [rec for run in runs for rec in run.records]
    async with sessions() as session:
        recorder = Recorder(session, publisher)
        repo = recorder.repo
        row = await repo.lock(uuid.UUID(execution_id))
        if row is None:
            row = await _recreate(repo, recorder, runs, report)
            if row is None:
                await recorder.rollback()
                return
        known = await repo.event_keys(row.id)
        for rec in records:
            if rec.key in known:
                continue
            try:
                await recorder.record(rec)
            except TransitionRefused as exc:
                report.refused += 1
                log.warning(
                    "restore.replay_refused",
                    execution_id=execution_id,
                    key=rec.key,
                    type=rec.type,
                    reason=exc.message,
                )
                continue
            known.add(rec.key)
            report.replayed += 1
            report.executions.add(execution_id)
        if execution_id in report.executions and not _is_run_id(row.run_id):
            # Queued or claimed at the backup point, started since: the run it has now.
            row.run_id = runs[-1].run_id
        await recorder.commit()


def _is_run_id(value: str | None) -> bool:
    """A run id Temporal gave (the row may hold admission's claim marker, or nothing)."""
    try:
        return value is not None and uuid.UUID(value) is not None
    except ValueError:
        return False


async def _recreate(
    repo: ExecutionRepository,
    recorder: Recorder,
    runs: list[RecordedRun],
    report: ReplayReport,
) -> Execution | None:
    """The row of an execution created after the backup point, from its first run's input;
    None (and a Missing in the report) when it cannot be told which template it ran."""
    run = runs[0]
    given = run.run_input
    execution_id = given.execution_id
    missing = Missing(
        execution_id,
        run.workflow_id,
        given.tenant_id,
        f"{given.template_name} v{given.template_version}",
    )
    tenant_id = uuid.UUID(given.tenant_id)
    if await repo.tenant_tier(tenant_id) is None:
        missing.reason = "its tenant is not in the backup"
        report.missing.append(missing)
        return None
    versions = [
        (template_id, version_id)
        for template_id in await repo.template_ids_named(tenant_id, given.template_name)
        if (version_id := await repo.version_id(template_id, given.template_version))
    ]
    if len(versions) != 1:
        missing.reason = f"{len(versions)} templates of that name and version in the backup"
        report.missing.append(missing)
        return None
    ((template_id, version_id),) = versions
    row = Execution(
        id=uuid.UUID(execution_id),
        tenant_id=tenant_id,
        template_id=template_id,
        template_version_id=version_id,
        params=given.params,
        status=Status.PENDING,
        progress=0.0,
        workflow_id=run.workflow_id,
        run_id=runs[-1].run_id,
        created_at=run.started_at,
    )
    await repo.add(row)
    await recorder.record(
        EventRecord(
            execution_id,
            "created",
            EventType.CREATED,
            Status.PENDING,
            0.0,
            message=f"{given.template_name} v{given.template_version} (restored from Temporal)",
        ),
        new=row,
    )
    report.recreated.append(execution_id)
    return row
