"""`data.*` step activities: deterministic, pure transforms over JSON values.

| activity | input | output |
|---|---|---|
| data.transform | data (object or list of objects), ops [...] | the records after the ops |
| data.aggregate | data, fields [...], weight? | {count, <field>: {sum, min, max, avg}} |
| data.parse | text, format csv or json, delimiter? | list of row objects (csv) or the value |
| data.map | data (list of objects), fields {out: "in.path"} | list of new objects |
| data.filter | data, where {field: value} or [{field, op, value}] | the matching records |
| data.diff | source, target (lists of objects), key, ignore? | {added, removed, changed, ...} |

Field names may be dotted paths into nested objects (`customer.email`). The plain functions
(`transform`, `aggregate`, ...) hold the logic; `ACTIVITIES` wraps them for the registry.
Invalid input raises StepInputError, which the worker turns into a non-retryable failure.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from app.steps.base import (
    StepActivity,
    StepContext,
    StepInputError,
    StepInputRefused,
    StepRun,
    canonical_json,
    define,
    run_cpu,
)
from app.steps.data_schemas import (
    AGGREGATE_SCHEMA,
    DIFF_SCHEMA,
    FILTER_SCHEMA,
    MAP_SCHEMA,
    PARSE_SCHEMA,
    TRANSFORM_SCHEMA,
)

__all__ = [
    "ACTIVITIES",
    "StepInputError",
    "aggregate",
    "diff",
    "filter_records",
    "map_records",
    "parse",
    "transform",
]


# Each op, aggregated field, mapped field and filter condition is one pass over every record,
# so their count multiplies the work of a large `data` (both come from the tenant).
MAX_PASSES = 200


def _passes(name: str, items: Any) -> None:
    if isinstance(items, list | dict) and len(items) > MAX_PASSES:
        raise StepInputError(f"`{name}` has {len(items)} entries, more than {MAX_PASSES}")


def _records(data: Any) -> tuple[list[dict[str, Any]], bool]:
    if isinstance(data, dict):
        return [data], True
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return list(data), False
    raise StepInputError("`data` must be an object or a list of objects")


def _field(record: dict[str, Any], name: str) -> Any:
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


# Ops that change one string field; `squash` makes one line of it (runs of whitespace, line
# breaks included, become one space), as for a subject line written by a model.
STRING_OPS: dict[str, Callable[[str], str]] = {
    "upper": str.upper,
    "lower": str.lower,
    "strip": str.strip,
    "squash": lambda v: " ".join(v.split()),
}


def _apply(op: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kind = op.get("op")
    if kind == "pick":
        fields = op.get("fields") or []
        return [{f: r.get(f) for f in fields} for r in records]
    if kind == "rename":
        mapping = op.get("mapping") or {}
        return [{mapping.get(k, k): v for k, v in r.items()} for r in records]
    if kind == "set":
        return [{**r, op["field"]: op.get("value")} for r in records]
    if kind in STRING_OPS:
        name, change = op["field"], STRING_OPS[kind]
        return [
            {**r, name: change(r[name]) if isinstance(r.get(name), str) else r.get(name)}
            for r in records
        ]
    if kind == "filter":
        name, expected = op["field"], op.get("equals")
        return [r for r in records if _field(r, name) == expected]
    if kind == "sort":
        name = op["by"]
        try:
            return sorted(records, key=lambda r: _field(r, name), reverse=bool(op.get("desc")))
        except TypeError as exc:
            raise StepInputError(f"cannot sort by {name!r}: mixed or missing values") from exc
    raise StepInputError(
        f"unknown op {kind!r}: use pick, rename, set, upper, lower, strip, squash, filter or sort"
    )


def transform(input: dict[str, Any]) -> Any:
    """Apply `ops` in order to `data`; an object in gives an object out."""
    records, single = _records(input.get("data"))
    ops = input.get("ops") or []
    _passes("ops", ops)
    if not isinstance(ops, list):
        raise StepInputError("`ops` must be a list")
    for op in ops:
        if not isinstance(op, dict):
            raise StepInputError("each op must be an object with an `op` field")
        try:
            records = _apply(op, records)
        except KeyError as exc:
            raise StepInputError(f"op {op.get('op')!r} needs field {exc.args[0]!r}") from exc
    return records[0] if single and records else records


def _number(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise StepInputError(f"field {name!r} holds {value!r}, not a number")
    try:
        return Decimal(str(value))
    except ArithmeticError as exc:
        raise StepInputError(f"field {name!r} holds {value!r}, not a number") from exc


def aggregate(input: dict[str, Any]) -> dict[str, Any]:
    """`{"data": [...], "fields": ["qty", ...], "weight": "price"?}` -> count and per-field stats.

    With `weight`, each field also gets `weighted_sum` = sum(field x weight). Sums use Decimal
    and come back as numbers rounded to 6 places, so money adds up exactly.
    """
    records, _ = _records(input.get("data"))
    fields = input.get("fields") or []
    _passes("fields", fields)
    weight = input.get("weight")
    out: dict[str, Any] = {"count": len(records)}
    for name in fields:
        values = [_number(_field(r, name), name) for r in records if _field(r, name) is not None]
        stats: dict[str, Any] = {
            "sum": _plain(sum(values, Decimal(0))),
            "min": _plain(min(values)) if values else None,
            "max": _plain(max(values)) if values else None,
            "avg": _plain(sum(values, Decimal(0)) / len(values)) if values else None,
        }
        if weight:
            stats["weighted_sum"] = _plain(
                sum(
                    (
                        _number(_field(r, name), name) * _number(_field(r, weight), weight)
                        for r in records
                        if _field(r, name) is not None and _field(r, weight) is not None
                    ),
                    Decimal(0),
                )
            )
        out[name] = stats
    return out


def _plain(value: Decimal) -> int | float:
    value = round(value, 6)
    return int(value) if value == value.to_integral_value() else float(value)


def parse(input: dict[str, Any]) -> Any:
    """CSV text -> a list of objects keyed by the header row (values stay strings); JSON -> value.

    Blank CSV lines are skipped; a row with more or fewer cells than the header is an error.
    """
    text = input["text"].removeprefix("\ufeff")  # a byte-order mark is not part of a header
    if input["format"] == "json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise StepInputError(f"`text` is not valid JSON: {exc}") from exc
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=input.get("delimiter", ","))
    try:
        rows = [(reader.line_num, row) for row in reader if row]
    except csv.Error as exc:
        raise StepInputError(f"`text` is not valid CSV (line {reader.line_num}): {exc}") from exc
    if not rows:
        return []
    header = rows[0][1]
    if len(set(header)) != len(header):
        raise StepInputError(f"the CSV header repeats a column name: {header}")
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise StepInputError(
                f"CSV line {line} has {len(row)} cells, the header has {len(header)}"
            )
    return [dict(zip(header, row, strict=True)) for _, row in rows[1:]]


def map_records(input: dict[str, Any]) -> list[dict[str, Any]]:
    """Build one new object per record: `{out_name: value at in.path}` (null when missing)."""
    records, _ = _records(input["data"])
    fields: dict[str, str] = input["fields"]
    _passes("fields", fields)
    return [{out: _field(r, path) for out, path in fields.items()} for r in records]


def _compare(op: str, actual: Any, expected: Any) -> bool:
    if op == "eq":
        return bool(actual == expected)
    if op == "ne":
        return bool(actual != expected)
    if op == "in":
        return actual in expected
    if op == "contains":
        if isinstance(actual, str) and isinstance(expected, str):
            return expected in actual
        return isinstance(actual, list | dict) and expected in actual
    ordered = _ORDERED[op]
    if actual is None or isinstance(actual, bool) != isinstance(expected, bool):
        return False
    try:
        return ordered(actual, expected)
    except TypeError:  # e.g. a string against a number: no match rather than an error
        return False


_ORDERED: dict[str, Callable[[Any, Any], bool]] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


class _Members:
    """`value in items` for a list of JSON values, in constant time for scalars.

    `in` over a list is linear, so filtering n records by a list of m values would take n x m
    comparisons (both up to the step's input size). A set answers the same for JSON scalars
    (equal numbers hash alike: 1, 1.0 and true); lists and objects are never equal to a scalar
    and are compared one by one, as before."""

    def __init__(self, items: list[Any]) -> None:
        self.scalars = {i for i in items if not isinstance(i, list | dict)}
        self.others = [i for i in items if isinstance(i, list | dict)]

    def __contains__(self, value: Any) -> bool:
        if isinstance(value, list | dict):
            return value in self.others
        return value in self.scalars


def _expected(condition: dict[str, Any]) -> Any:
    value = condition.get("value")
    return _Members(value) if condition["op"] == "in" and isinstance(value, list) else value


def filter_records(input: dict[str, Any]) -> list[dict[str, Any]]:
    """Keep the records matching every condition (a `where` object means field == value)."""
    records, _ = _records(input["data"])
    where = input["where"]
    if isinstance(where, dict):
        conditions = [{"field": k, "op": "eq", "value": v} for k, v in where.items()]
    else:
        conditions = where
    _passes("where", conditions)
    checks = [(c["op"], c["field"], _expected(c)) for c in conditions]
    return [
        r
        for r in records
        if all(_compare(op, _field(r, name), expected) for op, name, expected in checks)
    ]


def _index(records: list[dict[str, Any]], key: str, side: str) -> dict[str, dict[str, Any]]:
    indexed: dict[str, dict[str, Any]] = {}
    for i, record in enumerate(records):
        value = _field(record, key)
        if value is None:
            raise StepInputError(f"`{side}[{i}]` has no key field {key!r}")
        ident = canonical_json(value)  # 1, "1" and true stay different keys
        if ident in indexed:
            raise StepInputError(f"`{side}` has key {value!r} more than once")
        indexed[ident] = record
    return indexed


def diff(input: dict[str, Any]) -> dict[str, Any]:
    """Compare two lists of records by `key`: what was added, removed, changed, unchanged.

    Order follows `target` for added and changed, `source` for removed; `fields` lists the
    top-level fields that differ, sorted; fields in `ignore` are not compared.
    """
    key: str = input["key"]
    ignore = set(input.get("ignore") or [])
    source = _index(_records(input["source"])[0], key, "source")
    target = _index(_records(input["target"])[0], key, "target")
    added, changed, unchanged = [], [], 0
    for ident, after in target.items():
        before = source.get(ident)
        if before is None:
            added.append(after)
            continue
        names = sorted((before.keys() | after.keys()) - ignore)
        fields = [n for n in names if n not in before or n not in after or before[n] != after[n]]
        if fields:
            changed.append(
                {"key": _field(after, key), "before": before, "after": after, "fields": fields}
            )
        else:
            unchanged += 1
    removed = [record for ident, record in source.items() if ident not in target]
    return {"added": added, "removed": removed, "changed": changed, "unchanged": unchanged}


def _pure(fn: Callable[[dict[str, Any]], Any]) -> StepRun:
    async def run(input: dict[str, Any], ctx: StepContext) -> Any:
        # In a thread: a large input must not stall the worker's loop (and its heartbeats).
        try:
            return await run_cpu(fn, input)
        except StepInputRefused:
            raise
        except StepInputError as exc:  # a pure step did nothing: safe to run on other input
            raise StepInputRefused(str(exc)) from exc

    run.__doc__ = fn.__doc__
    return run


ACTIVITIES: list[StepActivity] = [
    define(
        "data.transform",
        "reshape records: pick, rename, set, upper, lower, strip, squash, filter, sort",
        TRANSFORM_SCHEMA,
        _pure(transform),
    ),
    define(
        "data.aggregate",
        "count, sum, min, max and average of fields over a list of records",
        AGGREGATE_SCHEMA,
        _pure(aggregate),
    ),
    define("data.parse", "parse CSV (rows as objects) or JSON text", PARSE_SCHEMA, _pure(parse)),
    define(
        "data.map",
        "build new objects from dotted paths of each record",
        MAP_SCHEMA,
        _pure(map_records),
    ),
    define(
        "data.filter",
        "keep records matching conditions (eq, ne, gt, gte, lt, lte, in, contains)",
        FILTER_SCHEMA,
        _pure(filter_records),
    ),
    define(
        "data.diff",
        "compare two lists of records by key: added, removed, changed, unchanged",
        DIFF_SCHEMA,
        _pure(diff),
    ),
]
