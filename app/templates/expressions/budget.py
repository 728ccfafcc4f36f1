"""What an expression may cost, and the accounting of it while it renders.

Limits (the configured values) and Budget (the work left for one rendering, or an execution's
pool); the ContextVar through which every bounded helper finds the budget of the rendering in
progress; the errors; and the bounded measures of values: their cost in work, their size as
text or JSON (found without building them), and their conversion to text or to plain data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2 import Undefined
from jinja2.utils import Namespace

from app.executions.workflow_io import RunLimits

_json_string: Callable[[str], str] = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
_QUOTE_CHARS = 100  # how much of an expression or value an error message quotes
_MESSAGE_CHARS = 300  # the longest message an error carries
_CHARS_PER_STEP = 64  # characters produced or scanned that cost one unit of work
_MAX_INT_BITS = 4096  # integers an expression computes (about 1,200 digits)


@dataclass(frozen=True)
class Limits:
    """What one expression may cost: the configured values (Settings), or in the workflow,
    which has no Settings, those its RunInput carries (RunLimits)."""

    expression_chars: int  # one string holding expressions
    rendered_chars: int  # what one expression (or one value in it) may produce
    steps: int  # units of work of one rendering
    json_depth: int  # nesting of the values rendered

    @classmethod
    def of(cls, source: Any) -> Limits:
        """From Settings or RunLimits (any object with the `max_*` names of app.settings)."""
        return cls(
            expression_chars=source.max_expression_chars,
            rendered_chars=source.max_rendered_chars,
            steps=source.max_expression_steps,
            json_depth=source.max_json_depth,
        )


DEFAULT_LIMITS = Limits.of(RunLimits())


class ExpressionError(ValueError):
    """An expression that does not compile, cannot be evaluated in its context, or would
    exceed a limit."""


class LimitExceeded(ExpressionError):
    """An expression that would exceed a limit: `work` when it ran out of steps, else a value
    it would build is too large."""

    def __init__(self, message: str, *, work: bool = False) -> None:
        super().__init__(message)
        self.work = work


class Budget:
    """Units of work left for one rendering, or for all the renderings of an execution (a
    pool: each rendering then gets its own budget, at most what the pool has left)."""

    __slots__ = ("left", "limits", "refusal")

    def __init__(self, limits: Limits = DEFAULT_LIMITS, steps: int | None = None) -> None:
        self.limits = limits
        self.left = limits.steps if steps is None else steps
        self.refusal = f"the expression does more work than allowed ({self.left} steps)"

    def charge(self, units: int) -> None:
        self.left -= units
        if self.left < 0:
            raise LimitExceeded(self.refusal, work=True)

    def chars(self, count: int) -> None:
        """Produce or scan `count` characters; refused above the rendered-size limit."""
        if count > self.limits.rendered_chars:
            self.too_large(f"{count} characters")
        self.charge(1 + count // _CHARS_PER_STEP)

    def items(self, count: int) -> None:
        """Build a list of `count` items."""
        if count > self.limits.steps:
            self.too_large(f"{count} items")
        self.charge(count)

    def too_large(self, size: str) -> None:
        raise LimitExceeded(
            f"the result would be {size}; the limit is {self.limits.rendered_chars} characters"
            f" and {self.limits.steps} steps of work"
        )


# The budget of the rendering in progress. Rendering is synchronous, so a ContextVar set around
# it is visible to every helper the compiled template calls, and to nothing else.
_BUDGET: ContextVar[Budget | None] = ContextVar("expression_budget", default=None)


def _budget() -> Budget:
    budget = _BUDGET.get()
    if budget is None:  # only while compiling: Jinja then skips folding this node
        raise ExpressionError("not rendering")
    return budget


def _quote(value: Any) -> str:
    text = value if isinstance(value, str) else type(value).__name__
    return repr(text if len(text) <= _QUOTE_CHARS else text[:_QUOTE_CHARS] + "...")


def _short(message: str) -> str:
    return message if len(message) <= _MESSAGE_CHARS else message[:_MESSAGE_CHARS] + "..."


def _failure(text: str, exc: BaseException) -> ExpressionError:
    if isinstance(exc, LimitExceeded):
        return LimitExceeded(_short(f"{_quote(text)}: {exc}"), work=exc.work)
    if isinstance(exc, ExpressionError):
        reason = str(exc)
    elif isinstance(exc, RecursionError):
        reason = "the expression nests too deeply"
    elif isinstance(exc, MemoryError):
        reason = "the expression needs too much memory"
    else:
        name = type(exc).__name__
        detail = str(exc)[:150]  # messages may quote a value: keep it short
        reason = detail if name.endswith(("SyntaxError", "UndefinedError")) else f"{name}: {detail}"
    return ExpressionError(_short(f"{_quote(text)}: {reason}"))


# ---------------------------------------------------------------------------- sizes and costs


def _cost(value: Any) -> int:
    """Work to touch a value once, shallowly: its items, or its characters / 64."""
    if isinstance(value, str):
        return len(value) // _CHARS_PER_STEP
    if isinstance(value, Sized):
        return len(value)
    return 0


def _deep_cost(value: Any, budget: Budget) -> int:
    """Work to compare or serialise a value: every item at every level (a list repeated
    inside a list counts each time). Stops, refused, as soon as it passes the budget left."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        total += 1 + (len(item) // _CHARS_PER_STEP if isinstance(item, str) else 0)
        if total > budget.left:
            budget.charge(total)
        if type(item) is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
        elif type(item) is list or type(item) is tuple:
            stack.extend(item)
    return total


def _lazy(value: Any) -> bool:
    return isinstance(value, Iterator) and not isinstance(value, str | Mapping)


def _materialize(value: Iterable[Any], budget: Budget) -> list[Any]:
    """A lazy iterable (map, select, items...) as a list, one unit per item."""
    out = []
    for item in value:
        budget.charge(1)
        out.append(item)
    return out


def _check_int(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
        raise LimitExceeded(f"numbers are limited to {_MAX_INT_BITS} bits")
    return value


class _Measure:
    """An upper bound of a value's length as text (`str()`) or as JSON, found without building
    it: each distinct object is measured once, so a list repeated inside a list (whose text
    would be huge) costs no more than the list itself. Refused as soon as the bound passes
    the rendered-size limit, and for anything that is not data."""

    def __init__(self, budget: Budget, as_json: bool) -> None:
        self.budget = budget
        self.as_json = as_json
        self.limit = budget.limits.rendered_chars
        self.depth_limit = 2 * budget.limits.json_depth  # step values nest json_depth at most
        self.seen: dict[int, int] = {}
        self.visits = 0
        self.lazy = False  # holds ranges or iterators (to list before it leaves the sandbox)

    def __call__(self, value: Any) -> int:
        size = self.size(value, 0, True)
        self.budget.charge(self.visits // 8 + size // _CHARS_PER_STEP)
        return size

    def size(self, item: Any, depth: int, top: bool = False) -> int:
        if isinstance(item, bool) or item is None:
            return 5
        if isinstance(item, int):
            return item.bit_length() // 3 + 2
        if isinstance(item, float):
            return 24
        key = id(item)
        if key in self.seen:
            return self.seen[key]
        if depth > self.depth_limit:
            raise ExpressionError(f"the value nests deeper than {self.depth_limit}")
        if isinstance(item, str):
            size = self._text(item, top)
        elif isinstance(item, list | tuple):
            self.visits += len(item)
            size = 2 + sum(self.size(sub, depth + 1) + 2 for sub in item)
        elif isinstance(item, dict):
            self.visits += len(item)
            size = 2 + sum(self._key(k) + self.size(v, depth + 1) + 4 for k, v in item.items())
        elif isinstance(item, Undefined):
            item._fail_with_undefined_error()
        elif isinstance(item, range) or _lazy(item):
            self.lazy = True
            size = 2 + (len(item) * 24 if isinstance(item, range) else 0)
        elif isinstance(item, Namespace) and not self.as_json:
            size = 12 + self.size(object.__getattribute__(item, "_Namespace__attrs"), depth + 1)
        else:
            # Methods, loops, namespaces: their text carries a memory address, which would
            # differ on a replay. They are not data.
            raise ExpressionError(f"a {type(item).__name__} is not data")
        if size > self.limit:
            self.budget.too_large(f"more than {self.limit} characters")
        self.seen[key] = size
        return size

    def _text(self, s: str, top: bool) -> int:
        if len(s) > self.limit:
            self.budget.too_large(f"{len(s)} characters")
        if top:
            return len(s)
        if self.as_json:  # ASCII JSON, like Temporal's payloads and `tojson`
            if s.isascii() and s.isprintable():
                return len(s) + 2 + s.count('"') + s.count("\\")
            return len(_json_string(s))
        if s.isprintable():
            return len(s) + 2 + s.count("'") + s.count("\\")
        return len(repr(s))

    def _key(self, key: Any) -> int:
        if isinstance(key, str):
            return self.size(key, 0)
        if isinstance(key, int | float | bool) or key is None:
            return self.size(key, 0) + 2
        if self.as_json:
            raise ExpressionError(f"a mapping key must be a string, not a {type(key).__name__}")
        return self.size(key, 0)


def _to_text(value: Any, budget: Budget) -> str:
    """str(value), refused (before it is built) when longer than the rendered-size limit."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) or value is None:  # bool too; ints are bounded
        return str(value)
    measure = _Measure(budget, as_json=False)
    measure(value)
    if measure.lazy:
        raise ExpressionError("a range or generator cannot be printed (add `| list`)")
    text = str(value)
    budget.chars(len(text))
    return text


def _plain(value: Any, budget: Budget) -> Any:
    """A single expression's native result as data the workflow can hand to an activity:
    measured as JSON (refused above the rendered-size limit) and with ranges and lazy
    iterables (map, select...) turned into lists."""
    measure = _Measure(budget, as_json=True)
    measure(value)
    if not measure.lazy:
        return str(value) if isinstance(value, str) else value
    return _plain(_listed(value, budget), budget)


def _listed(value: Any, budget: Budget) -> Any:
    if isinstance(value, range) or _lazy(value):
        return [_listed(v, budget) for v in _materialize(value, budget)]
    if isinstance(value, list | tuple):
        return [_listed(v, budget) for v in value]
    if isinstance(value, dict):
        return {k: _listed(v, budget) for k, v in value.items()}
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple | range):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def json_size(value: Any, limit: int, *, separators: tuple[str, str] = (",", ":")) -> int:
    """Length of `value` as JSON (ASCII, like Temporal's payloads), computed piece by piece:
    stops as soon as it passes `limit` (returns a number above it), so a huge value is never
    serialised whole."""
    encoder = json.JSONEncoder(separators=separators, default=_json_default)
    size = 0
    for chunk in encoder.iterencode(value):
        size += len(chunk)
        if size > limit:
            break
    return size
