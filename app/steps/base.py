"""The step activity contract: what an activity is, what it gets, and how it fails.

An activity is a `StepActivity`: a name templates use, a JSON Schema of its input (after
expression rendering) and an async `run(input, ctx)`. `define()` builds one and makes `run`
check the input against the schema first, so every activity reports all input problems, with
their paths, in one `StepInputError`.

Failures: `StepInputError` is permanent (bad input or configuration; retrying cannot help);
`StepTransientError` is retried by the step's retry policy. Anything else is a bug and is retried
too. Cancellation surfaces as `asyncio.CancelledError`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from jsonschema.protocols import Validator

from app.db import SessionFactory
from app.jsonschemas import json_validator, schema_problems
from app.settings import Settings

MAX_PROBLEM_CHARS = 300

StepRun = Callable[[dict[str, Any], "StepContext"], Awaitable[Any]]


class StepInputError(ValueError):
    """The step's input or configuration is wrong; retrying cannot help."""


class StepInputRefused(StepInputError):
    """The input was refused before the step did anything (its schema, a header with a line
    break...): running the step again on other input is safe. The workflow does that when the
    input an AI enhancement point changed is refused (it reruns on the plain input)."""


class StepTransientError(RuntimeError):
    """A temporary failure (network, remote 5xx, timeout); the step is retried."""


def _no_heartbeat(*details: Any) -> None:
    return None


def _never_cancelled() -> bool:
    return False


@dataclass
class StepContext:
    """Who runs the step and the worker's handles, built by the worker for each call."""

    tenant_id: str
    execution_id: str
    step_id: str
    attempt: int
    settings: Settings
    sessions: SessionFactory | None  # for idempotency records; None runs without them
    heartbeat: Callable[..., None] = field(default=_no_heartbeat)  # progress details
    cancelled: Callable[[], bool] = field(default=_never_cancelled)  # True once cancel asked
    # Publishes to a Redis channel (app.events.bus); False when the bus is unreachable.
    publish: Callable[[str, dict[str, Any]], Awaitable[bool]] | None = None


T = TypeVar("T")

# CPU-bound step code (data.*, text.*) runs here, off the worker's event loop (so heartbeats and
# other activities go on) and apart from asyncio's default executor (DNS lookups, file I/O):
# a few large inputs queue behind each other instead of taking every thread.
CPU_POOL = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="wfs-cpu")


async def run_cpu(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on the CPU pool. A cancelled caller does not stop it (threads cannot be
    interrupted); it finishes in the background."""
    return await asyncio.get_running_loop().run_in_executor(CPU_POOL, functools.partial(fn, *args))


# Every activity-backed step heartbeats at least this often (workers/heartbeat.py) and is
# scheduled with a heartbeat timeout of 3x, so a dead worker's step is retried within seconds.
LIVENESS_HEARTBEAT_SECONDS = 10.0


@dataclass(frozen=True)
class StepActivity:
    """One activity a template step may name. `run` is None for workflow-native steps."""

    name: str
    description: str
    input_schema: dict[str, Any]
    run: StepRun | None
    heartbeat_seconds: float | None = None  # heartbeat interval, if not the liveness default


def define(
    name: str,
    description: str,
    input_schema: dict[str, Any],
    impl: StepRun | None,
    *,
    heartbeat_seconds: float | None = None,
) -> StepActivity:
    """Build a StepActivity whose `run` validates its input against `input_schema` first."""
    # A bad schema (or a pattern RE2 cannot run) is a bug: fail at import.
    if problems := schema_problems(input_schema):
        raise ValueError(f"input schema of {name}: {problems}")
    if impl is None:
        return StepActivity(name, description, input_schema, None, heartbeat_seconds)
    validator = json_validator(input_schema, formats=True)
    checked_impl = impl

    async def run(input: dict[str, Any], ctx: StepContext) -> Any:
        problems = input_problems(validator, input)
        if problems:
            raise StepInputRefused(f"invalid input for {name}: " + "; ".join(problems))
        return await checked_impl(input, ctx)

    run.__name__ = run.__qualname__ = name.replace(".", "_")
    run.__doc__ = impl.__doc__
    return StepActivity(name, description, input_schema, run, heartbeat_seconds)


def input_problems(validator: Validator, input: Any) -> list[str]:
    """Every schema violation as `$.path: message`, sorted by path so messages are stable."""
    found = []
    for error in validator.iter_errors(input):
        path = "$" + "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path
        )
        message = error.message
        if len(message) > MAX_PROBLEM_CHARS:  # messages quote the instance, which may be huge
            message = message[: MAX_PROBLEM_CHARS - 3] + "..."
        found.append((path, message))
    return [f"{path}: {message}" for path, message in sorted(found)]


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values give equal text (for hashes and keys)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
