"""The step activity contract: what an activity is, what it gets, and how it fails.

An activity is a `StepActivity`: a name templates use, a JSON Schema of its input (after
expression rendering) and an async `run(input, ctx)`. `define()` builds one and makes `run`
check the input against the schema first, so every activity reports all input problems, with
their paths, in one `StepInputError`. A step input may be up to MAX_STEP_INPUT_BYTES (1 MiB),
and validating that much costs tenths of a second: an input larger than about
LOOP_VALIDATION_BYTES is validated on the CPU pool, off the worker's event loop (which also
serves the API in `wfs dev`). An activity may add a `precheck`: cheap counts that refuse a
huge input with the step's own message before the schema looks at it.

Failures: `StepInputError` is permanent (bad input or configuration; retrying cannot help);
`StepTransientError` is retried by the step's retry policy. Anything else is a bug and is retried
too. Cancellation surfaces as `asyncio.CancelledError`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from jsonschema.protocols import Validator

from app.cpu import run_cpu
from app.db import SessionFactory
from app.jsonschemas import json_validator, schema_problems
from app.settings import Settings

MAX_PROBLEM_CHARS = 300
# Inputs up to about this size (as compact JSON) are validated inline: a few milliseconds at
# most; larger ones go to the CPU pool (a thread hop costs ~0.1 ms, a 1 MiB input ~0.3-1 s).
LOOP_VALIDATION_BYTES = 64 * 1024

StepRun = Callable[[dict[str, Any], "StepContext"], Awaitable[Any]]
# Runs before the schema, on input that may not match it; raises StepInputRefused.
StepPrecheck = Callable[[dict[str, Any], "StepContext"], None]


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


# Every activity-backed step heartbeats at least this often (workers/heartbeat.py) and is
# scheduled with a heartbeat timeout of 3x, so a dead worker's step is retried within seconds.
LIVENESS_HEARTBEAT_SECONDS = 10.0


@dataclass(frozen=True)
class StepActivity:
    """One activity a template step may name. `run` is None for workflow-native steps and for
    steps another worker serves (AI steps; plugin steps, whose `plugin` names the plugin)."""

    name: str
    description: str
    input_schema: dict[str, Any]
    run: StepRun | None
    heartbeat_seconds: float | None = None  # heartbeat interval, if not the liveness default
    plugin: str | None = None  # the plugin that adds this step (app/plugins)
    task_queue: str | None = None  # the queue its worker polls (None: the workflow's own)
    timeout_seconds: float | None = None  # its default timeout (None: the step default)


def define(
    name: str,
    description: str,
    input_schema: dict[str, Any],
    impl: StepRun | None,
    *,
    heartbeat_seconds: float | None = None,
    precheck: StepPrecheck | None = None,
) -> StepActivity:
    """Build a StepActivity whose `run` validates its input against `input_schema` first
    (after `precheck`, if given)."""
    # A bad schema (or a pattern RE2 cannot run) is a bug: fail at import.
    if problems := schema_problems(input_schema):
        raise ValueError(f"input schema of {name}: {problems}")
    if impl is None:
        return StepActivity(name, description, input_schema, None, heartbeat_seconds)
    validator = json_validator(input_schema, formats=True)
    checked_impl = impl

    async def run(input: dict[str, Any], ctx: StepContext) -> Any:
        if precheck is not None:
            precheck(input, ctx)
        problems = await validate_input(validator, input)
        if problems:
            raise StepInputRefused(f"invalid input for {name}: " + "; ".join(problems))
        return await checked_impl(input, ctx)

    run.__name__ = run.__qualname__ = name.replace(".", "_")
    run.__doc__ = impl.__doc__
    return StepActivity(name, description, input_schema, run, heartbeat_seconds)


async def validate_input(validator: Validator, input: Any) -> list[str]:
    """`input_problems`, on the CPU pool when the input is larger than LOOP_VALIDATION_BYTES."""
    if json_size_over(input, LOOP_VALIDATION_BYTES):
        return await run_cpu(input_problems, validator, input)
    return input_problems(validator, input)


def json_size_over(value: Any, limit: int) -> bool:
    """Whether `value` as compact JSON is (at least) about `limit` characters, without writing
    it: each node adds its least JSON length (a string its length and quotes, a scalar a
    character, a container its brackets, with a separator for each) and the walk stops once
    the sum passes `limit`, so it visits at most about limit / 2 nodes however large the
    value is (json.dumps of a 1 MiB value would take milliseconds on the loop). A container
    is charged for its items before they are walked: one holding more than `limit` items
    stops the walk at once. Iterative, so deep nesting is no recursion."""
    total = 0
    pending = [value]
    while pending:
        node = pending.pop()
        if isinstance(node, str):
            total += len(node) + 3
        elif isinstance(node, dict):
            total += 2 + 2 * len(node)  # braces; a colon and a comma per entry
            if total > limit:
                return True
            pending.extend(node.keys())
            pending.extend(node.values())
        elif isinstance(node, list | tuple):
            total += 2 + len(node)  # brackets; a comma per item
            if total > limit:
                return True
            pending.extend(node)
        else:
            total += 2
        if total > limit:
            return True
    return False


def input_problems(validator: Validator, input: Any) -> list[str]:
    """Every schema violation as `$.path: message`, sorted by path so messages are stable."""
    found = []
    for error in validator.iter_errors(input):
        path = "$" + "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path
        )
        found.append((path, _cut(error.message)))
    return [f"{path}: {message}" for path, message in sorted(found)]


def _cut(message: str) -> str:
    """A schema message within MAX_PROBLEM_CHARS: jsonschema quotes the instance, which may
    be a megabyte, first and says what is wrong with it last ("... is too long"), so keep
    both ends."""
    if len(message) <= MAX_PROBLEM_CHARS:
        return message
    tail = MAX_PROBLEM_CHARS // 3
    return message[: MAX_PROBLEM_CHARS - tail - 5] + " ... " + message[-tail:]


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values give equal text (for hashes and keys)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
