"""Problems: what is wrong with a value or a schema, as `{path, message}` dicts, clipped
(jsonschema quotes the instance in its messages, and it may be huge), sorted by path, at most
MAX_PROBLEMS listed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import referencing.exceptions
from jsonschema import ValidationError
from jsonschema.exceptions import UnknownType
from jsonschema.protocols import Validator

Problem = dict[str, str]

MAX_PROBLEMS = 100  # problems listed for one value; the rest are counted
MAX_MESSAGE_CHARS = 300  # jsonschema quotes the instance in messages, and it may be huge
_MAX_KEPT_ERRORS = 10 * MAX_PROBLEMS  # sorted by path before the first MAX_PROBLEMS are listed


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
