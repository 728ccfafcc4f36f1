"""Scenario 5, live updates: S WebSocket subscribers (graphql-transport-ws, `executionUpdates`)
on E running executions, each waiting on a `wait.event` step; then all are released and every
event they record (the wait's end, three `data.transform` steps, COMPLETED) travels to the
subscribers. Latency is the time from the event's recorded `at` (set by the worker as it
records it, just before its commit) to its arrival in the bench, on the same clock.

Also the API process's memory per subscriber: its RSS once all subscribers are connected and
caught up, less its RSS before, over S. The bench's own event loop is watched too (its lag is
part of every latency measured here), and reported.

Raw Temporal has no counterpart (no push stream of a workflow's events to a browser), so this
table has the service's figures only.
"""

from __future__ import annotations

import asyncio
import json
import time
from argparse import Namespace
from datetime import datetime
from typing import Any

import httpx
import websockets

from bench.harness import (
    TRANSFORM_INPUT,
    Bench,
    percentile,
    pool,
    row,
    service_scope,
    status,
    wait_count,
)
from bench.stack import CpuMeter, rss_bytes

EVENT = "go"
SUBSCRIBE = "subscription($id: ID!) { executionUpdates(id: $id) { seq type at } }"


def live_spec(name: str) -> dict[str, Any]:
    hold = {"event": EVENT, "timeout_seconds": 3600}
    steps = [{"id": "hold", "activity": "wait.event", "input": hold}]
    steps += [
        {"id": f"t{i}", "activity": "data.transform", "input": TRANSFORM_INPUT} for i in (1, 2, 3)
    ]
    return {
        "name": name,
        "title": "Bench: watched live",
        "parameters": {"type": "object"},
        "steps": steps,
    }


class Watcher:
    """One socket, one `executionUpdates` subscription; keeps (arrival, event) pairs."""

    def __init__(self, ws_url: str, key: str, execution_id: str) -> None:
        self.ws_url, self.key, self.execution_id = ws_url, key, execution_id
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.ws: Any = None
        self.ended = ""

    async def open(self) -> None:
        self.ws = await websockets.connect(
            self.ws_url, subprotocols=["graphql-transport-ws"], max_queue=None
        )
        payload = {"authorization": f"Bearer {self.key}"}
        await self.ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        ack = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
        if ack["type"] != "connection_ack":
            raise RuntimeError(f"socket refused: {ack}")
        subscribe = {"query": SUBSCRIBE, "variables": {"id": self.execution_id}}
        await self.ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))

    async def read(self) -> None:
        async for raw in self.ws:
            arrived = time.time()
            msg = json.loads(raw)
            if msg["type"] == "next" and msg["payload"].get("errors"):
                self.ended = f"error: {msg['payload']['errors']}"
                break
            if msg["type"] == "next":
                self.received.append((arrived, msg["payload"]["data"]["executionUpdates"]))
            elif msg["type"] in ("complete", "error"):
                self.ended = msg["type"] if msg["type"] == "complete" else str(msg)
                break
        await self.ws.close()

    def saw(self, event_type: str) -> bool:
        return any(e["type"] == event_type for _, e in self.received)


async def loop_lag(samples: list[float], stop: asyncio.Event, tick: float = 0.005) -> None:
    """How late this process's event loop wakes up: the share of latency that is the bench's."""
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(tick)
        samples.append((time.perf_counter() - t0 - tick) * 1000)


async def publish_failures(api_url: str) -> float:
    """Events committed but not published (so read again by subscribers on their next poll):
    the counter of the process serving /metrics (the API, and workers running with it)."""
    async with httpx.AsyncClient(timeout=30) as http:
        text = (await http.get(f"{api_url}/metrics")).text
    for line in text.splitlines():
        if line.startswith("wfs_event_publish_failures_total "):
            return float(line.split()[1])
    return 0.0


async def open_all(watchers: list[Watcher], batch: int = 50) -> None:
    for i in range(0, len(watchers), batch):
        await asyncio.gather(*(w.open() for w in watchers[i : i + batch]))


async def run(bench: Bench, args: Namespace) -> dict[str, Any]:
    n_exec, n_subs = args.live_executions, args.subscribers
    apis, keys = bench.tenant_apis(), list(bench.stack.keys.values())
    template = f"bench-live-{bench.run_id}"
    await bench.publish_everywhere(live_spec(template))
    ids: list[str] = [""] * n_exec

    async def start(i: int) -> None:
        ids[i] = await apis[i % len(apis)].start(template, {})

    await pool(n_exec, args.clients, start)
    scope = service_scope(template)
    await wait_count(bench.temporal, status(scope, "Running"), n_exec, 300)
    api_pid = bench.stack.api_pid()
    before = rss_bytes(api_pid)
    ws_url = bench.stack.api_url.replace("http", "ws", 1) + "/graphql"
    watchers = [
        Watcher(ws_url, keys[j % n_exec % len(keys)], ids[j % n_exec]) for j in range(n_subs)
    ]
    await open_all(watchers)
    readers = [asyncio.create_task(w.read()) for w in watchers]
    deadline = time.monotonic() + 120
    while not all(w.received for w in watchers) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)  # caught up and quiet
    after = rss_bytes(api_pid)

    lag: list[float] = []
    stop = asyncio.Event()
    lag_task = asyncio.create_task(loop_lag(lag, stop))
    released = time.time()

    async def release(i: int) -> None:
        await apis[i % len(apis)].send_event(ids[i], EVENT)

    failures = await publish_failures(bench.stack.api_url)
    with CpuMeter() as cpu:
        await pool(n_exec, args.clients, release)
        await asyncio.wait_for(asyncio.gather(*readers), 600)
    stop.set()
    await lag_task
    latencies = [
        (arrived - datetime.fromisoformat(e["at"]).timestamp()) * 1000
        for w in watchers
        for arrived, e in w.received
        if datetime.fromisoformat(e["at"]).timestamp() >= released
    ]
    failures = await publish_failures(bench.stack.api_url) - failures
    late = sum(1 for ms in latencies if ms > 1000)
    completed = sum(1 for w in watchers if w.ended == "complete" and w.saw("COMPLETED"))
    if completed != n_subs:
        errors = sorted({w.ended for w in watchers if w.ended != "complete"})
        raise RuntimeError(
            f"{completed} of {n_subs} subscribers saw their execution complete; "
            f"the others ended with: {errors[:3]}"
        )
    return {
        "title": f"live updates: {n_subs} subscribers on {n_exec} running executions",
        "rows": [
            *(row(f"event latency p{p} ms", percentile(latencies, p), None) for p in (50, 95)),
            row("event latency p99 ms", percentile(latencies, 99), None, "< 100 ms"),
            row("live events delivered", len(latencies), None),
            row("of which later than 1 s", late, None),
            row("events not published (metrics)", failures, None),
            row(f"subscribers that saw COMPLETED, of {n_subs}", completed, None, "all"),
            row("API RSS per subscriber KiB", (after - before) / n_subs / 1024, None),
            row("API RSS before subscribing MiB", before / 2**20, None),
            row("API RSS with the subscribers MiB", after / 2**20, None),
            row("bench event-loop lag p99 ms", percentile(lag, 99), None, "(part of the latency)"),
            *(row(f"cores used: {k}", v, None) for k, v in cpu.cores().items()),
        ],
    }
