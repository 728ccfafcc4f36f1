"""Test helpers: a GraphQL HTTP client and a graphql-transport-ws client on real sockets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import websockets
from temporalio.client import Client

from app.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def own_service(
    settings: Settings, *, worker: bool = False, ai_worker: bool = False, **overrides: Any
) -> AsyncIterator[str]:
    """An API with these settings changed, running in this event loop; yields the API's base
    URL and stops everything after. With `worker`, also a worker on a task queue of its own;
    with `ai_worker`, also an AI worker on an AI task queue of its own (a pro-tier or higher
    template's enhancement steps run there: without one they wait for a poller forever)."""
    from app.cli.runner import run_api, run_worker

    update: dict[str, Any] = {"api_port": free_port(), **overrides}
    if worker:
        update.setdefault("temporal_task_queue", f"own-{uuid.uuid4().hex[:8]}")
    if ai_worker:
        update.setdefault("ai_task_queue", f"own-ai-{uuid.uuid4().hex[:8]}")
    own = settings.model_copy(update=update)
    stop, ready = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(run_api(own, stop, ready))]
    if worker:
        tasks.append(asyncio.create_task(run_worker(own, stop)))
    if ai_worker:
        tasks.append(asyncio.create_task(run_worker(own, stop, own.ai_task_queue)))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield f"http://127.0.0.1:{own.api_port}"
    finally:
        stop.set()
        await asyncio.gather(*tasks)


TICK_SECONDS = 0.005
HEALTH_SECONDS = 0.2


# The most an event-loop tick may be late in the security tests' "no stall" checks, counting only
# the lateness this process spent working (see `loop_watch`). Work done on the loop by mistake (a
# regex, a parse, a validation of hostile input) stalls it for seconds of CPU; a tick that is late
# because the machine ran something else (a loaded 2-core machine delayed ticks by up to ~410 ms
# of wall time while this process used a fraction of that) is not a stall of this code.
MAX_LOOP_STALL = 0.25
# The most the OS alone is taken to delay a tick (the worst seen on a loaded 2-core machine:
# ~410 ms); lateness beyond it counts as a stall even when the process did not work.
MAX_SCHEDULING_DELAY = 1.0


@dataclass
class LoopWatch:
    """What `loop_watch` saw while its block ran."""

    worst: float = 0.0  # longest working lateness of a tick (s): see loop_watch
    worst_wall: float = 0.0  # longest lateness of a tick on the wall clock (s)
    ticks: int = 0
    healthz: list[int] = field(default_factory=list)  # status codes of the GETs to health_url


@asynccontextmanager
async def loop_watch(health_url: str | None = None) -> AsyncIterator[LoopWatch]:
    """Measure this event loop's stalls while the block runs: a ticker sleeps TICK_SECONDS at a
    time and records how late it woke up; with `health_url`, a GET to it every HEALTH_SECONDS.

    It starts after a full garbage collection: one holds the GIL while it walks every object of
    the process (about 250 ms in a test process holding the API, the workers and pytest), and it
    comes whenever enough objects have survived since the last one, whoever allocated them.
    That cadence is the process's, not the code under test's. (The process-level remedy,
    gc.freeze() after startup, is in docs/security.md.)

    A tick's lateness counts as a stall only as far as this process was working meanwhile:
    `worst` is the largest min(lateness, process CPU time used while the tick slept), so work
    that holds the loop (or the GIL) counts in full whatever the machine's load, and a tick
    delayed because the OS ran other processes does not, up to MAX_SCHEDULING_DELAY: a wait
    that blocks the loop (time.sleep, a sync socket or DNS call) uses no CPU, so lateness past
    that counts in full (`worst_wall` keeps the wall figure).

    The ticker is armed before the block starts: a thread that holds the GIL from its first
    instruction (one long regex call does) would otherwise delay the first tick, and the stall
    would go unmeasured. On exit the pending tick is awaited, so a stall at the end counts."""
    watch = LoopWatch()
    loop = asyncio.get_running_loop()
    done, armed = asyncio.Event(), asyncio.Event()
    # Made before measuring: making a client loads CA certificates on the event loop (~60 ms).
    http = httpx.AsyncClient(timeout=5) if health_url else None

    async def tick() -> None:
        while not done.is_set():
            due, cpu = loop.time() + TICK_SECONDS, time.process_time()
            armed.set()  # nothing awaits between here and the sleep
            await asyncio.sleep(TICK_SECONDS)
            late = loop.time() - due
            # Beyond MAX_SCHEDULING_DELAY, lateness counts whether or not the process worked:
            # a blocking wait on the loop (a sync socket, a DNS lookup) uses no CPU.
            working = min(late, time.process_time() - cpu)
            watch.worst = max(watch.worst, working, late - MAX_SCHEDULING_DELAY)
            watch.worst_wall = max(watch.worst_wall, late)
            watch.ticks += 1

    async def probe(http: httpx.AsyncClient, url: str) -> None:
        while not done.is_set():
            watch.healthz.append((await http.get(url)).status_code)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), HEALTH_SECONDS)

    gc.collect()
    tasks = [asyncio.create_task(tick())]
    if http is not None and health_url is not None:
        tasks.append(asyncio.create_task(probe(http, health_url)))
    try:
        await armed.wait()
        yield watch
    finally:
        done.set()
        try:
            await asyncio.gather(*tasks)
        finally:
            if http is not None:
                await http.aclose()


class GraphQLClient:
    def __init__(self, base_url: str, key: str | None) -> None:
        self.base_url, self.key = base_url, key

    async def raw(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            resp = await http.post(
                "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
            )
        assert resp.status_code == 200, resp.text
        return resp.json()

    async def post_body(self, body: str | bytes) -> httpx.Response:
        """POST a body as it is (hostile JSON, bytes that are not UTF-8), with the key."""
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        async with httpx.AsyncClient(base_url=self.base_url, timeout=60) as http:
            return await http.post("/graphql", content=body, headers=headers)

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = await self.raw(query, variables)
        assert not body.get("errors"), body["errors"]
        return body["data"]


class Subscription:
    """One graphql-transport-ws connection running one subscription."""

    def __init__(self, ws_url: str, key: str | None) -> None:
        self.ws_url, self.key = ws_url, key
        self.ws: Any = None

    async def connect(self) -> None:
        self.ws = await websockets.connect(self.ws_url, subprotocols=["graphql-transport-ws"])
        payload = {"authorization": f"Bearer {self.key}"} if self.key else {}
        await self.ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        ack = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        assert ack["type"] == "connection_ack", ack

    async def start(self, query: str, variables: dict[str, Any]) -> None:
        await self.ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": query, "variables": variables},
                }
            )
        )

    async def collect(self, timeout: float = 60) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Messages until complete or error; returns (next payloads, final message)."""
        items: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                msg = json.loads(await self.ws.recv())
                if msg["type"] == "next":
                    items.append(msg["payload"])
                elif msg["type"] in ("complete", "error"):
                    return items, msg

    async def next(self, timeout: float = 30) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                msg = json.loads(await self.ws.recv())
                if msg["type"] in ("next", "complete", "error"):
                    return msg

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


class WebhookSink:
    """A real HTTP server on 127.0.0.1 that records JSON POSTs (for webhook steps)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                received.append({"path": self.path, "body": json.loads(self.rfile.read(length))})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


HISTORIES = Path(__file__).resolve().parent / "histories"


async def record_history(name: str, execution_id: str, temporal_address: str) -> None:
    """`WFS_RECORD_HISTORIES=1 make test` keeps a run's workflow history as
    tests/histories/<name>.json for tests/workers/test_replay.py: `<template>` from the
    standard-template tests, `<template>.<tier>` from the enhancement tests, `custom/<path>` for
    other workflow paths. An existing file is kept: delete it first to re-record."""
    pk = base64.urlsafe_b64decode(execution_id + "==").decode().split(":", 1)[1]
    temporal = await Client.connect(temporal_address)
    history = await temporal.get_workflow_handle(f"exec-{pk}").fetch_history()
    path = HISTORIES / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    if not path.exists():
        path.write_text(history.to_json())
