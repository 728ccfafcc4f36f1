"""Step input expressions: a bounded Jinja2 sandbox that template checks and the workflow share.

Pure and deterministic (no clock, no I/O, no randomness), so the workflow evaluates them itself
and a replay gets the same values. A string that is exactly one `{{ expression }}` keeps the
expression's native type (a list stays a list); any other string renders to text.

Every expression is written by a tenant, so nothing it says may exhaust the process:
- Jinja folds constant expressions while compiling (`{{ 'a' * 200000000 }}` would allocate in
  `compile`). Here every operator is intercepted (never folded), every filter and test takes
  the render context (never folded), and the parsed tree is checked (size, depth, constants,
  no macros/imports/blocks/recursive loops) and rewritten before it is compiled: `~`, comparisons,
  slices and loop iterables become calls of bounded helpers.
- One rendering has a budget of work units (`Limits.steps`): a loop iteration, an operator, a
  call, an item copied or compared, or 64 characters produced or scanned each cost one. Work is
  counted, never timed, so the workflow stays deterministic.
- Anything that would build a value larger than `Limits.rendered_chars` is refused before it is
  built (repeat counts, concatenations, paddings, %-formats, joins, replacements, exponents).
- An argument that sizes one C call (which holds the GIL: no budget interrupts it) is bounded
  before the call: `round`'s precision, `strip`'s characters, numbers read from text.
- Every failure (syntax, undefined names, the sandbox, a limit, RecursionError, MemoryError...)
  is an ExpressionError with a short message that quotes at most ~100 characters of the input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from jinja2 import Undefined, nodes

from app.templates.expressions.budget import (
    _BUDGET,
    DEFAULT_LIMITS,
    Budget,
    ExpressionError,
    LimitExceeded,
    Limits,
    _failure,
    _plain,
    json_size,
)
from app.templates.expressions.sandbox import _ENV, Program, Programs, _compiled, _program

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_SPEC_EXPRESSION_NODES",
    "MAX_SPEC_EXPRESSIONS",
    "Budget",
    "ExpressionError",
    "LimitExceeded",
    "Limits",
    "Program",
    "Programs",
    "SpecTally",
    "check",
    "has_expressions",
    "json_size",
    "render",
    "render_text",
    "step_references",
    "wrap",
]

_TRIAL_STEPS = 1000  # work check() spends evaluating an expression's constant parts
_TOO_DEEP = "{{ nested too deeply }}"  # what _strings gives for a value past the depth limit

# Compile time is not counted by the work budget, and a worker compiles a spec's expressions
# inside a workflow activation (cold whenever its caches have moved on). Measured here: 25-50 us
# a parsed node, 0.2-0.3 ms a string at least. So a spec's expressions together are capped
# when the spec is validated (specs are immutable: what passed once passes on every worker):
# compiling (and rendering) all of them cold takes 0.15-0.25 s here at the caps, far below
# Temporal's 2 s deadlock detector.
# The standard templates use at most 23 strings and 216 nodes.
MAX_SPEC_EXPRESSIONS = 500  # strings holding expressions in one spec
MAX_SPEC_EXPRESSION_NODES = 4000  # their parsed nodes together


# -------------------------------------------------------------------------------- public API


class SpecTally:
    """The expressions of one spec, counted as check() meets them: strings holding expressions
    and their parsed nodes, against MAX_SPEC_EXPRESSIONS and MAX_SPEC_EXPRESSION_NODES.
    `before_each` runs before each string is read: a validation's deadline check, which raises
    to stop a validation its caller has given up on."""

    def __init__(self, before_each: Callable[[], None] | None = None) -> None:
        self.before_each = before_each
        self.strings = 0
        self.nodes = 0

    def next_string(self) -> None:
        if self.before_each is not None:
            self.before_each()

    @property
    def over(self) -> bool:
        """Past a cap: the spec is refused whatever else it holds, so nothing more is compiled."""
        return self.strings > MAX_SPEC_EXPRESSIONS or self.nodes > MAX_SPEC_EXPRESSION_NODES

    def problems(self) -> list[str]:
        found = []
        if self.strings > MAX_SPEC_EXPRESSIONS:
            found.append(
                f"the spec has {self.strings} strings holding expressions;"
                f" the limit is {MAX_SPEC_EXPRESSIONS}"
            )
        if self.nodes > MAX_SPEC_EXPRESSION_NODES:
            found.append(
                f"the spec's expressions have more than {MAX_SPEC_EXPRESSION_NODES} parts"
                " together (the limit: each part costs compile time on every worker)"
            )
        return found


def check(
    value: Any, limits: Limits | None = None, tally: SpecTally | None = None
) -> list[tuple[str, str]]:
    """Compile every expression in value; returns (json path, error) for each bad one. With
    `tally`, the strings and their nodes are counted into it, and once it is over a cap the
    rest are only counted."""
    limits = limits or DEFAULT_LIMITS
    problems: list[tuple[str, str]] = []
    for path, text in _strings(value, "$", limits):
        if text is _TOO_DEEP:
            problems.append((path, f"the value nests deeper than {limits.json_depth}"))
            continue
        if "{{" not in text and "{%" not in text:
            continue
        if tally is not None:
            tally.next_string()
            tally.strings += 1
            if tally.over:
                continue
        try:
            program = _program(text, limits)
        except Exception as exc:  # noqa: BLE001 - every failure is a problem to report
            problems.append((path, str(_failure(text, exc))))
            continue
        if tally is not None:
            tally.nodes += program.nodes
        try:
            _trial(text, limits)
        except ExpressionError as exc:  # its message quotes the expression already
            problems.append((path, str(exc)))
    return problems


def _trial(text: str, limits: Limits) -> None:
    """Evaluate what an expression computes from constants alone, with a small budget: a
    value too large to build (`'a' * 200000000`) is a problem now rather than at run time.
    Names are undefined here, so most expressions stop early; that is not a problem."""
    budget = Budget(limits, min(limits.steps, _TRIAL_STEPS))
    token = _BUDGET.set(budget)
    try:
        _render_string(text, {}, budget)
    except LimitExceeded as exc:
        if not exc.work:
            raise
    except ExpressionError:
        pass
    finally:
        _BUDGET.reset(token)


def step_references(
    value: Any, limits: Limits | None = None, tally: SpecTally | None = None
) -> set[str]:
    """Ids of steps an expression reads (`steps.x`, `steps['x']`); bad syntax reads none, and
    neither does anything once `tally` (counted by check()) is over a cap."""
    limits = limits or DEFAULT_LIMITS
    found: set[str] = set()
    for _, text in _strings(value, "$", limits):
        if ("{{" not in text and "{%" not in text) or len(text) > limits.expression_chars:
            continue
        if tally is not None:
            tally.next_string()
            if tally.over:
                break
        try:
            tree = _ENV.parse(text)
        except Exception:  # noqa: BLE001 - check() reports it; here it reads nothing
            continue
        for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
            target = getattr(node, "node", None)
            if not (isinstance(target, nodes.Name) and target.name == "steps"):
                continue
            if isinstance(node, nodes.Getattr):
                found.add(node.attr)
            elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
                if isinstance(node.arg.value, str):
                    found.add(node.arg.value)
    return found


def has_expressions(value: Any) -> bool:
    return any("{{" in t or "{%" in t for _, t in _strings(value, "$", DEFAULT_LIMITS))


def wrap(expression: str) -> str:
    """A bare expression (`when`, `for_each`) as a single-expression string."""
    return "{{ " + expression + " }}"


def render(
    value: Any,
    context: dict[str, Any],
    limits: Limits | None = None,
    pool: Budget | None = None,
    programs: Programs | None = None,
) -> Any:
    """Evaluate every expression inside value (dicts and lists recursively) within one budget
    of `limits.steps`, or less when `pool` (what an execution's renderings share) has less
    left; the work done is taken from the pool. `programs` (a dict the caller keeps while it
    renders the same value many times, like a fan-out's items) compiles each string once
    however busy the shared caches are."""
    limits = limits or (pool.limits if pool else DEFAULT_LIMITS)
    budget = Budget(limits)
    if pool is not None and pool.left < budget.left:
        budget.left = max(pool.left, 0)
        budget.refusal = pool.refusal  # the pool ran out: its refusal says so
    start = budget.left
    token = _BUDGET.set(budget)
    try:
        return _render_value(value, context, budget, programs, 0)
    finally:
        _BUDGET.reset(token)
        if pool is not None:
            pool.left -= min(start - budget.left, start)


def render_text(
    source: str, context: dict[str, Any], *, lenient: bool = False, limits: Limits | None = None
) -> str:
    """A tenant's text template (an AI prompt, a personalised message) rendered to text, with
    the checks, limits and work budget of every expression. `lenient`: a missing name or field
    renders as empty instead of failing. Raises ExpressionError."""
    limits = limits or DEFAULT_LIMITS
    budget = Budget(limits)
    token = _BUDGET.set(budget)
    try:
        program, _ = _compiled(source, False, limits, lenient)
        return _joined(program.root_render_func(program.new_context(dict(context))), budget)
    except Exception as exc:  # noqa: BLE001 - whatever a tenant's template raises is its error
        raise _failure(source, exc) from None
    finally:
        _BUDGET.reset(token)


def _render_value(
    value: Any, context: dict[str, Any], budget: Budget, programs: Programs | None, depth: int
) -> Any:
    if depth > budget.limits.json_depth:
        raise ExpressionError(f"the value nests deeper than {budget.limits.json_depth}")
    if isinstance(value, str):
        return _render_string(value, context, budget, programs)
    if isinstance(value, dict):
        return {k: _render_value(v, context, budget, programs, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_value(v, context, budget, programs, depth + 1) for v in value]
    return value


def _render_string(
    text: str, context: dict[str, Any], budget: Budget, programs: Programs | None = None
) -> Any:
    if "{{" not in text and "{%" not in text:
        return text
    try:
        program, single, _ = _program(text, budget.limits, programs)
        ctx = program.new_context(dict(context))
        if single:
            for _ in program.root_render_func(ctx):
                pass
            return _plain(_defined(ctx.vars["result"]), budget)
        return _joined(program.root_render_func(ctx), budget)
    except Exception as exc:  # noqa: BLE001 - whatever a tenant's expression raises is its error
        raise _failure(text, exc) from None


def _joined(parts: Iterable[str], budget: Budget) -> str:
    """The rendered parts as one text, refused as soon as they pass the rendered-size limit
    (before the text is built)."""
    kept, size = [], 0
    for part in parts:
        size += len(part)
        if size > budget.limits.rendered_chars:
            budget.chars(size)
        kept.append(part)
    return "".join(kept)


def _defined(value: Any) -> Any:
    """A single expression hands back Undefined instead of raising: make it raise."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    return value


def _strings(value: Any, path: str, limits: Limits, depth: int = 0) -> list[tuple[str, str]]:
    if depth > limits.json_depth:
        return [(path, _TOO_DEEP)]  # check() reports it; render() refuses it
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(v, f"{path}.{k}", limits, depth + 1)]
    if isinstance(value, list):
        return [
            s for i, v in enumerate(value) for s in _strings(v, f"{path}[{i}]", limits, depth + 1)
        ]
    return []
