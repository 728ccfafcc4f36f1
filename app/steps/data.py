"""`data.*` step activities: deterministic transforms over JSON records.

Invalid input raises StepInputError, which the worker turns into a non-retryable failure with
the message shown on the execution.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any


class StepInputError(ValueError):
    """The step's input is wrong; retrying cannot help."""


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
    if kind in ("upper", "lower", "strip"):
        name = op["field"]
        out = []
        for r in records:
            v = r.get(name)
            if isinstance(v, str):
                v = v.upper() if kind == "upper" else v.lower() if kind == "lower" else v.strip()
            out.append({**r, name: v})
        return out
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
        f"unknown op {kind!r}: use pick, rename, set, upper, lower, strip, filter or sort"
    )


def transform(input: dict[str, Any]) -> Any:
    """Apply `ops` in order to `data`; an object in gives an object out."""
    records, single = _records(input.get("data"))
    ops = input.get("ops") or []
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
