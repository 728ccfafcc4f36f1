"""Fan-out benchmark: how a `for_each` step scales, and that its history stays bounded.

Runs against a running `wfs dev` in this directory (it reads `.wfs/services.json` and the demo
keys). Publishes a private template with one fan-out step, starts it with N items, waits, and
prints a table: items, child workflows, events in the parent's history, the largest child's
history, and wall time. Temporal's limits are 51,200 events / 50 MB per history; the batch
size (FOR_EACH_BATCH_SIZE, default 200) keeps the parent at a few events per child.

    .venv/bin/python bench/fan_out.py 100 1000 10000
    .venv/bin/python bench/fan_out.py --ai 1000 10000   # with `wfs dev --fake-llm`

With `--ai` the step has an enhancement point (`summarize`, applied per item): the decision is
taken once and one AI call runs per item, so the table adds the items AI improved and the cost.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from app.settings import read_services_file

STATE = Path(".wfs")
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


async def gql(http: httpx.AsyncClient, query: str, variables: dict) -> dict:
    body = (await http.post("/graphql", json={"query": query, "variables": variables})).json()
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    return body["data"]


async def main(sizes: list[int], ai: bool) -> None:
    services = read_services_file(STATE)
    if not services:
        sys.exit("start `wfs dev` in this directory first")
    key = json.loads((STATE / "demo-keys.json").read_text())["demo-enterprise"]
    temporal = await Client.connect(services["temporal_address"])
    name = f"bench-fan-out-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(
        base_url="http://127.0.0.1:8000", timeout=60, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        created = await gql(
            http,
            "mutation($i: CreateTemplateInput!) { createTemplate(input: $i) "
            "{ __typename ... on Template { id } ... on UserError { message } } }",
            {"i": {"spec": spec(name, ai)}},
        )
        template_id = created["createTemplate"]["id"]
        await gql(
            http,
            "mutation($i: PublishTemplateInput!) { publishTemplate(input: $i) { __typename } }",
            {"i": {"templateId": template_id}},
        )
        extra = " AI items | AI cost USD |" if ai else ""
        print("| items | children | parent events | largest child events | seconds |" + extra)
        print("|---:|---:|---:|---:|---:|" + ("---:|---:|" if ai else ""))
        for n in sizes:
            t0 = time.monotonic()
            started = await gql(
                http,
                "mutation($i: StartExecutionInput!) { startExecution(input: $i) "
                "{ ... on Execution { id } } }",
                {"i": {"templateName": name, "params": {"n": n}}},
            )
            execution_id = started["startExecution"]["id"]
            while True:
                status = (
                    await gql(
                        http,
                        "query($id: ID!) { execution(id: $id) { status error aiCostUsd "
                        "steps { enhancements { enhancedItems } } } }",
                        {"id": execution_id},
                    )
                )["execution"]
                if status["status"] not in ("PENDING", "RUNNING"):
                    break
                await asyncio.sleep(0.5)
            seconds = time.monotonic() - t0
            pk = base64.urlsafe_b64decode(execution_id + "==").decode().split(":", 1)[1]
            parent = await temporal.get_workflow_handle(f"exec-{pk}").fetch_history()
            children = [
                w async for w in temporal.list_workflows(f"WorkflowId STARTS_WITH 'exec-{pk}-'")
            ]
            largest = 0
            for child in children:
                history = await temporal.get_workflow_handle(child.id).fetch_history()
                largest = max(largest, len(history.events))
            points = [p for step in status["steps"] for p in step["enhancements"]]
            ai_columns = (
                f" {sum(p['enhancedItems'] or 0 for p in points)} | {status['aiCostUsd']} |"
                if ai
                else ""
            )
            print(
                f"| {n} | {len(children)} | {len(parent.events)} | {largest} | {seconds:.1f} |"
                + ai_columns
                + (
                    ""
                    if status["status"] == "COMPLETED"
                    else f" {status['status']}: {status['error']}"
                )
            )


def spec(name: str, ai: bool) -> dict:
    if not ai:
        return {**SPEC, "name": name}
    (step,) = SPEC["steps"]
    return {**SPEC, "name": name, "steps": [{**step, "enhancements": [AI_POINT]}]}


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main([int(a) for a in args if a != "--ai"] or [100, 1000, 10000], "--ai" in args))
