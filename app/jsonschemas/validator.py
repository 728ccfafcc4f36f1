"""The validator factory: one class for every JSON Schema in this codebase.

- No retrieval. Validators get an empty `referencing` registry: only references inside the
  schema (and the standard meta-schemas) resolve. jsonschema's default fetches any other `$ref`
  with urllib, `file://` included and without a timeout.
- Linear keywords. `uniqueItems` hashes a canonical form of each item (jsonschema compares
  unhashable items pairwise: quadratic); `pattern`, `patternProperties` and `format: regex` use
  RE2, which does not backtrack, within 1 MiB per pattern. `anyOf` and `oneOf` keep no tree of
  failed branches.
- One class throughout. jsonschema's `evolve` picks the validator class again from every
  subschema's `$schema`, which would trade the keywords above for the stock ones; ours keeps it.
- Bounded time. Every keyword first looks at the deadline of its thread (app/jsonschemas/pool.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from fractions import Fraction
from typing import Any

import re2
import referencing
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from jsonschema.protocols import Validator

from app.jsonschemas.pool import check_deadline
from app.jsonschemas.problems import _clip


class PatternError(ValueError):
    """A regular expression RE2 cannot compile (the message says why)."""


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
