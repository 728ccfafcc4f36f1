"""The bounded operators and calls of an expression.

Each refuses, before it runs, what would build a value past the size limit or do unbounded
work in one C call, and charges its work to the budget: arithmetic and `%`-formats, `~`,
comparisons, slices and loop iterables (which the rewritten tree calls), `range` and
`namespace`, the string, mapping, sequence and loop methods an expression may call, and the
argument checks the filters share with them.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sized
from typing import Any, cast

from jinja2 import Undefined, pass_context
from jinja2.runtime import Context
from jinja2.utils import Namespace

from app.templates.expressions.budget import (
    _CHARS_PER_STEP,
    _MAX_INT_BITS,
    Budget,
    ExpressionError,
    LimitExceeded,
    _budget,
    _cost,
    _deep_cost,
    _lazy,
    _materialize,
    _to_text,
)

# Arguments that size the work of one C call, which holds the GIL until it returns (no budget
# can interrupt it, and a validation thread would stall the API's event loop): bounded first.
_MAX_PRECISION = 100  # `round` computes 10**precision (10,000,000 digits: 5 s in one call)
_MAX_NUMBER_TEXT = 4400  # a string read by `int`/`float`/`filesizeformat` (4,096 bits + signs)
_MAX_STRIP_CHARS = 64  # `trim(chars)`, `strip(chars)`: each stripped character scans `chars`


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


# --------------------------------------------------------------------------------- arguments


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


# ---------------------------------------------------------- helpers of the rewritten tree


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
