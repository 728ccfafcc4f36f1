"""Control of queued executions, retry through admission, and the reconciler (issue 9).

Against the real stack (API and worker of the `server` fixture, PostgreSQL, Temporal dev
server). A free tenant has 5 slots; the executions that fill them hold a 120 s timer.
- a queued execution that is cancelled is CANCELLED at once and never gets a workflow, also
  when the cancel races the admission of the same execution, and in bulk;
- a retried execution is queued behind the tenant's limit and started by admission (tier
  priority and fairness key) only when a slot frees, keeping its completed steps;
- a workflow terminated, timed out or lost outside the service is finished FAILED with the
  reason by the reconciler (idempotent across concurrent reconcilers), its slot admits the next
  queued execution, and the worker process runs the reconciler by itself;
- a reconciler verdict about a run is never applied once the row moved on (its end recorded,
  retried, a new run started), and describes ask about the row's own run;
- control errors shown to a tenant never carry Temporal's text (hosts, ports, workflow ids).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from app.cli.runner import run_worker
from app.errors import Conflict, Unavailable
from app.events.bus import EventBus
from app.executions.admission import sweep
from app.executions.control import ExecutionControl
from app.executions.reconciler import Reconciler, Verdict
from app.executions.repository import ExecutionRepository, OpenExecution
from app.executions.service import ExecutionService
from app.executions.workflow_io import WORKFLOW_NAME
from app.models import Execution
from app.models.base import utcnow
from app.settings import Settings
from app.templates.service import TemplateService
from app.tenants.service import Principal, TenantService
from app.tiers import priority_key
from tests.api.test_execution_flow import wait_terminal
from tests.conftest import TenantKeys, make_tenant
from tests.support import GraphQLClient, free_port
from tests.workers.test_control import READER, call, start, state, until
from tests.workers.test_template_graph import pk, publish

HOLD = {
    "name": "hold",
    "title": "Hold a slot",
    "parameters": {"type": "object", "properties": {"hold": {"type": "number"}}},
    "steps": [
        {"id": "hold", "activity": "wait.timer", "input": {"seconds": "{{ params.hold }}"}},
    ],
}
LONG = {"hold": 120}
HOST_PORT = re.compile(r"(\d{1,3}\.){3}\d{1,3}:\d+|localhost:\d+|\[[0-9a-f:]+\]:\d+", re.I)


@pytest.fixture
async def temporal(settings: Settings) -> Client:
    return await Client.connect(settings.temporal_address or "")


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[EventBus]:
    events = EventBus(settings.redis_url or "")
    await events.start()
    yield events
    await events.close()


async def free_tenant(server: str, sessions: Any) -> tuple[TenantKeys, GraphQLClient, str]:
    keys = await make_tenant(sessions, "free")
    return keys, GraphQLClient(server, keys.admin), await publish(sessions, keys, HOLD)


async def fill_slots(client: GraphQLClient, template: str, count: int) -> list[str]:
    ids = [await start(client, template, LONG) for _ in range(count)]
    for execution_id in ids:
        await until(client, execution_id, lambda e: e["status"] == "RUNNING")
    return ids


async def workflow_status(temporal: Client, execution_id: str) -> WorkflowExecutionStatus | None:
    """The latest run's status on Temporal; None when no workflow was ever started."""
    try:
        described = await temporal.get_workflow_handle(f"exec-{pk(execution_id)}").describe()
    except RPCError as exc:
        assert exc.status == RPCStatusCode.NOT_FOUND, exc
        return None
    return described.status


async def release(client: GraphQLClient, template: str) -> None:
    """Cancel what a test left holding slots (cancelled timers end at once)."""
    await call(client, "CancelExecutions", {"filter": {"templateName": template}})


async def test_cancelled_queued_execution_ends_at_once_and_never_runs(
    server: str, sessions: Any, settings: Settings, temporal: Client, bus: EventBus
) -> None:
    keys, client, template = await free_tenant(server, sessions)
    limit = settings.tier_concurrency["free"]
    running = await fill_slots(client, template, limit)
    single, bulk = [await start(client, template, LONG) for _ in range(2)]
    assert (await state(client, single))["status"] == "PENDING"

    answer = await call(client, "CancelExecution", {"id": single, "reason": "not needed"})
    # Before: UNAVAILABLE (it tried to cancel a workflow that does not exist).
    assert (answer["__typename"], answer.get("status")) == ("Execution", "CANCELLED")
    cancelled = await state(client, single)
    assert cancelled["status"] == "CANCELLED" and cancelled["finishedAt"]
    last = cancelled["events"][-1]
    assert (last["type"], last["message"]) == ("CANCELLED", "not needed")
    assert last["actor"].startswith("admin:")
    assert "STARTED" not in [e["type"] for e in cancelled["events"]]

    # Bulk: the queued one is cancelled at once, the running ones through their workflows.
    done = await call(
        client, "CancelExecutions", {"filter": {"templateName": template}, "reason": "bulk"}
    )
    assert done["count"] == limit + 1
    statuses = {e["id"]: e["status"] for e in done["executions"]}
    assert statuses[bulk] == "CANCELLED"
    for execution_id in running:
        assert (await wait_terminal(client, execution_id))["status"] == "CANCELLED"

    # Every slot is free now and admission has had its chance: still nothing ran.
    await sweep(sessions, temporal, bus, settings)
    await asyncio.sleep(1)
    for execution_id in (single, bulk):
        assert (await state(client, execution_id))["status"] == "CANCELLED"
        assert await workflow_status(temporal, execution_id) is None


async def test_cancel_racing_admission_either_cancels_queued_or_cancels_the_workflow(
    server: str, sessions: Any, settings: Settings, temporal: Client
) -> None:
    """Freeing a slot admits the queued execution while it is being cancelled: whichever
    wins the tenant lock, the execution ends CANCELLED and a cancel answered at once leaves
    no workflow behind."""
    keys, client, template = await free_tenant(server, sessions)
    limit = settings.tier_concurrency["free"]
    running = await fill_slots(client, template, limit)
    for _ in range(3):
        queued = await start(client, template, LONG)
        assert (await state(client, queued))["status"] == "PENDING"
        freed, answer = await asyncio.gather(
            call(client, "CancelExecution", {"id": running.pop(0)}),
            call(client, "CancelExecution", {"id": queued}),
        )
        assert freed["__typename"] == answer["__typename"] == "Execution"
        final = await wait_terminal(client, queued)
        assert final["status"] == "CANCELLED"
        status = await workflow_status(temporal, queued)
        if answer["status"] == "CANCELLED":  # cancelled while queued
            assert status is None
        else:  # admitted first, then cancelled through its workflow
            assert status == WorkflowExecutionStatus.CANCELED
        running += await fill_slots(client, template, limit - len(running))
    await release(client, template)


async def test_queued_executions_are_admitted_oldest_first_one_slot_at_a_time(
    server: str, sessions: Any, settings: Settings
) -> None:
    """Admission claims the oldest queued execution for each slot that frees."""
    keys, client, template = await free_tenant(server, sessions)
    running = await fill_slots(client, template, settings.tier_concurrency["free"])
    queued = [await start(client, template, LONG) for _ in range(3)]
    for turn, execution_id in enumerate(queued):
        assert (await call(client, "CancelExecution", {"id": running[turn]}))["status"]
        await until(client, execution_id, lambda e: e["status"] == "RUNNING")
        later = [(await state(client, q))["status"] for q in queued[turn + 1 :]]
        assert later == ["PENDING"] * len(later), (turn, later)
    await release(client, template)


async def test_retry_is_queued_behind_the_tier_limit_and_admitted_when_a_slot_frees(
    server: str, sessions: Any, settings: Settings, temporal: Client
) -> None:
    keys, client, template = await free_tenant(server, sessions)
    reader = await publish(sessions, keys, READER)
    failed_id = await start(client, reader)
    failed = await wait_terminal(client, failed_id)
    assert failed["status"] == "FAILED"
    first_run = await temporal.get_workflow_handle(f"exec-{pk(failed_id)}").describe()

    running = await fill_slots(client, template, settings.tier_concurrency["free"])
    async with sessions() as session:
        owner = await TenantService(session).get_by_name(keys.name)
    inbox = settings.files_root / str(owner.id) / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "order.json").write_text('{"sku": "B-2"}')

    answer = await call(client, "RetryExecution", {"id": failed_id})
    assert (answer["__typename"], answer["status"]) == ("Execution", "PENDING")
    await asyncio.sleep(2)  # time enough for a direct start (before: at once, over the limit)
    waiting = await state(client, failed_id)
    assert waiting["status"] == "PENDING"
    assert [e["type"] for e in waiting["events"]][-2:] == ["RETRIED", "QUEUED"]
    assert "5 of 5 running" in waiting["events"][-1]["message"]
    latest = await temporal.get_workflow_handle(f"exec-{pk(failed_id)}").describe()
    assert latest.run_id == first_run.run_id  # no second run yet

    assert (await call(client, "CancelExecution", {"id": running[0]}))["__typename"] == "Execution"
    done = await wait_terminal(client, failed_id)
    assert done["status"] == "COMPLETED", done["error"]
    assert done["result"]["order"] == {"sku": "B-2"}
    kinds = [(e["type"], e["stepId"]) for e in done["events"]]
    assert kinds.count(("STEP_STARTED", "stamp")) == 1  # kept from the first run
    assert kinds.count(("STEP_STARTED", "read")) == 2
    # Started by admission: a new run with the tier's priority and the tenant as fairness key.
    retried = await temporal.get_workflow_handle(f"exec-{pk(failed_id)}").describe()
    assert retried.run_id != first_run.run_id
    priority = retried.raw_description.workflow_execution_info.priority
    assert (priority.priority_key, priority.fairness_key) == (priority_key("free"), keys.name)
    await release(client, template)


async def test_terminated_workflow_is_finished_failed_and_frees_its_slot(
    server: str, sessions: Any, settings: Settings, temporal: Client, bus: EventBus
) -> None:
    keys, client, template = await free_tenant(server, sessions)
    running = await fill_slots(client, template, settings.tier_concurrency["free"])
    queued = await start(client, template, LONG)
    assert (await state(client, queued))["status"] == "PENDING"

    victim = running[0]
    await temporal.get_workflow_handle(f"exec-{pk(victim)}").terminate(reason="by an operator")
    reconcilers = [Reconciler(sessions, temporal, bus, settings, grace_seconds=0) for _ in "ab"]
    for _ in range(5):
        # Two workers reconciling at the same time finish it once.
        await asyncio.gather(*(r.run_round() for r in reconcilers))
        finished = await state(client, victim)
        if finished["status"] != "RUNNING":
            break
    assert finished["status"] == "FAILED"
    assert finished["error"] == "workflow terminated"
    ends = [e for e in finished["events"] if e["type"] in ("FAILED", "CANCELLED", "COMPLETED")]
    assert [(e["type"], e["message"], e["actor"]) for e in ends] == [
        ("FAILED", "workflow terminated", "system:reconciler")
    ]
    # Its slot admitted the queued execution; the healthy ones were left alone.
    await until(client, queued, lambda e: e["status"] == "RUNNING")
    for execution_id in running[1:]:
        assert (await state(client, execution_id))["status"] == "RUNNING"

    # Idempotent: later rounds add nothing.
    await asyncio.gather(*(r.run_round() for r in reconcilers))
    assert (await state(client, victim))["events"] == finished["events"]
    await release(client, template)


async def listed(sessions: Any, execution_id: uuid.UUID) -> OpenExecution:
    """The row as a reconciler with no grace period lists it now."""
    async with sessions() as session:
        row = await session.get(Execution, execution_id)
        assert row is not None
        rows = await ExecutionRepository(session).open_quiet_since(
            utcnow() + timedelta(seconds=1),
            after=(row.created_at - timedelta(microseconds=1), uuid.UUID(int=0)),
            limit=100,
        )
    (found,) = [r for r in rows if r.id == execution_id]
    return found


async def quiet(sessions: Any, execution_id: uuid.UUID) -> OpenExecution:
    """The row as listed once an activity that was in flight has written what it had."""
    before = await listed(sessions, execution_id)
    while True:
        await asyncio.sleep(0.5)
        now = await listed(sessions, execution_id)
        if now == before:
            return now
        before = now


async def test_a_verdict_about_an_old_run_is_not_applied_after_the_row_moved_on(
    server: str, sessions: Any, settings: Settings, temporal: Client, bus: EventBus
) -> None:
    """A round describes a page of rows (seconds) before it applies the verdicts. Here, in
    order: the row is listed and its run's verdict computed; meanwhile its end is recorded
    and the tenant retries, so admission starts a new run; then the verdict is applied.
    Before: finish_lost saw an open row and failed the new, healthy run."""
    keys, client, template = await free_tenant(server, sessions)
    (execution_id,) = await fill_slots(client, template, 1)
    row_id = uuid.UUID(pk(execution_id))
    first = await temporal.get_workflow_handle(f"exec-{pk(execution_id)}").describe()
    await temporal.get_workflow_handle(first.id, run_id=first.run_id).terminate(reason="op")
    late, other = (Reconciler(sessions, temporal, bus, settings, grace_seconds=0) for _ in "ab")

    old = await quiet(sessions, row_id)
    assert old.run_id == first.run_id
    verdict = await late.verdict(old)
    assert verdict == Verdict("FAILED", "workflow terminated")

    assert await other.finish(old, verdict)  # another worker records the end first...
    assert (await state(client, execution_id))["status"] == "FAILED"
    retried = await call(client, "RetryExecution", {"id": execution_id})  # ...the tenant retries
    assert retried["__typename"] == "Execution", retried
    await until(client, execution_id, lambda e: e["status"] == "RUNNING")
    new = await listed(sessions, row_id)
    assert new.run_id not in (None, first.run_id)

    assert not await late.finish(old, verdict)  # the late verdict is about another run
    now = await state(client, execution_id)
    assert now["status"] == "RUNNING"
    types = [e["type"] for e in now["events"]]
    after_retry = types[len(types) - types[::-1].index("RETRIED") :]
    assert not {"FAILED", "CANCELLED", "COMPLETED"} & set(after_retry), types
    # Describes ask about the run the row names, not the latest one with the workflow id.
    assert await late.verdict(old) == verdict
    assert await late.verdict(new) is None
    # Unchanged since listed, a verdict is applied (the check is not a blanket refusal).
    assert await late.finish(await listed(sessions, row_id), Verdict("CANCELLED", "test"))
    assert (await state(client, execution_id))["status"] == "CANCELLED"
    await temporal.get_workflow_handle(first.id).terminate(reason="test over")
    await release(client, template)


async def insert_open_execution(
    sessions: Any, keys: TenantKeys, template: str, workflow_id: str
) -> uuid.UUID:
    """A RUNNING row whose workflow is whatever `workflow_id` names on Temporal."""
    async with sessions() as session:
        owner = await TenantService(session).get_by_name(keys.name)
        templates = TemplateService(session)
        found = await templates.resolve(owner.id, template_id=None, name=template)
        version, _ = await templates.latest_version(found)
        execution = Execution(
            tenant_id=owner.id,
            template_id=found.id,
            template_version_id=version.id,
            params={},
            status="RUNNING",
            workflow_id=workflow_id,
            run_id="lost",
        )
        session.add(execution)
        await session.commit()
        return execution.id


async def test_the_worker_reconciles_lost_and_timed_out_workflows(
    server: str, sessions: Any, settings: Settings, temporal: Client
) -> None:
    """`run_worker` runs the reconciler every `reconcile_interval_seconds` by itself. The
    session's worker reconciles every 30 s after 30 s of quiet, so within the 20 s below only
    this worker can finish them."""
    keys, _, template = await free_tenant(server, sessions)
    nowhere = f"test-idle-{uuid.uuid4().hex[:8]}"  # a task queue no worker polls
    timing_out = f"timeout-{uuid.uuid4().hex[:8]}"
    await temporal.start_workflow(
        WORKFLOW_NAME,
        {},
        id=timing_out,
        task_queue=nowhere,
        execution_timeout=timedelta(seconds=1),
    )
    lost = await insert_open_execution(sessions, keys, template, f"lost-{uuid.uuid4().hex}")
    timed_out = await insert_open_execution(sessions, keys, template, timing_out)

    own = settings.model_copy(
        update={
            "reconcile_interval_seconds": 0.5,
            "temporal_task_queue": f"reconcile-{uuid.uuid4().hex[:8]}",
        }
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(own, stop))
    try:
        async with asyncio.timeout(20):
            while True:
                async with sessions() as session:
                    rows = {i: await session.get(Execution, i) for i in (lost, timed_out)}
                    errors = {i: (r.status, r.error) for i, r in rows.items() if r}
                if all(status == "FAILED" for status, _ in errors.values()):
                    break
                await asyncio.sleep(0.3)
    finally:
        stop.set()
        await worker
    assert errors == {
        lost: ("FAILED", "workflow not found"),
        timed_out: ("FAILED", "workflow timed out"),
    }


def assert_no_internals(message: str, settings: Settings) -> None:
    assert not HOST_PORT.search(message), message
    assert (settings.temporal_address or "") not in message
    for internal in ("exec-", "tcp", "tonic", "workflow not found for"):
        assert internal not in message.lower(), message


async def test_control_errors_name_no_host_port_or_workflow_id(
    server: str, sessions: Any, settings: Settings, temporal: Client
) -> None:
    keys, client, template = await free_tenant(server, sessions)
    (gone,) = await fill_slots(client, template, 1)
    await temporal.get_workflow_handle(f"exec-{pk(gone)}").terminate()
    # Temporal says NOT_FOUND ("workflow not found for ID: exec-..."): the tenant is told
    # the workflow no longer runs, and a cancel finishes the execution.
    paused = await call(client, "PauseExecution", {"id": gone})
    assert paused["code"] == "CONFLICT"
    assert_no_internals(paused["message"], settings)
    assert (await call(client, "CancelExecution", {"id": gone}))["status"] == "CANCELLED"
    assert (await state(client, gone))["status"] == "CANCELLED"

    # Temporal unreachable: the SDK's error names the address it could not reach.
    port = free_port()
    unreachable = await Client.connect(f"127.0.0.1:{port}", lazy=True)
    async with sessions() as session:
        owner = await TenantService(session).get_by_name(keys.name)
    principal = Principal(owner.id, owner.name, owner.tier, "admin", uuid.uuid4())
    execution_id = await insert_open_execution(sessions, keys, template, f"lost-{uuid.uuid4()}")
    for action in ("pause", "cancel"):
        async with sessions() as session:
            control = ExecutionControl(ExecutionService(session), unreachable, _Quiet(), settings)
            with pytest.raises(Unavailable) as refused:
                if action == "pause":
                    await control.pause(principal, execution_id, None)
                else:
                    await control.cancel(principal, execution_id, None)
        assert_no_internals(refused.value.message, settings)
        assert str(port) not in refused.value.message
    async with sessions() as session:
        control = ExecutionControl(ExecutionService(session), unreachable, _Quiet(), settings)
        with pytest.raises(Conflict):  # state checks still answer before Temporal is asked
            await control.resume(principal, execution_id)


class _Quiet:
    """A publisher for the direct calls above (the bus is not what they test)."""

    async def publish(self, channel: str, data: dict[str, Any]) -> bool:
        return True
