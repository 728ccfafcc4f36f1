"""The checks of a tenant's schema before it is stored: `schema_problems` reports a `$ref` or
`$dynamicRef` that is not a local fragment (or leads nowhere), a `$schema` other than Draft
2020-12, a pattern RE2 cannot compile (backreferences, lookaround, too large), then the first
meta-schema error.
"""

from __future__ import annotations

from typing import Any

import referencing.exceptions
import referencing.jsonschema
from jsonschema import Draft202012Validator

from app.jsonschemas.problems import Problem, _clip, _json_path, problem
from app.jsonschemas.validator import _NO_RETRIEVAL, PatternError, _Validator, compile_pattern

DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Keywords whose values are data, not schemas: a "$ref" inside them is never followed.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
# Keywords whose values map names (or patterns) to schemas: their keys are not keywords.
_NAME_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
_REFERENCES = ("$ref", "$dynamicRef")


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
