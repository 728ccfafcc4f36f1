"""The execution core (issue 10): one start path that holds no lock across a network call,
and one state machine that every transition goes through.

Against the real stack (the `server` fixture's API and worker, PostgreSQL, Temporal). To see
what happens while a start waits on Temporal, the start under test talks to Temporal through
a TCP proxy that the test can hold (bytes stop flowing both ways) and release: a real network
stall, not a stand-in for any of the service's code.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select, text
from temporalio.client import Client, WorkflowExecutionStatus

from app.api.relay import to_global_id
from app.events.bus import EventBus
from app.executions.admission import CLAIMED
from app.executions.reconciler import Reconciler
from app.executions.recorder import Recorder, TransitionRefused
from app.executions.service import ExecutionService, StartRequest
from app.executions.workflow_io import EventRecord
from app.models import Execution
from app.models.states import (
    EVENT_TYPES,
    TERMINAL,
    TRANSITIONS,
    EventType,
    Status,
    holds_slot,
    refusal,
)
from app.settings import Settings
from app.templates.service import TemplateService
from app.tenants.service import Principal, TenantService
from tests.api.test_enhancement_metrics import new_execution
from tests.api.test_execution_flow import wait_terminal
from tests.conftest import TenantKeys, make_tenant
from tests.security.test_sec_control import HOLD
from tests.support import GraphQLClient
from tests.workers.test_control import call, start, state
from tests.workers.test_template_graph import publish
from workers.activities import TemplateActivities


class HoldableProxy:
    """A TCP proxy to Temporal whose traffic the test can stop and let go again."""

    def __init__(self, target: str) -> None:
        self.host, port = target.rsplit(":", 1)
        self.port_to = int(port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.server: asyncio.Server | None = None
        self.pumps: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> HoldableProxy:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.flowing.set()
        assert self.server is not None
        self.server.close()
        for pump in self.pumps:
            pump.cancel()
        await asyncio.gather(*self.pumps, return_exceptions=True)

    def hold(self) -> None:
        self.flowing.clear()

    def release(self) -> None:
        self.flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port_to)
        for task in (self._pump(reader, up_writer), self._pump(up_reader, writer)):
            pump = asyncio.create_task(task)
            self.pumps.add(pump)
            pump.add_done_callback(self.pumps.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.close()


Proxied = tuple[HoldableProxy, Client]


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[EventBus]:
    events = EventBus(settings.redis_url or "")
    await events.start()
    yield events
    await events.close()


@pytest.fixture
async def proxy(settings: Settings) -> AsyncIterator[Proxied]:
    async with HoldableProxy(settings.temporal_address or "") as held:
        yield held, await Client.connect(held.address)


async def principal_of(sessions: Any, keys: TenantKeys) -> Principal:
    async with sessions() as session:
        owner = await TenantService(session).get_by_name(keys.name)
    return Principal(owner.id, owner.name, owner.tier, "admin", uuid.uuid4())


async def start_through(
    sessions: Any,
    principal: Principal,
    template: str,
    temporal: Client,
    bus: EventBus,
    settings: Settings,
) -> Execution:
    async with sessions() as session:
        return await ExecutionService(session).start(
            principal,
            StartRequest(None, template, {"hold": 1}, None),
            temporal=temporal,
            publisher=bus,
            settings=settings,
        )


def global_id(execution_id: uuid.UUID) -> str:
    return to_global_id("Execution", execution_id)


async def stalled_start(
    sessions: Any, settings: Settings, bus: EventBus, proxy: Proxied
) -> tuple[TenantKeys, str, asyncio.Task[Execution], Execution]:
    """A new tenant's start whose Temporal call is held: the tenant, its template, the start
    (still waiting) and its row as committed (CREATED recorded, a slot claimed)."""
    held, temporal = proxy
    keys = await make_tenant(sessions, "pro")
    template = await publish(sessions, keys, HOLD)
    principal = await principal_of(sessions, keys)
    held.hold()
    stalled = asyncio.create_task(
        start_through(sessions, principal, template, temporal, bus, settings)
    )
    return keys, template, stalled, await claimed_row(sessions, principal.tenant_id)


async def claimed_row(sessions: Any, tenant_id: uuid.UUID) -> Execution:
    """The tenant's execution whose slot is claimed while its workflow is being started."""
    query = select(Execution).where(Execution.tenant_id == tenant_id, Execution.run_id == CLAIMED)
    async with asyncio.timeout(20):
        while True:
            async with sessions() as session:
                found = await session.scalar(query)
            if found is not None:
                return found
            await asyncio.sleep(0.05)


async def test_a_start_waiting_on_temporal_holds_no_lock_of_its_tenant(
    server: str,
    sessions: Any,
    settings: Settings,
    bus: EventBus,
    proxy: tuple[HoldableProxy, Client],
) -> None:
    """Before, admission held the tenant's advisory lock (and a connection) across the Temporal
    call: one slow start stalled every start, cancel and admission of that tenant."""
    keys, template, stalled, claimed = await stalled_start(sessions, settings, bus, proxy)
    async with sessions() as session:
        free = await session.scalar(
            text("SELECT pg_try_advisory_xact_lock(hashtext(:key))"),
            {"key": f"admission:{claimed.tenant_id}"},
        )
        await session.rollback()
    assert free is True
    # Another start of the same tenant goes through meanwhile (the first one counts as holding
    # a slot), and so does a cancel.
    client = GraphQLClient(server, keys.admin)
    other = await start(client, template, {"hold": 0})
    assert (await wait_terminal(client, other))["status"] == "COMPLETED"
    assert not stalled.done()
    proxy[0].release()
    started = await stalled
    assert started.id == claimed.id and started.run_id not in (None, CLAIMED)
    assert (await wait_terminal(client, global_id(started.id)))["status"] == "COMPLETED"


async def test_an_execution_cancelled_while_its_workflow_starts_leaves_no_run_behind(
    server: str,
    sessions: Any,
    settings: Settings,
    bus: EventBus,
    proxy: tuple[HoldableProxy, Client],
) -> None:
    keys, _, stalled, claimed = await stalled_start(sessions, settings, bus, proxy)
    client = GraphQLClient(server, keys.admin)
    answer = await call(client, "CancelExecution", {"id": global_id(claimed.id), "reason": "no"})
    assert (answer["__typename"], answer["status"]) == ("Execution", "CANCELLED")
    proxy[0].release()
    await stalled  # its workflow started after all: admission stops it
    handle = (await Client.connect(settings.temporal_address or "")).get_workflow_handle(
        claimed.workflow_id
    )
    async with asyncio.timeout(30):
        while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await asyncio.sleep(0.2)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    final = await state(client, global_id(claimed.id))
    assert final["status"] == "CANCELLED"
    types = [e["type"] for e in final["events"]]
    assert types[types.index("CANCELLED") :] == ["CANCELLED"], types  # nothing reopened it


async def test_a_claim_whose_workflow_never_appeared_is_queued_again_and_runs(
    server: str, sessions: Any, settings: Settings, bus: EventBus
) -> None:
    """The process that claimed a slot died before it started the workflow: the reconciler
    does not fail the execution (it never ran) but queues it again; admission starts it."""
    keys = await make_tenant(sessions, "pro")
    template = await publish(sessions, keys, HOLD)
    async with sessions() as session:
        owner = await TenantService(session).get_by_name(keys.name)
        templates = TemplateService(session)
        found = await templates.resolve(owner.id, template_id=None, name=template)
        version, _ = await templates.latest_version(found)
        execution_id = uuid.uuid4()
        session.add(
            Execution(
                id=execution_id,
                tenant_id=owner.id,
                template_id=found.id,
                template_version_id=version.id,
                params={"hold": 0},
                status=Status.PENDING,
                workflow_id=f"exec-{execution_id}",
                run_id=CLAIMED,
            )
        )
        await session.commit()
    temporal = await Client.connect(settings.temporal_address or "")
    reconciler = Reconciler(sessions, temporal, bus, settings, grace_seconds=0)
    await reconciler.run_round()
    client = GraphQLClient(server, keys.admin)
    done = await wait_terminal(client, global_id(execution_id))
    assert done["status"] == "COMPLETED", done
    assert "FAILED" not in [e["type"] for e in done["events"]]


async def test_a_late_event_cannot_reopen_a_finished_execution(
    sessions: Any, settings: Settings, bus: EventBus
) -> None:
    """Before, a step event recorded after the execution ended (an activity retried after the
    reconciler finished it) set it RUNNING again."""
    execution_id = str(await new_execution(sessions))  # RUNNING, no workflow behind it
    async with sessions() as session:
        recorder = Recorder(session)
        await recorder.record(
            EventRecord(execution_id, "lost:1", "FAILED", "FAILED", 0.0, error="lost")
        )
        await recorder.commit()
    late = EventRecord(
        execution_id, "step:a:completed", "STEP_COMPLETED", "RUNNING", 50.0, step_id="a"
    )
    async with sessions() as session:
        with pytest.raises(
            TransitionRefused, match="STEP_COMPLETED cannot be recorded on a FAILED"
        ):
            await Recorder(session).record(late)
    # The worker's recording activity drops it instead of retrying it forever.
    activities = TemplateActivities(sessions, bus, settings)
    assert await activities.record_event(late) == 0
    async with sessions() as session:
        row = await session.get(Execution, uuid.UUID(execution_id))
        assert row is not None
        assert (row.status, row.last_seq, row.error) == ("FAILED", 1, "lost")
        # A replay of an event recorded before the status moved is answered, not refused.
        event, _ = await Recorder(session).record(
            EventRecord(execution_id, "lost:1", "FAILED", "FAILED", 0.0, error="lost")
        )
        assert event.seq == 1


def test_the_state_machine_is_complete_and_terminal_states_stay_terminal() -> None:
    assert set(TRANSITIONS) == set(EventType) and len(EVENT_TYPES) == len(TRANSITIONS)
    for event_type in EventType:
        for status in Status:
            allowed = refusal(status, event_type, next(iter(TRANSITIONS[event_type].after)))
            if status in TERMINAL:
                # Only a retry leaves a terminal status, and only FAILED.
                expected_open = event_type == EventType.RETRIED and status == Status.FAILED
                assert (allowed is None) == expected_open, (status, event_type)
    assert refusal("RUNNING", "STARTED", "RUNNING") is not None  # STARTED only from PENDING
    assert refusal("PENDING", "STEP_STARTED", "RUNNING") is not None  # a run before STARTED
    assert refusal("RUNNING", "PAUSED", "RUNNING") is not None  # PAUSED must leave it PAUSED
    assert refusal("RUNNING", "NOT_AN_EVENT", "RUNNING") == "unknown event type 'NOT_AN_EVENT'"
    assert holds_slot("PENDING", CLAIMED) and not holds_slot("PENDING", None)
    assert holds_slot("PAUSED", None) and not holds_slot("FAILED", "run")


async def test_the_slot_index_is_the_state_machines_predicate(sessions: Any) -> None:
    """The partial index the reconciler and slot counts use (migration 0007) has the
    predicate states.HOLDS_SLOT_SQL describes, as PostgreSQL normalised it."""
    async with sessions() as session:
        definition = await session.scalar(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_executions_started'")
        )
    assert definition is not None
    assert "'RUNNING'" in definition and "'PAUSED'" in definition
    assert "'PENDING'" in definition and "run_id IS NOT NULL" in definition
