"""JSON Schema for schemas and values written by strangers: one validator factory, the checks
of a schema before it is stored, size and depth caps, and a bounded way to run it all.

Tenants write the JSON Schema of a template's parameters and send the params checked against
it, so everything here assumes a hostile author (docs/security.md):

- No retrieval. Validators get an empty `referencing` registry: only references inside the
  schema (and the standard meta-schemas) resolve. jsonschema's default fetches any other `$ref`
  with urllib, `file://` included and without a timeout. `schema_problems` reports a `$ref` or
  `$dynamicRef` that is not a local fragment (or leads nowhere), and a `$schema` other than
  Draft 2020-12, before a schema is stored.
- Linear keywords. `uniqueItems` hashes a canonical form of each item (jsonschema compares
  unhashable items pairwise: quadratic); `pattern`, `patternProperties` and `format: regex` use
  RE2, which does not backtrack, within 1 MiB per pattern. A pattern RE2 cannot compile
  (backreferences, lookaround, too large) is a problem of the schema.
- One class throughout. jsonschema's `evolve` picks the validator class again from every
  subschema's `$schema`, which would trade the keywords above for the stock ones; ours keeps it.
- Bounded time. `run_bounded` runs a check in a small thread pool with a deadline; every
  keyword looks at the deadline of its thread, so a schema that is merely expensive (nested
  `anyOf` over shared `$defs`) stops by itself instead of burning a core after the caller left.
- Fair share. The pool is shared by every tenant; `run_bounded` lets one tenant hold at most
  MAX_RUNNING_PER_TENANT of its threads, and its other calls wait within their own deadline.
- Bounded size. `limit_problems` measures depth without recursion, then the compact JSON size,
  before anything recursive touches the value.

This is a kit module: it imports no domain module.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from fractions import Fraction
from typing import Any, TypeVar

import re2
import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from jsonschema.exceptions import UnknownType
from jsonschema.protocols import Validator

T = TypeVar("T")
Problem = dict[str, str]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
MAX_PROBLEMS = 100  # problems listed for one value; the rest are counted
MAX_MESSAGE_CHARS = 300  # jsonschema quotes the instance in messages, and it may be huge
_MAX_KEPT_ERRORS = 10 * MAX_PROBLEMS  # sorted by path before the first MAX_PROBLEMS are listed

# Keywords whose values are data, not schemas: a "$ref" inside them is never followed.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
# Keywords whose values map names (or patterns) to schemas: their keys are not keywords.
_NAME_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
_REFERENCES = ("$ref", "$dynamicRef")


class ValidationTimeout(Exception):
    """The deadline of the current validation passed before it finished."""


class PatternError(ValueError):
    """A regular expression RE2 cannot compile (the message says why)."""


# --- the deadline of the current thread ------------------------------------------------------

_local = threading.local()


def check_deadline() -> None:
    """Raise ValidationTimeout if this thread's validation is past its deadline (no-op when
    none is set, as for the trusted schemas of step inputs checked on a worker)."""
    deadline: float | None = getattr(_local, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise ValidationTimeout


@contextmanager
def deadline_at(deadline: float) -> Iterator[None]:
    """Validation in this thread stops at `deadline` (time.monotonic())."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = deadline
    try:
        yield
    finally:
        _local.deadline = previous


# One small pool: validations queue behind each other rather than take every thread, and a
# queued one whose deadline passes while it waits stops at its first keyword.
_POOL = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="wfs-json")

# Validations of one tenant that may hold a pool thread at once. The pool is shared by every
# tenant: without this, one tenant's loop of expensive validations takes every thread and
# everyone else's params queue behind it. Its other validations wait for its slot within
# their own deadline, so it is the abusive tenant whose requests time out.
MAX_RUNNING_PER_TENANT = 1


class _TenantGate:
    """The pool threads one tenant holds on one event loop, and its calls waiting for one in
    arrival order. Everything here runs on the loop; a freed slot is handed to the first
    waiter, so a newcomer never overtakes a waiting call."""

    def __init__(self) -> None:
        self.running = 0
        self.waiting: deque[asyncio.Future[None]] = deque()

    async def enter(self, timeout: float) -> None:
        """Take a slot within `timeout` seconds, or raise TimeoutError."""
        if self.running < MAX_RUNNING_PER_TENANT and not self.waiting:
            self.running += 1
            return
        turn = asyncio.get_running_loop().create_future()
        self.waiting.append(turn)
        try:
            # Shielded: on timeout or cancellation we look at `turn` ourselves, so a slot
            # handed over just as the caller gave up is passed on, never lost.
            await asyncio.wait_for(asyncio.shield(turn), timeout)
        except BaseException:
            if turn.done():
                self.leave()
            else:
                turn.cancel()
                self.waiting.remove(turn)
            raise

    def leave(self) -> None:
        while self.waiting:
            turn = self.waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot changes hands; `running` stays
                return
        self.running -= 1

    @property
    def idle(self) -> bool:
        return self.running == 0 and not self.waiting


# Per loop: the futures of waiting calls belong to their loop. Idle gates are dropped, so
# tenants cost nothing between their validations.
_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, _TenantGate]] = (
    weakref.WeakKeyDictionary()
)


async def _enter(tenant: Hashable, deadline: float) -> Callable[[Any], None]:
    """Take one of the tenant's slots before `deadline`; returns what frees it (callable
    from any thread, once)."""
    loop = asyncio.get_running_loop()
    gates = _GATES.setdefault(loop, {})
    gate = gates.setdefault(tenant, _TenantGate())

    def drop_if_idle() -> None:
        if gate.idle and gates.get(tenant) is gate:
            del gates[tenant]

    def on_loop() -> None:
        gate.leave()
        drop_if_idle()

    try:
        await gate.enter(_remaining(deadline))
    except BaseException as exc:
        drop_if_idle()
        if isinstance(exc, TimeoutError):
            raise ValidationTimeout from exc
        raise

    def release(_: Any) -> None:
        try:
            loop.call_soon_threadsafe(on_loop)
        except RuntimeError:  # the loop closed before the thread finished: nobody waits
            pass

    return release


def _call_before(deadline: float, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    with deadline_at(deadline):
        check_deadline()
        return fn(*args)


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


async def run_bounded(
    fn: Callable[..., T], *args: Any, deadline: float, tenant: Hashable | None = None
) -> T:
    """`fn(*args)` off the event loop, bound by `deadline` (time.monotonic()). Raises
    ValidationTimeout when the deadline passes first; the thread then stops at its next
    keyword (a thread cannot be interrupted: the bound on work is that check, the linear
    keywords and the size caps).

    `tenant` (whoever sent the work) holds at most MAX_RUNNING_PER_TENANT pool threads: its
    other calls wait for a slot, and the wait counts against their deadline. A slot is freed
    when the thread is done, not when the caller gives up, so a timed-out call's thread still
    counts until it reaches its next keyword. None (trusted work: seeding, workers) skips it."""
    release: Callable[[Any], None] | None = None
    if tenant is not None:
        release = await _enter(tenant, deadline)
    try:
        work = _POOL.submit(_call_before, deadline, fn, args)
    except BaseException:
        if release is not None:
            release(None)
        raise
    if release is not None:
        # Runs when the thread is done, or at once if the work is cancelled before it starts.
        work.add_done_callback(release)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(work), _remaining(deadline))
    except TimeoutError as exc:
        raise ValidationTimeout from exc


# --- size and depth --------------------------------------------------------------------------


def shape_problem(value: Any, max_depth: int) -> str | None:
    """Why the value cannot be taken as it is: containers nested deeper than max_depth (a
    scalar is depth 0, `{}` depth 1), NaN/Infinity (Python's json reads them; JSON and
    PostgreSQL do not) or text PostgreSQL refuses (see text_problem). Iterative, so a value
    nested past the recursion limit is measured too."""
    # Level by level: the lists hold the value's own objects, so the walk allocates nothing the
    # garbage collector tracks per node.
    level: list[Any] = [value]
    depth = 0
    while level:
        below: list[Any] = []
        for node in level:
            if isinstance(node, float) and not math.isfinite(node):
                return "holds NaN or Infinity, which JSON does not have"
            if isinstance(node, str) and (reason := text_problem(node)):
                return reason
            if isinstance(node, Mapping):
                for key in node:
                    if isinstance(key, str) and (reason := text_problem(key)):
                        return reason
                below.extend(node.values())
            elif isinstance(node, list | tuple):
                below.extend(node)
            else:
                continue
            if depth + 1 > max_depth:
                return f"nests deeper than {max_depth} levels"
        level, depth = below, depth + 1
    return None


def text_problem(text: str) -> str | None:
    """Why PostgreSQL's text and jsonb would refuse this string: a NUL character, or a lone
    surrogate (U+D800-U+DFFF, which Python's json reads from `\\ud800` but which is not UTF-8);
    None when it is fine."""
    if "\x00" in text:
        return "holds a NUL character (\\u0000), which PostgreSQL cannot store"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "holds a lone surrogate (\\ud800-\\udfff), which is not UTF-8"
    return None


def storable_text(text: str) -> str:
    """The string with NUL characters and lone surrogates replaced by U+FFFD."""
    if text_problem(text) is None:
        return text
    return "".join("\ufffd" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in text)


def compact_size(value: Any) -> int:
    """Bytes of the value as compact UTF-8 JSON (call after shape_problem: json recurses)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return len(text.encode("utf-8", "surrogatepass"))


def storable(value: Any, max_depth: int) -> Any:
    """The value as PostgreSQL's jsonb and Temporal can always take it: NaN/Infinity become
    null, NUL characters and lone surrogates U+FFFD, containers past max_depth a marker
    string. For what is recorded after the fact (events, results), where refusing would lose
    the record. A value that needs none of it (nearly all) is returned as it is, uncopied."""
    if shape_problem(value, max_depth) is None:
        return value
    return _storable_copy(value, max_depth)


def _storable_copy(value: Any, max_depth: int, _depth: int = 0) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, Mapping | list | tuple) and _depth >= max_depth:
        return f"(nested deeper than {max_depth} levels)"
    if isinstance(value, Mapping):
        return {
            _storable_copy(str(k), max_depth): _storable_copy(v, max_depth, _depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_storable_copy(v, max_depth, _depth + 1) for v in value]
    return value


def limit_problems(
    value: Any,
    *,
    what: str,
    max_bytes: int,
    bytes_setting: str,
    max_depth: int,
    depth_setting: str = "max_json_depth",
) -> list[Problem]:
    """Depth first (without recursion), then size; each problem names the setting to raise."""
    shape = shape_problem(value, max_depth)
    if shape is not None:
        setting = f" (setting {depth_setting})" if shape.startswith("nests") else ""
        return [problem("$", f"{what} {shape}{setting}")]
    size = compact_size(value)
    if size > max_bytes:
        return [
            problem(
                "$",
                f"{what} is {size} bytes as compact JSON; at most {max_bytes} "
                f"(setting {bytes_setting})",
            )
        ]
    return []


# --- linear keywords -------------------------------------------------------------------------


# Sorted keys, no spaces; NaN/Infinity written as Python's json does (params refuse them).
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr
).encode


def canonical(value: Any) -> str:
    """JSON text equal for JSON-equal values: 1 and 1.0 give one text (integral floats are
    written as integers), true and 1 do not, object key order does not count. A string, so
    20,000 keys cost the garbage collector nothing (tuples and frozensets are tracked, and a
    full collection holds the GIL, stalling the event loop)."""
    if _has_integral_float(value):
        value = _integral_floats_as_ints(value)
    return _CANONICAL(value)


def _has_integral_float(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, float):
            if node.is_integer():
                return True
        elif isinstance(node, Mapping):
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
    return False


def _integral_floats_as_ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: _integral_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_integral_floats_as_ints(v) for v in value]
    return value


def _unique_items(
    validator: Validator, unique: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: dict[str, int] = {}
    for index, item in enumerate(instance):
        first = seen.setdefault(canonical(item), index)
        if first != index:
            yield ValidationError(f"has non-unique elements (items {first} and {index} are equal)")
            return


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.never_capture = True  # only "does it match": no submatch work
_RE2_OPTIONS.log_errors = False  # a tenant's bad pattern is an answer, not a log line
# RE2's memory budget per pattern (program and DFA cache; the default is 8 MiB). re2.compile
# keeps the last 128 patterns, so this bounds what tenants' patterns can hold (measured: a
# 55 KB alternation took 4.5 MB under the default; at 1 MiB it is "pattern too large").
_RE2_OPTIONS.max_mem = 1 << 20


def compile_pattern(pattern: str) -> Any:
    """The RE2 form of a JSON Schema pattern (re2.compile caches it); PatternError when RE2
    cannot compile it."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PatternError(
            f"{reason} (patterns use RE2 syntax, no backreferences or lookaround, "
            "and at most 1 MiB compiled)"
        ) from None


def _pattern(
    validator: Validator, pattern: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    try:
        matched = compile_pattern(pattern).search(instance) is not None
    except PatternError as exc:
        yield ValidationError(f"pattern {_clip(repr(pattern))} cannot be used: {exc}")
        return
    if not matched:
        yield ValidationError(f"{_clip(repr(instance), 80)} does not match {_clip(repr(pattern))}")


def _pattern_properties(
    validator: Validator, patterns: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        try:
            compiled = compile_pattern(pattern)
        except PatternError as exc:
            yield ValidationError(f"pattern {_clip(repr(pattern))} cannot be used: {exc}")
            continue
        for key, value in instance.items():
            if compiled.search(key) is not None:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _multiple_of(
    validator: Validator, factor: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    # jsonschema divides as floats first: an integer past float range raises OverflowError.
    try:
        yield from _STOCK_MULTIPLE_OF(validator, factor, instance, schema)
    except OverflowError:
        try:
            failed = (Fraction(instance) / Fraction(factor)).denominator != 1
        except (ArithmeticError, ValueError):  # NaN or Infinity
            failed = True
        if failed:
            yield ValidationError(f"{_clip(repr(instance), 80)} is not a multiple of {factor}")


def _passes(validator: Validator, instance: Any, subschema: Any, index: int) -> bool:
    return next(validator.descend(instance, subschema, schema_path=index), None) is None


def _any_of(
    validator: Validator, branches: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    # jsonschema keeps every failed branch's errors as `context`: a tree as large as the work
    # done (exponential over nested anyOf), all of it for the garbage collector. Nobody here
    # reads context, and a branch fails at its first error.
    if not any(_passes(validator, instance, sub, i) for i, sub in enumerate(branches)):
        yield ValidationError(
            f"{_clip(repr(instance), 80)} is not valid under any of the given schemas"
        )


def _one_of(
    validator: Validator, branches: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    # As jsonschema's, without `context` (see _any_of).
    valid = [i for i, sub in enumerate(branches) if _passes(validator, instance, sub, i)]
    if not valid:
        yield ValidationError(
            f"{_clip(repr(instance), 80)} is not valid under any of the given schemas"
        )
    elif len(valid) > 1:
        reprs = ", ".join(_clip(repr(branches[i]), 80) for i in [*valid[1:], valid[0]])
        yield ValidationError(f"{_clip(repr(instance), 80)} is valid under each of {reprs}")


def _guarded(keyword: Callable[..., Any]) -> Callable[..., Any]:
    """The keyword, after a look at the deadline: every evaluation passes here."""

    def check(validator: Validator, value: Any, instance: Any, schema: Any) -> Any:
        check_deadline()
        return keyword(validator, value, instance, schema)

    return check


def _is_regex(instance: Any) -> bool:
    """`format: regex` means usable as a pattern here, so RE2 decides; formats apply to
    strings only."""
    if isinstance(instance, str):
        compile_pattern(instance)
    return True


FORMAT_CHECKER = FormatChecker(Draft202012Validator.FORMAT_CHECKER.checkers)
FORMAT_CHECKER.checks("regex", raises=PatternError)(_is_regex)

_STOCK_MULTIPLE_OF = Draft202012Validator.VALIDATORS["multipleOf"]
_KEYWORDS = {
    **Draft202012Validator.VALIDATORS,
    "multipleOf": _multiple_of,
    "anyOf": _any_of,
    "oneOf": _one_of,
    "uniqueItems": _unique_items,
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
}
_Validator: Any = validators.extend(
    Draft202012Validator,
    {name: _guarded(keyword) for name, keyword in _KEYWORDS.items()},
    format_checker=FORMAT_CHECKER,
)


def _evolve(self: Any, **changes: Any) -> Any:
    # jsonschema's evolve asks validator_for(subschema), so a subschema with any `$schema`
    # (2020-12's included) would be checked by a stock class: backtracking `re`, pairwise
    # uniqueItems, no deadline. Keep this class; copy the fields as jsonschema does.
    cls = type(self)
    changes.setdefault("schema", self.schema)
    for field in cls.__attrs_attrs__:
        if field.init and field.alias not in changes:
            changes[field.alias] = getattr(self, field.name)
    return cls(**changes)


_Validator.evolve = _evolve
# Retrieval fails for anything outside the schema; jsonschema adds the standard meta-schemas.
_NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry()


def json_validator(schema: Any, *, formats: bool = False) -> Validator:
    """The validator for every JSON Schema in this codebase: Draft 2020-12, no retrieval,
    linear uniqueItems, RE2 patterns, the thread's deadline. `formats` asserts `format`."""
    validator: Validator = _Validator(
        schema, registry=_NO_RETRIEVAL, format_checker=FORMAT_CHECKER if formats else None
    )
    return validator


# --- problems --------------------------------------------------------------------------------


def _clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def problem(path: str, message: str) -> Problem:
    # Both are clipped: a path holds the value's own keys, a message quotes the value.
    return {"path": _clip(path), "message": _clip(message)}


def _json_path(parts: Iterable[Any]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def instance_problems(validator: Validator, instance: Any) -> list[Problem]:
    """Every way `instance` breaks the validator's schema, sorted by path, messages clipped,
    at most MAX_PROBLEMS listed. A reference that does not resolve, or that loops without
    reading the instance, is a problem too; ValidationTimeout passes through."""
    kept: list[ValidationError] = []
    total = 0
    try:
        for error in validator.iter_errors(instance):
            total += 1
            if len(kept) < _MAX_KEPT_ERRORS:  # each error holds its part of the instance
                kept.append(error)
    except referencing.exceptions.Unresolvable as exc:
        ref = str(getattr(exc, "ref", ""))
        ref = "#" + ref if ref.startswith("/") else ref  # a pointer that leads nowhere
        return [
            problem(
                "$",
                f"the schema's reference {ref!r} does not resolve: only references inside the "
                "schema (#...) are followed",
            )
        ]
    except RecursionError:
        return [problem("$", "the schema refers to itself without end")]
    except UnknownType as exc:  # only in a schema that never passed schema_problems
        return [problem("$", f"the schema names an unknown type {_clip(repr(exc.type), 80)}")]
    except (ArithmeticError, ValueError) as exc:  # a keyword choked on an extreme number
        return [problem("$", f"cannot be checked against the schema ({type(exc).__name__})")]
    kept.sort(key=lambda e: list(map(str, e.path)))
    found = [problem(_json_path(e.absolute_path), e.message) for e in kept[:MAX_PROBLEMS]]
    if total > MAX_PROBLEMS:
        found.append(problem("$", f"... and {total - MAX_PROBLEMS} more problems"))
    return found


def _reference_problems(schema: Any) -> list[Problem]:
    """`$ref`/`$dynamicRef` that are not local fragments or point nowhere, `$schema` other
    than 2020-12, and patterns RE2 cannot compile. Walks every place a subschema may sit
    (unknown keywords included: a local `$ref` can point into them), skipping data (const,
    enum, ...)."""
    found: list[Problem] = []
    local: list[tuple[str, str]] = []  # (path, reference)
    has_id = False
    stack: list[tuple[Any, str]] = [(schema, "$")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, list):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            here = f"{path}.{key}"
            if key in _DATA_KEYWORDS:
                continue
            has_id = has_id or key == "$id"
            if key in _REFERENCES and isinstance(value, str) and value.startswith("#"):
                local.append((here, value))
            elif key in _REFERENCES and isinstance(value, str):
                found.append(
                    problem(
                        here,
                        f"{_clip(repr(value))} is not a reference inside the schema: only "
                        "local references (#/$defs/...) are allowed; nothing is fetched",
                    )
                )
            elif key == "$schema" and value not in (DIALECT, DIALECT + "#"):
                found.append(
                    problem(here, f"only JSON Schema Draft 2020-12 ({DIALECT}) is supported")
                )
            elif key == "pattern" and isinstance(value, str):
                found += _pattern_problems(here, value)
            if key in _NAME_MAPS and isinstance(value, dict):
                if key == "patternProperties":
                    for pattern in value:
                        found += _pattern_problems(f"{here}[{pattern!r}]", pattern)
                stack.extend((sub, f"{here}.{name}") for name, sub in value.items())
            else:
                stack.append((value, here))
    if not has_id:  # an `$id` moves the base of the references below it: leave those be
        found += _dangling(schema, local)
    return sorted(found, key=lambda p: p["path"])


def _dangling(schema: Any, local: list[tuple[str, str]]) -> list[Problem]:
    """Local references that lead nowhere in the schema, found before params ever meet them."""
    if not local or not isinstance(schema, dict):
        return []
    resource = referencing.jsonschema.DRAFT202012.create_resource(schema)
    resolver = _NO_RETRIEVAL.with_resource("", resource).resolver()
    found = []
    for path, ref in local:
        try:
            resolver.lookup(ref)
        except referencing.exceptions.Unresolvable:
            found.append(problem(path, f"{_clip(repr(ref), 80)} points nowhere in the schema"))
    return found


def _pattern_problems(path: str, pattern: str) -> list[Problem]:
    try:
        compile_pattern(pattern)
    except PatternError as exc:
        return [problem(path, f"pattern cannot be used: {exc}")]
    return []


def schema_problems(schema: Any) -> list[Problem]:
    """What keeps `schema` from being used: references and patterns (with their paths), then
    the first meta-schema error, as check_schema would raise it."""
    found = _reference_problems(schema)
    # Patterns are checked above with clearer messages; the meta-schema's "regex" format
    # would repeat them.
    meta = _Validator(Draft202012Validator.META_SCHEMA, registry=_NO_RETRIEVAL)
    for error in meta.iter_errors(schema):
        where = f" (at {_json_path(error.absolute_path)})" if error.absolute_path else ""
        found.append(problem("$", f"invalid JSON Schema{where}: {error.message}"))
        break
    return found
