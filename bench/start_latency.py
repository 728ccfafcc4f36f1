"""Start latency: one `startExecution` at a time against raw `client.start_workflow`, side by side.

Runs against a running `wfs dev` in this directory (it reads `.wfs/services.json` and the demo
keys). Each round starts the standard `order-summary` template through the API (params
validated, admission, the row committed, the workflow started) and, interleaved, a raw
`start_workflow` of a workflow type no worker polls on its own task queue of the same Temporal
server (terminated right after), so both see the same machine load. Prints p50/p95/max of each
and their ratio. The machine is shared and noisy: compare the ratio, not the milliseconds.

    .venv/bin/python bench/start_latency.py 100
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import httpx
from temporalio.client import Client

from app.settings import read_services_file

STATE = Path(".wfs")
START = (
    "mutation($i: StartExecutionInput!) { startExecution(input: $i) { __typename "
    "... on UserError { code message } } }"
)


def row(name: str, ms: list[float]) -> str:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"| {name:<24} | {statistics.median(ms):8.1f} | {p95:8.1f} | {ms[-1]:8.1f} |"


async def main(rounds: int) -> None:
    services = read_services_file(STATE)
    if not services:
        sys.exit("start `wfs dev` in this directory first")
    key = json.loads((STATE / "demo-keys.json").read_text())["demo-enterprise"]
    temporal = await Client.connect(services["temporal_address"])
    queue = f"bench-raw-{uuid.uuid4().hex[:6]}"
    api_ms: list[float] = []
    raw_ms: list[float] = []
    async with httpx.AsyncClient(
        base_url="http://127.0.0.1:8000", timeout=60, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        query = '{ template(name: "order-summary") { exampleParams } }'
        params = (await http.post("/graphql", json={"query": query})).json()["data"]["template"][
            "exampleParams"
        ]
        for _ in range(rounds):
            started = time.perf_counter()
            body = (
                await http.post(
                    "/graphql",
                    json={
                        "query": START,
                        "variables": {"i": {"templateName": "order-summary", "params": params}},
                    },
                )
            ).json()
            api_ms.append((time.perf_counter() - started) * 1000)
            answer = body["data"]["startExecution"]
            if answer["__typename"] != "Execution":
                sys.exit(f"startExecution refused: {answer}")
            started = time.perf_counter()
            handle = await temporal.start_workflow(
                "BenchNoop", id=f"bench-{uuid.uuid4().hex}", task_queue=queue
            )
            raw_ms.append((time.perf_counter() - started) * 1000)
            await handle.terminate()
    print(f"{rounds} sequential starts each, interleaved\n")
    print("| start                    |  p50 ms  |  p95 ms  |  max ms  |")
    print("|--------------------------|----------|----------|----------|")
    print(row("startExecution (API)", api_ms))
    print(row("raw start_workflow", raw_ms))
    ratio = statistics.median(api_ms) / statistics.median(raw_ms)
    print(f"\np50 ratio API / raw Temporal: {ratio:.1f}x")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
