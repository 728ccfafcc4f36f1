"""`make bench`: start a fresh `wfs dev`, run the scenarios, print a table per scenario and
write the figures to bench/results/<UTC time>.json and bench/results/latest.json.

    .venv/bin/python -m bench.run                      # default sizes, 8-14 minutes here
                                                       # before sla and ai_recommendations
                                                       # joined (not yet timed with them)
    .venv/bin/python -m bench.run --full               # the sizes of issue 10
    .venv/bin/python -m bench.run --only start_latency,throughput --executions 50
    .venv/bin/python -m bench.run --only throughput --tracing   # OpenTelemetry on (OTLP sink)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from temporalio.client import Client

from bench import (
    ai_gateway,
    ai_recommendations,
    analytics,
    concurrency,
    execution_filters,
    fan_out,
    live_updates,
    sla,
    start_latency,
    start_load,
    throughput,
)
from bench.harness import UNPOLLED, Api, Bench, count, dumps
from bench.otlp_sink import OtlpSink
from bench.stack import BENCH_ENV, Stack

ROOT = Path(__file__).resolve().parents[1]
Scenario = Callable[[Bench, argparse.Namespace], Awaitable[dict[str, Any]]]
SCENARIOS: dict[str, Scenario] = {
    "start_latency": start_latency.run,
    "start_load": start_load.run,
    "throughput": throughput.run,
    "concurrency": concurrency.run,
    "live_updates": live_updates.run,
    "fan_out": fan_out.run,
    "ai_gateway": lambda bench, args: ai_gateway.run(
        args.ai_rounds,
        admin_db=bench.stack.services["database_url"],
        redis_url=bench.stack.services["redis_url"],
    ),
    "execution_filters": lambda bench, args: execution_filters.run(
        args.filter_executions, admin_db=bench.stack.services["database_url"]
    ),
    "analytics": lambda bench, args: analytics.run(
        args.analytics_executions, admin_db=bench.stack.services["database_url"]
    ),
    # slaReport and aiRecommendations on their own shapes (analytics times them on its data).
    "sla": lambda bench, args: sla.run(
        args.sla_executions, admin_db=bench.stack.services["database_url"]
    ),
    "ai_recommendations": lambda bench, args: ai_recommendations.run(
        args.recommendation_ai_rows, admin_db=bench.stack.services["database_url"]
    ),
}
# (default, --full): the defaults keep `make bench` near 10 minutes on this 2-core machine.
SIZES: dict[str, tuple[Any, Any]] = {
    "rounds": (100, 300),
    "starts": (500, 1000),
    "executions": (60, 1000),
    "open": (1000, 10_000),
    "subscribers": (1000, 1000),
    "live_executions": (200, 1000),
    "fan_out": ([1000], [100, 1000, 10_000]),
    "ai_rounds": (200, 500),
    "filter_executions": (1_000_000, 1_000_000),
    "analytics_executions": (1_000_000, 1_000_000),
    "sla_executions": (1_000_000, 1_000_000),
    "recommendation_ai_rows": (1_000_000, 1_000_000),
}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help=f"comma-separated, of: {', '.join(SCENARIOS)}")
    p.add_argument("--full", action="store_true", help="the issue's sizes (10,000 open ...)")
    p.add_argument("--rounds", type=int, help="start_latency: sequential starts per side")
    p.add_argument("--starts", type=int, help="start_load: starts per side")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (load, throughput)")
    p.add_argument("--tenants", type=int, default=10, help="start_load: tenants (4 are demo)")
    p.add_argument("--executions", type=int, help="throughput: executions per round and side")
    p.add_argument("--throughput-rounds", type=int, default=2)
    p.add_argument("--open", type=int, help="concurrency: executions open at once per side")
    p.add_argument("--subscribers", type=int, help="live_updates: WebSocket subscribers")
    p.add_argument("--live-executions", type=int, help="live_updates: executions watched")
    p.add_argument("--fan-out", type=int, nargs="+", help="fan_out: item counts")
    p.add_argument(
        "--fan-out-ai",
        action="store_true",
        help="fan_out: one AI call per item (runs `wfs dev --fake-llm`)",
    )
    p.add_argument("--ai-rounds", type=int, help="ai_gateway: rounds (each: 2 tasks x 2 providers)")
    p.add_argument(
        "--filter-executions", type=int, help="execution_filters: executions of the measured tenant"
    )
    p.add_argument(
        "--analytics-executions",
        type=int,
        help="analytics: executions across tenants (10 events each)",
    )
    p.add_argument(
        "--sla-executions", type=int, help="sla: executions of the measured tenant (a year)"
    )
    p.add_argument(
        "--recommendation-ai-rows",
        type=int,
        help="ai_recommendations: AI usage rows of the measured tenant (a year)",
    )
    p.add_argument(
        "--tracing",
        action="store_true",
        help="tracing on: the stack exports its spans (OTLP/HTTP) to a sink in this process",
    )
    p.add_argument("--state-dir", type=Path, default=ROOT / ".wfs-bench")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args(argv)
    for name, (default, full) in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, full if args.full else default)
    args.scenarios = [s for s in args.only.split(",") if s] or list(SCENARIOS)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


def table(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))

    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    lines = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(columns)]
    fmt = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    out = [fmt.format(*columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join([*out, *(fmt.format(*line) for line in lines)])


async def quiesce(bench: Bench) -> float:
    """Wait until no workflow of this run is running (but the unpolled ones of the start
    scenarios, which time out by themselves): a scenario's executions still finishing would
    load the next one. Returns the seconds waited."""
    t0 = time.monotonic()
    query = f"ExecutionStatus = 'Running' AND TaskQueue != '{UNPOLLED}{bench.run_id}'"
    while await count(bench.temporal, query) and time.monotonic() - t0 < 900:
        await asyncio.sleep(0.5)
    return round(time.monotonic() - t0, 1)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }


async def main(args: argparse.Namespace) -> int:
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "stack_env": BENCH_ENV,
        "tracing": {"on": args.tracing},
        "args": {k: v for k, v in vars(args).items() if k not in ("state_dir", "results")},
        "scenarios": {},
    }
    print(f"machine: {report['machine']}")
    print("stack: `wfs dev` with " + " ".join(f"{k}={v}" for k, v in BENCH_ENV.items()))
    stack = Stack(args.state_dir, dev_args=["--fake-llm"] if args.fan_out_ai else [])
    with OtlpSink() if args.tracing else contextlib.nullcontext() as sink:
        if sink is not None:
            stack.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.url
            print(f"tracing on: OTEL_EXPORTER_OTLP_ENDPOINT={sink.url}")
        failed = await run_scenarios(stack, args, report)
        if sink is not None:
            report["tracing"] |= {"export_requests": sink.requests, "export_bytes": sink.bytes}
            print(f"tracing: {sink.requests} exports, {sink.bytes / 1e6:.1f} MB of spans")
    report["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for path in (args.results / f"{stamp}.json", args.results / "latest.json"):
        path.write_text(dumps(report) + "\n")
    print(f"wrote {args.results / f'{stamp}.json'}")
    return 1 if failed else 0


async def run_scenarios(stack: Stack, args: argparse.Namespace, report: dict[str, Any]) -> bool:
    """Start the stack, run the scenarios into `report`, stop it; True when one failed."""
    failed = False
    try:
        t0 = time.monotonic()
        await stack.start()
        print(f"`wfs dev` ready in {time.monotonic() - t0:.1f}s at {stack.api_url}\n")
        temporal = await Client.connect(stack.services["temporal_address"])
        bench = Bench(stack, {n: Api(stack.api_url, k) for n, k in stack.keys.items()}, temporal)
        for name in args.scenarios:
            t0 = time.monotonic()
            try:
                result = await SCENARIOS[name](bench, args)
            except Exception as exc:
                failed = True
                traceback.print_exc()
                result = {"error": f"{type(exc).__name__}: {exc}", "rows": []}
                if stack.proc is not None and stack.proc.poll() is not None:
                    print(f"`wfs dev` exited ({stack.proc.returncode}):\n{stack.log_tail()}")
            result["seconds"] = round(time.monotonic() - t0, 1)
            try:
                result["drain_seconds"] = await quiesce(bench)
            except Exception as exc:  # the stack is gone: the next scenario will say so
                result["drain_error"] = repr(exc)
            report["scenarios"][name] = result
            print(f"## {name}: {result.get('title', result.get('error'))} ({result['seconds']}s)")
            print(table(result["rows"]) if result["rows"] else "(no rows)")
            for note in result.get("notes", []):
                print(f"  {note}")
            print()
    finally:
        code = stack.stop()
        print(f"`wfs dev` stopped (exit {code})")
    return failed


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
