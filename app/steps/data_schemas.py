"""JSON Schemas (draft 2020-12) of the `data.*` step inputs, after expression rendering."""

from __future__ import annotations

from typing import Any

_OBJECTS: dict[str, Any] = {"type": "array", "items": {"type": "object"}}
_OBJECT_OR_OBJECTS: dict[str, Any] = {"type": ["object", "array"], "items": {"type": "object"}}
_NAME: dict[str, Any] = {"type": "string", "minLength": 1}
_NAMES: dict[str, Any] = {"type": "array", "items": _NAME}


def _when_op(op: str, *required: str) -> dict[str, Any]:
    return {
        "if": {"required": ["op"], "properties": {"op": {"const": op}}},
        "then": {"required": list(required)},
    }


TRANSFORM_OPS = ("pick", "rename", "set", "upper", "lower", "strip", "squash", "filter", "sort")

TRANSFORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "additionalProperties": False,
    "properties": {
        "data": _OBJECT_OR_OBJECTS,
        "ops": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["op"],
                "additionalProperties": False,
                "properties": {
                    "op": {"enum": list(TRANSFORM_OPS)},
                    "fields": _NAMES,
                    "mapping": {"type": "object", "additionalProperties": _NAME},
                    "field": _NAME,
                    "value": {},
                    "equals": {},
                    "by": _NAME,
                    "desc": {"type": "boolean"},
                },
                "allOf": [
                    _when_op("set", "field"),
                    _when_op("upper", "field"),
                    _when_op("lower", "field"),
                    _when_op("strip", "field"),
                    _when_op("squash", "field"),
                    _when_op("filter", "field"),
                    _when_op("sort", "by"),
                ],
            },
        },
    },
}

AGGREGATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data", "fields"],
    "additionalProperties": False,
    "properties": {
        "data": _OBJECT_OR_OBJECTS,
        "fields": _NAMES,
        "weight": {"type": ["string", "null"], "minLength": 1},
    },
}

PARSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["text", "format"],
    "additionalProperties": False,
    "properties": {
        "text": {"type": "string"},
        "format": {"enum": ["csv", "json"]},
        "delimiter": {"type": "string", "minLength": 1, "maxLength": 1},
    },
}

MAP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data", "fields"],
    "additionalProperties": False,
    "properties": {
        "data": _OBJECTS,
        "fields": {"type": "object", "minProperties": 1, "additionalProperties": _NAME},
    },
}

FILTER_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "contains")

FILTER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data", "where"],
    "additionalProperties": False,
    "properties": {
        "data": _OBJECTS,
        "where": {
            "type": ["object", "array"],
            "items": {
                "type": "object",
                "required": ["field", "op", "value"],
                "additionalProperties": False,
                "properties": {"field": _NAME, "op": {"enum": list(FILTER_OPS)}, "value": {}},
                "if": {"required": ["op"], "properties": {"op": {"const": "in"}}},
                "then": {"properties": {"value": {"type": "array"}}},
            },
        },
    },
}

DIFF_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["source", "target", "key"],
    "additionalProperties": False,
    "properties": {"source": _OBJECTS, "target": _OBJECTS, "key": _NAME, "ignore": _NAMES},
}
