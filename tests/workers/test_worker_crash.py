"""An execution survives its worker being killed mid-step: the test runs the workflow on a
`wfs worker` subprocess, SIGKILLs it while a step's activity (`http.request` to a slow local
server) is in flight, starts another worker on the same task queue, and checks that the
execution completes with the right result, that the activity ran again on the new worker after
its heartbeat timeout (every step heartbeats, so a dead worker is noticed within 3 x 10 s, not
after the step's 300 s start-to-close timeout), and that the audit trail is not duplicated:
seq 1..N, each step started and completed exactly once."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from temporalio.api.enums.v1 import TimeoutType
from temporalio.client import Client

from app.events.bus import EventBus
from app.executions.service import ExecutionService, StartRequest
from app.models import Execution, ExecutionEvent
from app.settings import Settings
from app.steps.base import LIVENESS_HEARTBEAT_SECONDS
from app.templates.service import TemplateService
from app.tenants.service import TenantService
from tests.conftest import TenantKeys
from tests.workers.worker_process import WorkerProcess

DELAY = 3.0  # the slow server answers after this long

TEMPLATE: dict[str, Any] = {
    "name": "crash",
    "title": "A slow call between two quick steps",
    "parameters": {
        "type": "object",
        "properties": {"url": {"type": "string"}, "order": {"type": "string"}},
        "required": ["url", "order"],
    },
    "steps": [
        {
            "id": "prepare",
            "activity": "data.transform",
            "input": {"data": {"order": "{{ params.order }}"}, "ops": []},
        },
        {
            "id": "call",
            "activity": "http.request",
            "retry": {"max_attempts": 5, "initial_interval_seconds": 0.5, "backoff": 1.0},
            "input": {
                "method": "GET",
                "url": "{{ params.url }}",
                "params": {"order": "{{ steps.prepare.order }}"},
                "timeout_seconds": 30,
            },
        },
        {
            "id": "finish",
            "activity": "data.transform",
            "input": {
                "data": {"order": "{{ steps.prepare.order }}", "reply": "{{ steps.call.json }}"},
                "ops": [],
            },
        },
    ],
}
STEPS = [s["id"] for s in TEMPLATE["steps"]]


class SlowServer:
    """HTTP on 127.0.0.1 answering each GET after DELAY seconds with `{order, request}` (the
    request's number); keeps when each request arrived."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        arrivals, lock = self.arrivals, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                with lock:
                    arrivals.append(time.monotonic())
                    number = len(arrivals)
                order = parse_qs(urlsplit(self.path).query).get("order", [""])[0]
                time.sleep(DELAY)
                body = json.dumps({"order": order, "request": number}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the caller was killed: nobody to answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slow"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def publish(sessions: Any, tenant: TenantKeys) -> str:
    name = f"{TEMPLATE['name']}-{uuid.uuid4().hex[:6]}"
    async with sessions() as session:
        owner = await TenantService(session).get_by_name(tenant.name)
        await TemplateService(session).publish(
            {**TEMPLATE, "name": name}, tenant_id=owner.id, visibility="PRIVATE"
        )
        await session.commit()
    return name


async def load(
    sessions: Any, tenant_id: uuid.UUID, execution_id: uuid.UUID
) -> tuple[Execution, list[ExecutionEvent]]:
    async with sessions() as session:
        service = ExecutionService(session)
        execution = await service.get(tenant_id, execution_id)
        return execution, await service.events_after(execution_id, 0)


async def test_execution_survives_its_worker_being_killed_mid_step(
    settings: Settings, sessions: Any, tenant: TenantKeys, tmp_path: Path
) -> None:
    queue = f"crash-{uuid.uuid4().hex[:8]}"
    worker_settings = settings.model_copy(
        update={"temporal_task_queue": queue, "ai_task_queue": f"{queue}-ai"}
    )
    assert settings.temporal_address and settings.redis_url
    temporal = await Client.connect(
        settings.temporal_address, namespace=settings.temporal_namespace
    )
    name = await publish(sessions, tenant)
    async with sessions() as session:
        principal = await TenantService(session).authenticate(f"Bearer {tenant.operator}")
        await session.commit()

    slow = SlowServer()
    bus = EventBus(settings.redis_url)
    await bus.start()
    first = WorkerProcess(worker_settings, queue, tmp_path / "worker-1.log")
    second = WorkerProcess(worker_settings, queue, tmp_path / "worker-2.log")
    try:
        t_launch = time.monotonic()
        first.start()
        await first.wait_polling(temporal)

        order = f"order-{uuid.uuid4().hex[:6]}"
        async with sessions() as session:
            started = await ExecutionService(session).start(
                principal,
                StartRequest(None, name, {"url": slow.url, "order": order}, None),
                temporal=temporal,
                publisher=bus,
                settings=worker_settings,
            )
            execution_id, workflow_id = started.id, started.workflow_id
        t_start = time.monotonic()

        # Mid-step: `call` is the current step and its request is being served.
        async with asyncio.timeout(20):
            while True:
                execution, _ = await load(sessions, principal.tenant_id, execution_id)
                assert execution.status in ("PENDING", "RUNNING"), (execution.status, execution)
                if execution.current_step == "call" and slow.arrivals:
                    break
                assert first.running(), first.output()
                await asyncio.sleep(0.05)
        first.kill()
        t_kill = time.monotonic()
        assert len(slow.arrivals) == 1  # killed while its only request was in flight

        second.start()
        await second.wait_polling(temporal)
        t_second_ready = time.monotonic()
        async with asyncio.timeout(60):
            while True:
                execution, events = await load(sessions, principal.tenant_id, execution_id)
                if execution.status in ("COMPLETED", "FAILED", "CANCELLED"):
                    break
                assert second.running(), second.output()
                await asyncio.sleep(0.1)
        t_done = time.monotonic()
    finally:
        first.kill()
        second.kill()
        await bus.close()
        slow.close()
    assert not first.leftovers() and not second.leftovers()

    assert execution.status == "COMPLETED", (execution.error, second.output())
    # The reply of the second request: the retry on the new worker produced the result.
    assert execution.result == {"order": order, "reply": {"order": order, "request": 2}}
    assert len(slow.arrivals) == 2  # the killed attempt and one retry
    assert slow.arrivals[1] > t_kill

    # The audit trail: gapless, in order, every transition once despite the retry.
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [(e.type, e.step_id) for e in events] == [
        ("CREATED", None),
        ("STARTED", None),
        *[(kind, step) for step in STEPS for kind in ("STEP_STARTED", "STEP_COMPLETED")],
        ("COMPLETED", None),
    ]
    assert execution.last_seq == len(events) and execution.progress == 100.0

    # Temporal's view: attempt 1 timed out (heartbeat) on the dead worker, and the retry
    # was started and completed by the new one.
    history = await temporal.get_workflow_handle(workflow_id).fetch_history()
    scheduled = [
        e.event_id
        for e in history.events
        if e.activity_task_scheduled_event_attributes.activity_type.name == "http.request"
    ]
    assert len(scheduled) == 1
    started_attrs = [
        e.activity_task_started_event_attributes
        for e in history.events
        if e.activity_task_started_event_attributes.scheduled_event_id == scheduled[0]
    ]
    completed_attrs = [
        e.activity_task_completed_event_attributes
        for e in history.events
        if e.activity_task_completed_event_attributes.scheduled_event_id == scheduled[0]
    ]
    assert len(started_attrs) == 1 and len(completed_attrs) == 1
    assert started_attrs[0].attempt == 2
    assert (
        started_attrs[0].last_failure.timeout_failure_info.timeout_type
        == TimeoutType.TIMEOUT_TYPE_HEARTBEAT
    )
    assert slow.arrivals[1] - slow.arrivals[0] < 300 / 2  # long before the step's timeout
    scheduled_attrs = next(
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.event_id == scheduled[0]
    )
    assert scheduled_attrs.heartbeat_timeout.ToTimedelta().total_seconds() == (
        3 * LIVENESS_HEARTBEAT_SECONDS
    )
    assert started_attrs[0].identity.startswith(f"{second.pid}@")
    assert completed_attrs[0].identity.startswith(f"{second.pid}@")

    print(
        f"\nfirst worker polling {t_start - t_launch:.1f}s after its launch; "
        f"killed {t_kill - t_start:.1f}s after the start; new worker polling after "
        f"{t_second_ready - t_kill:.1f}s; retry request {slow.arrivals[1] - t_kill:.1f}s "
        f"after the kill; COMPLETED {t_done - t_kill:.1f}s after the kill"
    )
