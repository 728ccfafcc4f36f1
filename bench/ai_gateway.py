"""AI gateway overhead: `AiGateway.run` against a direct official-SDK call, side by side.

Standalone and in-process, like the tests: a fresh database on the local PostgreSQL (migrated,
dropped at the end), the local Redis, and the fake LLM server (app/ai/fake_llm) on a real
socket answering like a model (app/ai/fake_responder). The gateway is the one `wfs worker`
builds (app/ai/wiring.py) for a premium tenant read through AiService, as the AI activity
reads it. Each round, for summarize and classify_content through OpenAI's and Anthropic's
standard models, it times:

- the gateway on a new input (a cache miss): checks, routing, budget reserve and settle, the
  SDK call, output validation, the cache write and the ai_usage row in PostgreSQL;
- the same request again (a cache hit: no provider call, the usage row still written);
- the direct call: the same SDK, the same fake server, the same prompt (built before the
  clock starts) and `json.loads` of the reply, nothing else.

Rounds interleave all of them (who goes first alternates), so both sides see the same machine
load; compare the ratio and the overhead, not the milliseconds. The fake answers in a thread of
this process, so its CPU time is on both sides alike.

    .venv/bin/python bench/ai_gateway.py 200
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import anthropic
import asyncpg
import openai

from app.ai.contracts import AiRequest, ModelChoice
from app.ai.fake_llm import FakeLLM, FakeLLMServer
from app.ai.fake_responder import task_responder
from app.ai.gateway import AiGateway, TenantAi
from app.ai.service import AiService
from app.ai.tasks import TASK_SPECS, max_output_tokens
from app.ai.wiring import build_gateway
from app.ai_catalog import default_catalog
from app.db import SessionFactory, make_engine, make_sessionmaker
from app.log_config import configure
from app.migrate import upgrade_async
from app.settings import Settings
from app.tenants.service import TenantService

ADMIN_DB = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
KEY = "bench-key"
WARMUP_ROUNDS = 10  # connection pools, the CPU pool's threads, compiled validators
TASKS = ("summarize", "classify_content")
# The premium tier's models (the model catalogue): the tier this bench's tenant is on.
PROVIDERS: dict[str, ModelChoice] = {
    choice.provider: choice for choice in default_catalog().routing["premium"]["summarize"]
}
PERCENTILES = (50, 95, 99)
SUMMARY_TEXT = (
    "Order {marker} was placed on Monday and shipped on Tuesday from the Lyon warehouse. "
    "The customer asked for a gift wrap, which was added at no cost. Delivery is planned for "
    "Thursday before noon. The invoice was sent by email and paid by card the same day. "
    "Support closed the ticket after the customer confirmed the address."
)


def task_input(task: str, marker: str) -> dict[str, Any]:
    """A typical input of `task`, made unique by `marker` (so the first call is a cache miss)."""
    text = SUMMARY_TEXT.format(marker=marker)
    if task == "summarize":
        return {"text": text, "max_sentences": 2}
    return {"text": text, "categories": ["invoice", "order", "support", "contract"]}


@dataclass
class Samples:
    """Milliseconds per series: (task, provider, side) with side gateway | hit | raw."""

    ms: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)

    def add(self, task: str, provider: str, side: str, started: float) -> None:
        elapsed = (time.perf_counter() - started) * 1000
        self.ms.setdefault((task, provider, side), []).append(elapsed)

    def of(self, task: str, side: str, provider: str | None = None) -> list[float]:
        return [
            ms
            for (t, p, s), series in self.ms.items()
            if t == task and s == side and provider in (None, p)
            for ms in series
        ]


class DirectCalls:
    """What an application calling the model itself would do: one SDK call, parse the JSON."""

    def __init__(self, server: FakeLLMServer) -> None:
        # The gateway's providers also allow the SDK one retry (app/ai/providers).
        self.openai = openai.AsyncOpenAI(
            api_key=KEY, base_url=server.openai_base_url, max_retries=1
        )
        self.anthropic = anthropic.AsyncAnthropic(
            api_key=KEY, base_url=server.anthropic_base_url, max_retries=1
        )

    async def call(self, choice: ModelChoice, prompt: tuple[str, str], max_tokens: int) -> Any:
        system, user = prompt
        if choice.provider == "openai":
            response = await self.openai.chat.completions.create(
                model=choice.model,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                response_format={"type": "json_object"},
                temperature=0.0,
            )
            return json.loads(response.choices[0].message.content or "")
        message = await self.anthropic.messages.create(
            model=choice.model,
            system=system,
            messages=[{"role": "user", "content": user}],
            max_tokens=max_tokens,
        )
        return json.loads("".join(b.text for b in message.content if b.type == "text"))

    async def aclose(self) -> None:
        await self.openai.close()
        await self.anthropic.close()


@asynccontextmanager
async def fresh_database(admin_db: str) -> AsyncIterator[str]:
    """A new database on the admin URL's server, migrated; dropped (forced) afterwards."""
    name = f"wfs_bench_{uuid.uuid4().hex[:10]}"
    admin = admin_db.replace("+asyncpg", "")
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    base, _, query = admin.partition("?")
    url = base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    try:
        await upgrade_async(url)
        yield url
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def premium_tenant(sessions: SessionFactory, settings: Settings) -> tuple[str, TenantAi]:
    """A new premium tenant and its AI settings as the AI activity reads them."""
    async with sessions() as session:
        tenant = await TenantService(session).create_tenant(
            f"bench-ai-{uuid.uuid4().hex[:8]}", "premium"
        )
        await session.commit()
        return str(tenant.id), await AiService(session).tenant_ai(tenant.id, settings)


def routed_to(tenant: TenantAi, task: str, choice: ModelChoice) -> TenantAi:
    """`tenant` with `task` routed to `choice` first (an override its tier is entitled to)."""
    return replace(tenant, overrides={task: [{"provider": choice.provider, "model": choice.model}]})


@dataclass
class Bench:
    """The two sides, the tenant they call for, and the samples they add to."""

    gateway: AiGateway
    direct: DirectCalls
    tenant_id: str
    tenant: TenantAi
    samples: Samples = field(default_factory=Samples)

    async def via_gateway(self, task: str, choice: ModelChoice, input: dict[str, Any]) -> None:
        """The gateway on a new input (a miss), then on the same request (a hit)."""
        request = AiRequest(task, input, self.tenant_id)
        tenant = routed_to(self.tenant, task, choice)
        for side, expected in (("gateway", "OK"), ("hit", "CACHED")):
            started = time.perf_counter()
            outcome = await self.gateway.run(request, tenant)
            self.samples.add(task, choice.provider, side, started)
            if (outcome.outcome, outcome.model) != (expected, choice.model):
                raise RuntimeError(f"expected {expected} from {choice.model}: {outcome!r}")

    async def directly(self, task: str, choice: ModelChoice, input: dict[str, Any]) -> None:
        """The direct SDK call, its prompt built before the clock starts."""
        spec = TASK_SPECS[task]
        prompt, max_tokens = spec.messages(input), max_output_tokens(spec, input)
        started = time.perf_counter()
        await self.direct.call(choice, prompt, max_tokens)
        self.samples.add(task, choice.provider, "raw", started)

    async def round(self, gateway_first: bool) -> None:
        """Every task x provider once, each side on its own new input of the same size."""
        for task in TASKS:
            for choice in PROVIDERS.values():
                marker = uuid.uuid4().hex
                sides = [
                    self.via_gateway(task, choice, task_input(task, f"g{marker}")),
                    self.directly(task, choice, task_input(task, f"r{marker}")),
                ]
                for side in sides if gateway_first else reversed(sides):
                    await side


def percentile(ms: list[float], p: int) -> float:
    return statistics.median(ms) if p == 50 else statistics.quantiles(ms, n=100)[p - 1]


def rows(samples: Samples) -> list[dict[str, Any]]:
    """p50/p95/p99 per task and provider (cache misses), then cache hits per task."""
    series: list[tuple[str, list[float], list[float]]] = [
        (
            f"{task} via {provider}",
            samples.of(task, "gateway", provider),
            samples.of(task, "raw", provider),
        )
        for task in TASKS
        for provider in PROVIDERS
    ]
    series += [
        (f"{task} cache hit", samples.of(task, "hit"), samples.of(task, "raw")) for task in TASKS
    ]
    out = []
    for name, service, raw in series:
        for p in PERCENTILES:
            service_ms, raw_ms = percentile(service, p), percentile(raw, p)
            out.append(
                {
                    "metric": f"{name} p{p}",
                    "service_ms": round(service_ms, 2),
                    "raw_ms": round(raw_ms, 2),
                    "ratio": round(service_ms / raw_ms, 2),
                }
            )
    return out


async def measure(
    size: int, settings: Settings, sessions: SessionFactory, server: FakeLLMServer
) -> Samples:
    """Warm up, then `size` measured rounds; the tenant's Redis keys are removed afterwards."""
    tenant_id, tenant = await premium_tenant(sessions, settings)
    gateway = build_gateway(settings, sessions)
    direct = DirectCalls(server)
    bench = Bench(gateway, direct, tenant_id, tenant)
    try:
        for round_no in range(WARMUP_ROUNDS):
            await bench.round(gateway_first=round_no % 2 == 0)
        bench.samples = Samples()
        for round_no in range(size):
            await bench.round(gateway_first=round_no % 2 == 0)
        return bench.samples
    finally:
        await direct.aclose()
        for provider in gateway.providers.values():
            aclose = getattr(provider, "aclose", None)
            if aclose is not None:
                await aclose()
        await forget_tenant(gateway, tenant_id)


async def forget_tenant(gateway: AiGateway, tenant_id: str) -> None:
    """Delete the tenant's cache entries and budget keys (they would live for days) and close
    the gateway's Redis client."""
    redis = gateway.ledger.redis
    for pattern in (
        f"{gateway.cache.prefix}{tenant_id}:*",
        f"{gateway.ledger.prefix}{{{tenant_id}:*",
    ):
        keys = [key async for key in redis.scan_iter(match=pattern, count=1000)]
        if keys:
            await redis.delete(*keys)
    await redis.aclose()


async def run(size: int = 200, *, admin_db: str = ADMIN_DB, redis_url: str = REDIS_URL) -> dict:
    """Scenario 6 of `make bench`: {"scenario", "rows": [{metric, service_ms, raw_ms, ratio}],
    "notes"}. `size` is the number of measured rounds (each: every task x provider). Needs
    PostgreSQL (DATABASE_URL, else 127.0.0.1:5432) and Redis (REDIS_URL, else 127.0.0.1:6379);
    `make bench` passes its stack's."""
    configure("warning")
    server = FakeLLMServer(FakeLLM(responder=task_responder))
    server.start()
    try:
        async with fresh_database(admin_db) as database_url:
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                database_url=database_url,
                redis_url=redis_url,
                openai_api_key=KEY,
                openai_base_url=server.openai_base_url,
                anthropic_api_key=KEY,
                anthropic_base_url=server.anthropic_base_url,
            )
            engine = make_engine(database_url, pool_size=5)
            try:
                samples = await measure(size, settings, make_sessionmaker(engine), server)
            finally:
                await engine.dispose()
    finally:
        server.stop()
    table = rows(samples)
    return {"scenario": "ai_gateway", "rows": table, "notes": notes(size, table)}


def notes(size: int, table: list[dict[str, Any]]) -> list[str]:
    overheads = ", ".join(
        f"{r['metric'].removesuffix(' p50')} {r['service_ms'] - r['raw_ms']:+.1f} ms"
        for r in table
        if r["metric"].endswith(" p50")
    )
    return [
        f"{size} rounds after {WARMUP_ROUNDS} warm-up rounds; each round times every task x "
        "provider: the gateway on a new input (cache miss), the same request again (cache hit) "
        "and a direct SDK call (openai / anthropic) with the same prompt, interleaved",
        "service = AiGateway.run as wiring.build_gateway builds it (premium tenant, budget "
        "reserve/settle in Redis, output validation, cache write, one ai_usage row per call in "
        "PostgreSQL); raw = the SDK call to the same fake server plus json.loads",
        "cache hit rows compare the hit with the direct calls of both providers for the task",
        f"p50 overhead (service - raw): {overheads}",
        f"{os.cpu_count()} cores, Python {platform.python_version()}; the fake LLM server runs "
        "in a thread of this process with no scripted latency (its time is on both sides)",
    ]


def markdown(result: dict) -> str:
    lines = [
        "| metric | service ms | raw ms | ratio | overhead ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        overhead = r["service_ms"] - r["raw_ms"]
        lines.append(
            f"| {r['metric']} | {r['service_ms']:.2f} | {r['raw_ms']:.2f} | {r['ratio']:.2f}x "
            f"| {overhead:+.2f} |"
        )
    return "\n".join(lines + [""] + [f"- {note}" for note in result["notes"]])


if __name__ == "__main__":
    print(markdown(asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 200))))
