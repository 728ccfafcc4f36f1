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

import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple, cast

from jinja2 import ChainableUndefined, StrictUndefined, Undefined, nodes, pass_context
from jinja2.defaults import DEFAULT_FILTERS, DEFAULT_TESTS
from jinja2.filters import make_attrgetter
from jinja2.parser import Parser
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, _PassArg

from app.executions.workflow_io import RunLimits

_json_string: Callable[[str], str] = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
_SINGLE = re.compile(r"^\{\{(.*)\}\}$", re.DOTALL)
_QUOTE_CHARS = 100  # how much of an expression or value an error message quotes
_MESSAGE_CHARS = 300  # the longest message an error carries
_CHARS_PER_STEP = 64  # characters produced or scanned that cost one unit of work
_MAX_INT_BITS = 4096  # integers an expression computes (about 1,200 digits)
_MAX_NODES = 300  # nodes of one parsed expression string (compiling costs 25-50 us a node)
_MAX_DEPTH = 48  # nesting of one parsed expression string
_MAX_LOOP_DEPTH = 3  # `for` loops inside `for` loops
_MAX_INDENT = 16  # `tojson(indent=...)`
# Arguments that size the work of one C call, which holds the GIL until it returns (no budget
# can interrupt it, and a validation thread would stall the API's event loop): bounded first.
_MAX_PRECISION = 100  # `round` computes 10**precision (10,000,000 digits: 5 s in one call)
_MAX_NUMBER_TEXT = 4400  # a string read by `int`/`float`/`filesizeformat` (4,096 bits + signs)
_MAX_STRIP_CHARS = 64  # `trim(chars)`, `strip(chars)`: each stripped character scans `chars`
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


# ------------------------------------------------------------------------- bounded operators


def _binop_check(budget: Budget, op: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would be too large, before computing it."""
    if op == "*":
        seq, count = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(seq, str | list | tuple) and isinstance(count, int):
            size = len(seq) * max(count, 0)
            if isinstance(seq, str):
                budget.chars(size)
            else:
                budget.items(size)
        elif isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > _MAX_INT_BITS + 1:
                raise LimitExceeded(f"numbers are limited to {_MAX_INT_BITS} bits")
    elif op == "+":
        if isinstance(left, str) and isinstance(right, str):
            budget.chars(len(left) + len(right))
        elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
            budget.items(len(left) + len(right))
    elif op == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            if right > _MAX_INT_BITS or left.bit_length() * right > _MAX_INT_BITS + 1:
                raise LimitExceeded(f"numbers are limited to {_MAX_INT_BITS} bits")
    elif op == "%" and isinstance(left, str):
        _percent_check(budget, left, right)


# The rest of a conversion after its `%` and key, as CPython reads it: flags, width, precision,
# a length modifier (ignored) and the conversion character. Everything in it is optional, so a
# match never backtracks: it reads each character once.
_PERCENT_SPEC = re.compile(r"[-+ #0]*(\*|[0-9]*)(?:\.(\*|[0-9]*))?[hlL]?(.?)", re.DOTALL)
_PERCENT_CONVERSIONS = frozenset("sradiouxXeEfFgGc")
_MAX_FORMAT_KEY = 200  # characters of a `%(key)s` key
_PERCENT_NUMBER = 320  # the longest number a conversion prints beyond its value's text (%f)


def _format_key_end(fmt: str, start: int) -> int:
    """Where the key of a `%(key)s` opened just before `start` ends (past its `)`). CPython
    balances parentheses inside a key; the search stops after _MAX_FORMAT_KEY characters, so
    a format of unclosed keys (`'%(' * 100000`) is read once, not from every `%(` to its end."""
    depth, pos = 1, start
    stop = min(len(fmt), start + _MAX_FORMAT_KEY + 1)
    while depth:
        close = fmt.find(")", pos, stop)
        if close < 0:
            raise LimitExceeded(f"a %-format key must close within {_MAX_FORMAT_KEY} characters")
        depth += fmt.count("(", pos, close) - 1
        pos = close + 1
    return pos


def _percent_specs(fmt: str) -> Iterator[tuple[str | None, str, str, str]]:
    """(key or None, width, precision, conversion) of each conversion in `fmt`, read left to
    right in one pass, as `str % args` reads them (`%%` prints `%` and is skipped)."""
    pos = fmt.find("%")
    while pos >= 0:
        pos += 1
        if fmt.startswith("%", pos):
            pos = fmt.find("%", pos + 1)
            continue
        key = None
        if fmt.startswith("(", pos):
            end = _format_key_end(fmt, pos + 1)
            key, pos = fmt[pos + 1 : end - 1], end
        spec = cast(re.Match[str], _PERCENT_SPEC.match(fmt, pos))
        width, precision, conversion = spec.groups(default="")
        yield key, width, precision, conversion
        pos = fmt.find("%", spec.end())


def _digits(text: str) -> int:
    return int(text or 0) if len(text) <= 18 else 10**18  # int() refuses over 4,300 digits


def _printed_size(value: Any, conversion: str, budget: Budget) -> int:
    """An upper bound of what one conversion prints of `value` (besides width and padding)."""
    text = _to_text(value, budget)
    if conversion not in "ra":
        return len(text)
    if not isinstance(value, str):  # data: repr() is str(), ascii() escapes what is not ASCII
        return len(text) if conversion == "r" or text.isascii() else 10 * len(text)
    if text.isprintable() and (conversion == "r" or text.isascii()):
        return 2 + len(text) + text.count("\\") + text.count("'")
    return 2 + 10 * len(text)  # `\U0001f600`: ten characters for one


def _percent_check(budget: Budget, fmt: str, args: Any) -> None:
    """`fmt % args` (and the `format` filter), refused before it runs when its result could
    pass the size limit: the format, then each conversion's width, precision and the text of
    the value it prints (a keyed value each time it is printed). The format is read once
    (linear, charged first); the count stops where `%` itself would raise."""
    budget.chars(len(fmt))
    budget.charge(fmt.count("%") // 4)  # one pass of the loop below per `%`
    size = len(fmt)
    positional = list(args) if isinstance(args, tuple) else [args]
    used = 0
    for key, width, precision, conversion in _percent_specs(fmt):
        if width == "*" or precision == "*":
            raise ExpressionError("`*` widths are not allowed in % formats")
        if conversion not in _PERCENT_CONVERSIONS:
            break  # `%` raises here: incomplete or unknown conversion
        if key is None:
            if used == len(positional):
                break  # `%` raises here: not enough arguments
            value, used = positional[used], used + 1
        else:
            try:
                value = args[key]
            except Exception:  # noqa: BLE001 - `%` raises the same here: nothing more is printed
                break
        size += _digits(width) + _digits(precision) + _PERCENT_NUMBER
        size += _printed_size(value, conversion, budget)
        if size > budget.limits.rendered_chars:
            budget.chars(size)
    budget.chars(size)


def _concat(budget: Budget, values: list[Any]) -> str:
    texts = [_to_text(v, budget) for v in values]
    budget.chars(sum(len(t) for t in texts))
    return "".join(texts)


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "lteq": operator.le,
    "gt": operator.gt,
    "gteq": operator.ge,
    "in": lambda a, b: a in b,
    "notin": lambda a, b: a not in b,
}


def _compare_cost(budget: Budget, op: str, left: Any, right: Any) -> int:
    if op in ("in", "notin"):
        if isinstance(right, str):
            return 1 + len(right) // _CHARS_PER_STEP
        if isinstance(right, Mapping):
            return 1 + _cost(left)
        return _deep_cost(right, budget)
    if isinstance(left, list | tuple | Mapping) and isinstance(right, list | tuple | Mapping):
        return min(_deep_cost(left, budget), _deep_cost(right, budget))
    return 1 + min(_cost(left), _cost(right))


# ----------------------------------------------------------------------------- filters/tests


def _wrap(
    fn: Callable[..., Any],
    *,
    cost: str = "shallow",
    text: bool = False,
    check: Callable[..., None] | None = None,
) -> Any:
    """A Jinja filter or test as a charged, never-folded (pass_context) function: lazy inputs
    are listed (counted), the input's cost is charged, text inputs are converted with bounds,
    `check(budget, value, *args, **kwargs)` refuses arguments that would size the work or the
    result past the limits before the filter runs, and a string result is checked against the
    size limit."""
    lead = _PassArg.from_obj(fn)

    @pass_context
    def run(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        if _lazy(value):
            value = _materialize(value, budget)
        if text and isinstance(value, Undefined):
            value = str(value)  # as Jinja does: raises, or empty in lenient text templates
        elif text and not isinstance(value, str):
            value = _to_text(value, budget)
        if cost == "shallow":
            budget.charge(1 + _cost(value))
        elif cost == "deep":
            budget.charge(_deep_cost(value, budget))
        elif cost == "sort":
            n = len(value) if isinstance(value, Sized) else 1
            budget.charge(_deep_cost(value, budget) * max(1, math.ceil(math.log2(n + 1))))
        elif cost in ("eq", "in"):
            budget.charge(_compare_cost(budget, cost, value, args[0] if args else None))
        else:
            budget.charge(1)
        if check is not None:
            check(budget, value, *args, **kwargs)
        if lead is _PassArg.context:
            result = fn(context, value, *args, **kwargs)
        elif lead is _PassArg.eval_context:
            result = fn(context.eval_ctx, value, *args, **kwargs)
        elif lead is _PassArg.environment:
            result = fn(context.environment, value, *args, **kwargs)
        else:
            result = fn(value, *args, **kwargs)
        if isinstance(result, str) and len(result) > budget.limits.rendered_chars:
            budget.chars(len(result))
        return _check_int(result)

    return run


def _text_filter(check: Callable[..., None]) -> Callable[[Callable[..., Any]], Any]:
    """A filter over text whose result size `check(budget, text, *args, **kwargs)` refuses
    before the filter runs."""

    def decorate(fn: Callable[..., Any]) -> Any:
        @pass_context
        def run(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
            budget = _budget()
            value = _to_text(value, budget)
            check(budget, value, *args, **kwargs)
            result = fn(value, *args, **kwargs)
            budget.chars(len(result))
            return result

        return run

    return decorate


def _width(budget: Budget, width: Any) -> None:
    if isinstance(width, int) and width > budget.limits.rendered_chars:
        budget.chars(width)


def _replace_size(budget: Budget, s: str, old: Any, new: Any, count: Any = None) -> None:
    if not (isinstance(old, str) and isinstance(new, str)):
        return  # str.replace raises TypeError itself
    hits = len(s) + 1 if old == "" else s.count(old)
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    budget.chars(len(s) + hits * max(0, len(new) - len(old)))


def _indent_size(budget: Budget, s: str, width: Any = 4, *_: Any, **__: Any) -> None:
    pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    _width(budget, pad)
    budget.chars(len(s) + (s.count("\n") + 1) * max(pad, 0))


def _escape_size(budget: Budget, s: str, *_: Any) -> None:
    budget.chars(len(s) + 4 * sum(s.count(c) for c in "<>&'\""))


def _round_args(budget: Budget, value: Any, precision: Any = 0, *_: Any, **__: Any) -> None:
    """`round` computes 10**precision (ceil, floor, and ints rounded to negative precision),
    and `value * 10**precision`, which repeats a string or list: a number and a bounded
    precision only. Refusals are limits, so check() reports them from constants."""
    if not isinstance(value, int | float):
        raise LimitExceeded(f"round needs a number, not a {type(value).__name__}")
    if not (isinstance(precision, int) and -_MAX_PRECISION <= precision <= _MAX_PRECISION):
        raise LimitExceeded(
            f"round precision must be a whole number from {-_MAX_PRECISION} to {_MAX_PRECISION}"
        )


def _number_args(budget: Budget, value: Any, *_: Any, **__: Any) -> None:
    """`int`, `float`, `filesizeformat` read a string as a number: only one that could be a
    number within the integer limit (a longer text is refused rather than parsed)."""
    if isinstance(value, str) and len(value) > _MAX_NUMBER_TEXT:
        raise LimitExceeded(
            f"a number is written in at most {_MAX_NUMBER_TEXT} characters, not {len(value)}"
        )


def _strip_chars(chars: Any) -> None:
    """str.strip(chars) scans `chars` for every character it strips: 1,000,000 characters
    stripped with a 1,000,000-character `chars` take 8 s in one call."""
    if isinstance(chars, str) and len(chars) > _MAX_STRIP_CHARS:
        raise LimitExceeded(
            f"strip takes at most {_MAX_STRIP_CHARS} characters to strip, not {len(chars)}"
        )


def _trim_args(budget: Budget, value: Any, chars: Any = None, *_: Any, **__: Any) -> None:
    _strip_chars(chars)


@pass_context
def _join(context: Context, value: Any, d: Any = "", attribute: Any = None) -> str:
    budget = _budget()
    items = _materialize(value, budget) if _lazy(value) else value
    # A string is joined character by character: one unit each, like a list's items.
    budget.charge(1 + (len(items) if isinstance(items, str) else _cost(items)))
    if attribute is not None:
        getter = make_attrgetter(context.environment, attribute)
        items = [getter(item) for item in items]
    texts = [_to_text(item, budget) for item in items]
    sep = _to_text(d, budget)
    budget.chars(sum(len(t) for t in texts) + len(sep) * max(len(texts) - 1, 0))
    return sep.join(texts)


@pass_context
def _tojson(context: Context, value: Any, indent: Any = None) -> Any:
    budget = _budget()
    if indent is not None and not (isinstance(indent, int) and 0 <= indent <= _MAX_INDENT):
        raise ExpressionError(f"tojson indent must be from 0 to {_MAX_INDENT}")
    measure = _Measure(budget, as_json=True)
    measure(value)
    if measure.lazy:
        raise ExpressionError("a range or generator is not JSON (add `| list`)")
    if indent is not None:  # indentation grows with depth: count it piece by piece
        encoder = json.JSONEncoder(sort_keys=True, indent=indent)
        size = 0
        for chunk in encoder.iterencode(value):
            budget.charge(1)
            size += len(chunk)
            if size > budget.limits.rendered_chars:
                budget.chars(size)
    result = DEFAULT_FILTERS["tojson"](context.eval_ctx, value, indent)
    budget.chars(len(result))  # the HTML-safe escapes of <>&' may have grown it
    return result


@pass_context
def _format(context: Context, value: Any, *args: Any, **kwargs: Any) -> str:
    budget = _budget()
    fmt = _to_text(value, budget)
    if args and kwargs:
        raise ExpressionError("format takes positional or keyword values, not both")
    values = kwargs or args
    _percent_check(budget, fmt, values)
    return fmt % values


@pass_context
def _string(context: Context, value: Any) -> str:
    return _to_text(value, _budget())


_SUM = _wrap(DEFAULT_FILTERS["sum"])


@pass_context
def _sum(context: Context, value: Any, attribute: Any = None, start: Any = 0) -> Any:
    # Only numbers: a list `start` would make the sum quadratic.
    if isinstance(start, bool) or not isinstance(start, int | float):
        raise ExpressionError("sum adds numbers only")
    return _SUM(context, value, attribute, start)


def _replace(s: str, old: Any, new: Any, count: Any = None) -> str:
    return s.replace(old, new, -1 if count is None else count)


# Filters an expression may use; the others (random, pprint, urlize, wordwrap, batch, slice,
# striptags, xmlattr, ...) are nondeterministic, amplify their input or scan it with regexes.
_SHALLOW = ("list", "reverse", "map", "select", "reject", "selectattr", "rejectattr", "items")
# Every argument that sizes work or a result is bounded before the filter runs: see the
# `check`s here, _text_filter's, and the filters written out below (join, tojson, format, sum).
_ONE = ("abs", "attr", "count", "d", "default", "first", "last", "length")
_NUMBERS = ("filesizeformat", "float", "int")
_FILTERS: dict[str, Any] = {
    **{name: _wrap(DEFAULT_FILTERS[name]) for name in _SHALLOW},
    **{name: _wrap(DEFAULT_FILTERS[name], cost="one") for name in _ONE},
    **{name: _wrap(DEFAULT_FILTERS[name], cost="one", check=_number_args) for name in _NUMBERS},
    "round": _wrap(DEFAULT_FILTERS["round"], cost="one", check=_round_args),
    **{
        name: _wrap(DEFAULT_FILTERS[name], text=True)
        for name in ("capitalize", "lower", "upper", "title", "truncate")
    },
    "trim": _wrap(DEFAULT_FILTERS["trim"], text=True, check=_trim_args),
    **{name: _wrap(DEFAULT_FILTERS[name], cost="deep") for name in ("min", "max", "unique")},
    **{name: _wrap(DEFAULT_FILTERS[name], cost="sort") for name in ("sort", "dictsort")},
    "groupby": _wrap(DEFAULT_FILTERS["groupby"], cost="sort"),
    "center": _text_filter(lambda b, s, width=80: _width(b, width))(DEFAULT_FILTERS["center"]),
    "indent": _text_filter(_indent_size)(DEFAULT_FILTERS["indent"]),
    "e": _text_filter(_escape_size)(DEFAULT_FILTERS["e"]),
    "escape": _text_filter(_escape_size)(DEFAULT_FILTERS["escape"]),
    "safe": _text_filter(lambda b, s: b.chars(len(s)))(DEFAULT_FILTERS["safe"]),
    "replace": _text_filter(_replace_size)(_replace),
    "format": _format,
    "join": _join,
    "string": _string,
    "sum": _sum,
    "tojson": _tojson,
}
_EQ_TESTS = {"==", "!=", "<", "<=", ">", ">=", "eq", "ne", "lt", "le", "gt", "ge", "equalto"}
_EQ_TESTS |= {"sameas", "greaterthan", "lessthan"}


def _test_cost(name: str) -> str:
    return "in" if name == "in" else "eq" if name in _EQ_TESTS else "one"


# `lower` and `upper` test str(value): bounded text first (a list repeated in a list would
# print as gigabytes).
_TESTS: dict[str, Any] = {
    name: _wrap(
        cast(Callable[..., Any], test), cost=_test_cost(name), text=name in ("lower", "upper")
    )
    for name, test in DEFAULT_TESTS.items()
}


# Internal helpers the rewritten tree calls (as filters: never folded, given the context). The
# names start with `_`, which expressions may not use, so only the rewrite reaches them.
@pass_context
def _h_concat(context: Context, values: list[Any]) -> str:
    return _concat(_budget(), values)


@pass_context
def _h_compare(context: Context, operands: list[Any], ops: tuple[str, ...]) -> bool:
    budget = _budget()
    for i, op in enumerate(ops):
        left, right = operands[i], operands[i + 1]
        if op in ("in", "notin") and _lazy(right):
            right = _materialize(right, budget)
        budget.charge(_compare_cost(budget, op, left, right))
        if not _COMPARE[op](left, right):
            return False
    return True


@pass_context
def _h_slice(context: Context, value: Any, start: Any, stop: Any, step: Any) -> Any:
    budget = _budget()
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, Sized) and not isinstance(value, Mapping):
        picked = len(range(*slice(start, stop, step).indices(len(value))))
        budget.charge(1 + (picked // _CHARS_PER_STEP if isinstance(value, str) else picked))
    return value[start:stop:step]


@pass_context
def _h_loop(context: Context, value: Any) -> Iterator[Any]:
    """A `for` loop's iterable: one unit of work per iteration."""
    budget = _budget()
    for item in value:
        budget.charge(1)
        yield item


_HELPERS = {"_concat": _h_concat, "_compare": _h_compare, "_slice": _h_slice, "_loop": _h_loop}


def _range(*args: Any) -> range:
    budget = _budget()
    budget.charge(1)
    numbers = range(*args)
    if len(numbers) > budget.limits.steps:
        raise LimitExceeded(f"range of {len(numbers)} numbers; the limit is {budget.limits.steps}")
    return numbers


def _namespace(*args: Any, **kwargs: Any) -> Namespace:
    _budget().charge(1 + sum(_cost(a) for a in args) + len(kwargs))
    return Namespace(*args, **kwargs)


# ------------------------------------------------------------------------- method calls


def _split(budget: Budget, s: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    name = kwargs.pop("__name")
    sep = args[0] if args else kwargs.pop("sep", None)
    maxsplit = args[1] if len(args) > 1 else kwargs.pop("maxsplit", -1)
    if kwargs or len(args) > 2 or not isinstance(maxsplit, int):
        raise ExpressionError(f"{name}() takes a separator and a count")
    budget.charge(1 + len(s) // _CHARS_PER_STEP)
    # Split at most as many times as the budget allows: a longer result would be refused.
    cap = budget.left if maxsplit < 0 else min(maxsplit, budget.left)
    parts = getattr(s, name)(sep, cap)
    budget.charge(len(parts))
    return parts


def _str_join(budget: Budget, s: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    kwargs.pop("__name")
    if len(args) != 1 or kwargs:
        raise ExpressionError("join() takes one list")
    items = _materialize(args[0], budget) if _lazy(args[0]) else args[0]
    budget.charge(1 + (len(items) if isinstance(items, str) else _cost(items)))
    if not all(isinstance(i, str) for i in items):
        raise ExpressionError("join() needs a list of strings")
    budget.chars(sum(len(i) for i in items) + len(s) * max(len(items) - 1, 0))
    return s.join(items)


def _str_call(budget: Budget, s: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    name = kwargs.pop("__name")
    scanned = len(s) + sum(len(a) for a in args if isinstance(a, str))
    if name == "replace":
        _replace_size(budget, s, *args, **kwargs)
    elif name in ("strip", "lstrip", "rstrip") and args:
        _strip_chars(args[0])
    elif name in ("center", "ljust", "rjust", "zfill") and args:
        _width(budget, args[0])
    elif name in _CASE_METHODS:
        budget.chars(3 * len(s) if 3 * len(s) <= budget.limits.rendered_chars else len(s))
    budget.charge(1 + scanned // _CHARS_PER_STEP)
    result = getattr(s, name)(*args, **kwargs)
    if isinstance(result, str) and len(result) > budget.limits.rendered_chars:
        budget.chars(len(result))
    return result


_CASE_METHODS = {"lower", "upper", "title", "capitalize", "casefold", "swapcase"}
_STR_METHODS: dict[str, Callable[[Budget, str, tuple[Any, ...], dict[str, Any]], Any]] = {
    "split": _split,
    "rsplit": _split,
    "join": _str_join,
    **{
        name: _str_call
        for name in (
            *_CASE_METHODS,
            *("strip", "lstrip", "rstrip", "startswith", "endswith", "replace", "find"),
            *("rfind", "index", "rindex", "count", "removeprefix", "removesuffix"),
            *("partition", "rpartition", "center", "ljust", "rjust", "zfill", "isdigit"),
            *("isalpha", "isalnum", "isspace", "islower", "isupper", "isdecimal", "isnumeric"),
        )
    },
}
_MAPPING_METHODS = {"get", "keys", "values", "items"}
_SEQUENCE_METHODS = {"index", "count"}
_LOOP_METHODS = {"cycle", "changed"}
_FUNCTIONS = (_range, _namespace)


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox with every operator intercepted (so never folded while compiling)
    and bounded, bounded filters and tests only, and an allow list of callables."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    intercepted_unops = frozenset({"+", "-"})

    def __init__(self, undefined: type[Undefined] = StrictUndefined) -> None:
        super().__init__(
            undefined=undefined,
            autoescape=False,
            keep_trailing_newline=True,
            finalize=_finalize,
            # Nothing here can be folded (see the module docstring), yet Jinja's optimizer
            # would still try, once for every node and again for each node above it: compile
            # time quadratic in nesting (measured: 100-125 us a node 45 levels deep, 25-45 us
            # without it).
            optimized=False,
        )
        self.filters = {**_FILTERS, **_HELPERS}
        self.tests = dict(_TESTS)
        self.globals = {"range": _range, "namespace": _namespace}

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.charge(1)
        _binop_check(budget, operator, left, right)
        return _check_int(self.binop_table[operator](left, right))

    def call_unop(self, context: Context, operator: str, arg: Any) -> Any:
        _budget().charge(1)
        return self.unop_table[operator](arg)

    def getitem(self, obj: Any, argument: Any) -> Any:
        # Never folded while compiling (keeps huge constant lookups out of the code); one unit
        # a lookup: an `attribute='a.a.a...'` of map/sort/groupby looks up each part per item
        # (400,000 parts over 1,000 items took 62 s in a lenient text template).
        _budget().charge(1)
        return super().getitem(obj, argument)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _budget().charge(1)
        return super().getattr(obj, attribute)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        budget = _budget()
        budget.charge(1)
        kwargs.pop("_loop_vars", None)  # Jinja's scoping hints, for Context.call only
        kwargs.pop("_block_vars", None)
        if isinstance(__obj, Undefined):
            __obj._fail_with_undefined_error()
        if any(__obj is f for f in _FUNCTIONS):
            return __obj(*args, **kwargs)
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", type(__obj).__name__)
        if isinstance(owner, str) and name in _STR_METHODS:
            return _STR_METHODS[name](budget, owner, args, {**kwargs, "__name": name})
        if isinstance(owner, Mapping) and name in _MAPPING_METHODS:
            budget.charge(1 + sum(_cost(a) for a in args))
            return __obj(*args, **kwargs)
        if isinstance(owner, list | tuple) and name in _SEQUENCE_METHODS:
            budget.charge(_deep_cost(owner, budget))
            return __obj(*args, **kwargs)
        if isinstance(owner, LoopContext) and name in _LOOP_METHODS:
            return __obj(*args, **kwargs)
        raise ExpressionError(f"calling {name}() is not allowed in expressions")


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    """Every `{{ ... }}` printed in a text: bounded conversion to text, charged."""
    budget = _budget()
    if isinstance(value, str):
        budget.chars(len(value))
        return value
    if isinstance(value, ChainableUndefined):  # lenient text templates: missing is empty
        return ""
    return _to_text(value, budget)


_ENV = _BoundedEnvironment()
# Tenant text templates that merge optional fields (AI personalisation): a missing name or
# field, even a chained one like `user.address.city`, renders as empty. Bounded the same way.
_LENIENT_ENV = _BoundedEnvironment(undefined=ChainableUndefined)


# ------------------------------------------------------------------------ checking the tree

# Statements that can be bounded; macros, call blocks, filter/set blocks, blocks, includes,
# imports, extends and autoescape switches are refused.
_ALLOWED_NODES = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.If,
    nodes.For,
    nodes.Assign,
    nodes.With,
    nodes.Name,
    nodes.NSRef,
    nodes.Const,
    nodes.Tuple,
    nodes.List,
    nodes.Dict,
    nodes.Pair,
    nodes.Keyword,
    nodes.CondExpr,
    nodes.BinExpr,
    nodes.UnaryExpr,
    nodes.Concat,
    nodes.Compare,
    nodes.Operand,
    nodes.Getattr,
    nodes.Getitem,
    nodes.Slice,
    nodes.Filter,
    nodes.Test,
    nodes.Call,
)


class _Checker:
    """Validates a parsed expression and rewrites the parts that Jinja would run unbounded."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.count = 0

    def visit(self, node: nodes.Node, depth: int = 0, loops: int = 0) -> nodes.Node:
        self.count += 1
        if self.count > _MAX_NODES:
            raise ExpressionError(f"the expression has more than {_MAX_NODES} parts")
        if depth > _MAX_DEPTH:
            raise ExpressionError(f"the expression nests deeper than {_MAX_DEPTH}")
        if not isinstance(node, _ALLOWED_NODES):
            raise ExpressionError(f"{type(node).__name__} is not allowed in expressions")
        self._check(node)
        if isinstance(node, nodes.For):
            if node.recursive:
                raise ExpressionError("recursive loops are not allowed in expressions")
            if loops >= _MAX_LOOP_DEPTH:
                raise ExpressionError(f"loops nest deeper than {_MAX_LOOP_DEPTH}")
        inner = loops + 1 if isinstance(node, nodes.For) else loops
        for field in node.fields:
            child = getattr(node, field, None)
            if isinstance(child, nodes.Node):
                setattr(node, field, self.visit(child, depth + 1, inner))
            elif isinstance(child, list):
                setattr(node, field, [self._item(c, depth, inner) for c in child])
        return self._rewrite(node)

    def _item(self, child: Any, depth: int, loops: int) -> Any:
        return self.visit(child, depth + 1, loops) if isinstance(child, nodes.Node) else child

    def _check(self, node: nodes.Node) -> None:
        names = [getattr(node, f, "") for f in ("name", "attr")]
        if isinstance(node, nodes.Name | nodes.NSRef | nodes.Getattr):
            for name in names:
                if name.startswith("_"):
                    raise ExpressionError(f"names starting with `_` are not allowed: {name!r}")
        if isinstance(node, nodes.Filter) and node.name not in _FILTERS:
            raise ExpressionError(f"no filter named {_quote(node.name)} in expressions")
        if isinstance(node, nodes.Test) and node.name not in _TESTS:
            raise ExpressionError(f"no test named {_quote(node.name)} in expressions")
        if isinstance(node, nodes.Filter | nodes.Test | nodes.Call) and (
            node.dyn_args is not None or node.dyn_kwargs is not None
        ):
            raise ExpressionError("`*args` and `**kwargs` are not allowed in expressions")
        if isinstance(node, nodes.Const):
            _check_int(node.value)

    def _rewrite(self, node: nodes.Node) -> nodes.Node:
        lineno = node.lineno
        if isinstance(node, nodes.Concat):
            return _helper("_concat", nodes.List(node.nodes, lineno=lineno), [])
        if isinstance(node, nodes.Compare):
            operands = nodes.List([node.expr, *(o.expr for o in node.ops)], lineno=lineno)
            ops = nodes.Const(tuple(o.op for o in node.ops), lineno=lineno)
            return _helper("_compare", operands, [ops])
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Slice):
            bounds = [node.arg.start, node.arg.stop, node.arg.step]
            args = [b if b is not None else nodes.Const(None, lineno=lineno) for b in bounds]
            return _helper("_slice", cast(nodes.Expr, node.node), args)
        if isinstance(node, nodes.For):
            node.iter = _helper("_loop", cast(nodes.Expr, node.iter), [])
        return node


def _helper(name: str, value: nodes.Expr, args: list[nodes.Expr]) -> nodes.Filter:
    return nodes.Filter(value, name, args, [], None, None, lineno=value.lineno)


def _compile(source: str, single: bool, limits: Limits, lenient: bool = False) -> tuple[Any, int]:
    """Parse, check, rewrite and compile; a single expression evaluates into `result`.
    Returns the compiled template and the number of parsed nodes (what compiling it cost)."""
    env = _LENIENT_ENV if lenient else _ENV
    if len(source) > limits.expression_chars:
        raise ExpressionError(
            f"the expression is {len(source)} characters; the limit is {limits.expression_chars}"
        )
    if single:
        parser = Parser(env, source, state="variable")
        expr = parser.parse_expression()
        if not parser.stream.eos:
            raise ExpressionError("unexpected text after the expression")
        tree = nodes.Template([nodes.Assign(nodes.Name("result", "store"), expr)], lineno=1)
    else:
        tree = env.parse(source)
    checker = _Checker(limits)
    checked = cast(nodes.Template, checker.visit(tree))
    checked.set_environment(env)
    return env.from_string(checked), checker.count


# Only sources within the size limit reach these caches, and only the ones that compile are
# kept: they hold programs (about 20 bytes per source character), never values. Long sources
# have their own, smaller cache so that a tenant validating many of them cannot grow memory.
_SMALL_SOURCE = 512


@lru_cache(maxsize=1024)
def _compiled_small(
    source: str, single: bool, limits: Limits, lenient: bool = False
) -> tuple[Any, int]:
    return _compile(source, single, limits, lenient)


@lru_cache(maxsize=128)
def _compiled_large(
    source: str, single: bool, limits: Limits, lenient: bool = False
) -> tuple[Any, int]:
    return _compile(source, single, limits, lenient)


class Program(NamedTuple):
    """A compiled string holding expressions."""

    template: Any  # the compiled jinja2 Template
    single: bool  # exactly one `{{ expression }}`: its value keeps its type
    nodes: int  # parsed nodes: what compiling it cost


Programs = dict[str, Program]  # compiled expressions kept by a caller (see render)


def _program(text: str, limits: Limits, programs: Programs | None = None) -> Program:
    if programs is not None and text in programs:
        return programs[text]
    if len(text) > limits.expression_chars:
        raise ExpressionError(
            f"the expression is {len(text)} characters; the limit is {limits.expression_chars}"
        )
    single = _SINGLE.match(text.strip())
    source = single.group(1).strip() if single and "{{" not in single.group(1) else text
    cache = _compiled_small if len(source) <= _SMALL_SOURCE else _compiled_large
    single_expression = source is not text
    template, count = cache(source, single_expression, limits)
    program = Program(template, single_expression, count)
    if programs is not None:
        programs[text] = program
    return program


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
        cache = _compiled_small if len(source) <= _SMALL_SOURCE else _compiled_large
        program, _ = cache(source, False, limits, lenient)
        parts, size = [], 0
        for part in program.root_render_func(program.new_context(dict(context))):
            size += len(part)
            if size > limits.rendered_chars:
                budget.chars(size)
            parts.append(part)
        return "".join(parts)
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
        parts, size = [], 0
        for part in program.root_render_func(ctx):
            size += len(part)
            if size > budget.limits.rendered_chars:
                budget.chars(size)
            parts.append(part)
        return "".join(parts)
    except Exception as exc:  # noqa: BLE001 - whatever a tenant's expression raises is its error
        raise _failure(text, exc) from None


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
