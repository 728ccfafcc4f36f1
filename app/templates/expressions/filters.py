"""The filters and tests an expression may use, each wrapped to charge its work to the
budget and to refuse, before it runs, an argument or a result past the limits."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sized
from typing import Any, cast

from jinja2 import Undefined, pass_context
from jinja2.defaults import DEFAULT_FILTERS, DEFAULT_TESTS
from jinja2.filters import make_attrgetter
from jinja2.runtime import Context
from jinja2.utils import _PassArg

from app.templates.expressions.budget import (
    ExpressionError,
    _budget,
    _check_int,
    _cost,
    _deep_cost,
    _lazy,
    _materialize,
    _Measure,
    _to_text,
)
from app.templates.expressions.operations import (
    _compare_cost,
    _escape_size,
    _indent_size,
    _number_args,
    _percent_check,
    _replace_size,
    _round_args,
    _trim_args,
    _width,
)

_MAX_INDENT = 16  # `tojson(indent=...)`


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
