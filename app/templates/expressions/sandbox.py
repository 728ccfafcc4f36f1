"""The bounded Jinja2 environment and the compiling of expressions.

The immutable sandbox with every operator intercepted and only the bounded filters, tests and
callables; the checker that validates a parsed expression (size, depth, constants, allowed
statements) and rewrites what Jinja would run unbounded; compiling, and the caches of
compiled programs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, NamedTuple, cast

from jinja2 import ChainableUndefined, StrictUndefined, Undefined, nodes, pass_context
from jinja2.parser import Parser
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.templates.expressions.budget import (
    ExpressionError,
    Limits,
    _budget,
    _check_int,
    _cost,
    _deep_cost,
    _quote,
    _to_text,
)
from app.templates.expressions.filters import _FILTERS, _TESTS
from app.templates.expressions.operations import (
    _FUNCTIONS,
    _HELPERS,
    _LOOP_METHODS,
    _MAPPING_METHODS,
    _SEQUENCE_METHODS,
    _STR_METHODS,
    _binop_check,
    _namespace,
    _range,
)

_SINGLE = re.compile(r"^\{\{(.*)\}\}$", re.DOTALL)
_MAX_NODES = 300  # nodes of one parsed expression string (compiling costs 25-50 us a node)
_MAX_DEPTH = 48  # nesting of one parsed expression string
_MAX_LOOP_DEPTH = 3  # `for` loops inside `for` loops


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


def _check_length(text: str, limits: Limits) -> None:
    if len(text) > limits.expression_chars:
        raise ExpressionError(
            f"the expression is {len(text)} characters; the limit is {limits.expression_chars}"
        )


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


def _compiled(source: str, single: bool, limits: Limits, lenient: bool = False) -> tuple[Any, int]:
    """`source` compiled (see _compile), from the cache for its length."""
    _check_length(source, limits)
    cache = _compiled_small if len(source) <= _SMALL_SOURCE else _compiled_large
    return cache(source, single, limits, lenient)


class Program(NamedTuple):
    """A compiled string holding expressions."""

    template: Any  # the compiled jinja2 Template
    single: bool  # exactly one `{{ expression }}`: its value keeps its type
    nodes: int  # parsed nodes: what compiling it cost


Programs = dict[str, Program]  # compiled expressions kept by a caller (see render)


def _program(text: str, limits: Limits, programs: Programs | None = None) -> Program:
    if programs is not None and text in programs:
        return programs[text]
    _check_length(text, limits)
    single = _SINGLE.match(text.strip())
    source = single.group(1).strip() if single and "{{" not in single.group(1) else text
    single_expression = source is not text
    template, count = _compiled(source, single_expression, limits)
    program = Program(template, single_expression, count)
    if programs is not None:
        programs[text] = program
    return program
