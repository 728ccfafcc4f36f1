"""Step input expressions: Jinja2's immutable sandbox with StrictUndefined.

Pure and deterministic (no clock, no I/O, no randomness), so the workflow evaluates them itself
and a replay gets the same values. A string that is exactly one `{{ expression }}` keeps the
expression's native type (a list stays a list); any other string renders to text.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

_SINGLE = re.compile(r"^\{\{(.*)\}\}$", re.DOTALL)
_ENV = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)


class ExpressionError(ValueError):
    """An expression that does not compile or cannot be evaluated in its context."""


@lru_cache(maxsize=1024)
def _compiled_expression(source: str) -> Any:
    return _ENV.compile_expression(source, undefined_to_none=False)


@lru_cache(maxsize=1024)
def _compiled_template(source: str) -> Any:
    return _ENV.from_string(source)


def check(value: Any) -> list[tuple[str, str]]:
    """Compile every expression in value; returns (json path, error) for each bad one."""
    problems: list[tuple[str, str]] = []
    for path, text in _strings(value, "$"):
        if "{{" not in text and "{%" not in text:
            continue
        try:
            single = _SINGLE.match(text.strip())
            if single and "{{" not in single.group(1):
                _compiled_expression(single.group(1).strip())
            else:
                _compiled_template(text)
        except TemplateError as exc:
            problems.append((path, str(exc)))
    return problems


def step_references(value: Any) -> set[str]:
    """Ids of steps an expression reads (`steps.x`, `steps['x']`); bad syntax reads none."""
    found: set[str] = set()
    for _, text in _strings(value, "$"):
        if "{{" not in text and "{%" not in text:
            continue
        try:
            tree = _ENV.parse(text)
        except TemplateError:
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
    return any("{{" in t or "{%" in t for _, t in _strings(value, "$"))


def wrap(expression: str) -> str:
    """A bare expression (`when`, `for_each`) as a single-expression string."""
    return "{{ " + expression + " }}"


def render(value: Any, context: dict[str, Any]) -> Any:
    """Evaluate every expression inside value (dicts and lists recursively)."""
    if isinstance(value, str):
        return _render_string(value, context)
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    return value


def _render_string(text: str, context: dict[str, Any]) -> Any:
    if "{{" not in text and "{%" not in text:
        return text
    try:
        single = _SINGLE.match(text.strip())
        if single and "{{" not in single.group(1):
            return _defined(_compiled_expression(single.group(1).strip())(**context))
        return _compiled_template(text).render(**context)
    except TemplateError as exc:
        raise ExpressionError(f"{text!r}: {exc}") from exc
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise ExpressionError(f"{text!r}: {type(exc).__name__}: {exc}") from exc


def _defined(value: Any) -> Any:
    """compile_expression hands back Undefined instead of raising: make it raise."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, list | tuple):
        for item in value:
            _defined(item)
    elif isinstance(value, dict):
        for item in value.values():
            _defined(item)
    return value


def _strings(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [s for i, v in enumerate(value) for s in _strings(v, f"{path}[{i}]")]
    return []
