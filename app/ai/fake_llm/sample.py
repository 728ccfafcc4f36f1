"""The fake's default answer when no rule matches: deterministic and shaped like the request.

With a JSON Schema response format the answer is the smallest instance of the schema (so typed
`parse()` helpers and output validation get past the shape); otherwise `{"echo": <the first
50 characters of the last user message>}`.
"""

from __future__ import annotations

from typing import Any

_MAX_DEPTH = 8  # recursive schemas ($ref cycles) stop here


def sample_from_schema(schema: Any, *, root: Any = None, depth: int = 0) -> Any:
    """The smallest deterministic value that a (simple) JSON Schema accepts.

    Covers what structured-output schemas use: type, properties, items, enum, const,
    anyOf/oneOf/allOf, local $ref and minItems/minLength. Anything else yields None.
    """
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        return sample_from_schema(target, root=root, depth=depth + 1)
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            return sample_from_schema(options[0], root=root, depth=depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and "properties" in schema:
        kind = "object"
    if kind == "object":
        properties = schema.get("properties") or {}
        return {
            name: sample_from_schema(sub, root=root, depth=depth + 1)
            for name, sub in properties.items()
        }
    if kind == "array":
        item = sample_from_schema(schema.get("items"), root=root, depth=depth + 1)
        return [item] * int(schema.get("minItems", 0))
    if kind == "string":
        return "x" * int(schema.get("minLength", 0))
    if kind in ("integer", "number"):
        if isinstance(schema.get("minimum"), int | float):
            return schema["minimum"]
        if isinstance(schema.get("exclusiveMinimum"), int | float):
            return schema["exclusiveMinimum"] + 1
        return 0
    if kind == "boolean":
        return False
    return None


def echo_reply(last_user: str) -> dict[str, Any]:
    """The default answer without a schema."""
    return {"echo": last_user[:50]}


def constrain(value: Any, schema: Any, *, root: Any = None, depth: int = 0) -> Any:
    """`value` (what a model meant to answer) made to fit a (simple) JSON Schema, the way
    decoding under the schema would write it: what fits is kept, an answer wrapped in a
    one-key object is unwrapped, a property under another name moves to the schema's name,
    an enum takes the member matching case-insensitively (else the first), a numeric string
    becomes a number, anything still missing or of the wrong type becomes the schema's
    smallest sample, unknown properties go. Covers the keywords sample_from_schema covers."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return value
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        return constrain(value, target, root=root, depth=depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        members = schema["enum"]
        if value in members:
            return value
        folded = str(value).strip().casefold()
        return next((m for m in members if str(m).casefold() == folded), members[0])
    kind = schema.get("type")
    if kind is None and "properties" in schema:
        kind = "object"
    if kind == "object":
        if not isinstance(value, dict):
            return sample_from_schema(schema, root=root, depth=depth)
        properties = schema.get("properties") or {}
        if not set(properties) & set(value) and len(value) == 1:
            inner = next(iter(value.values()))
            if isinstance(inner, dict):  # {"result": {...}}: the answer the model meant
                value = inner
        # A property the model named differently: the decoder makes it write the schema's
        # name, with what it meant to put there (the unclaimed values, in order).
        unclaimed = [v for k, v in value.items() if k not in properties]
        return {
            name: constrain(value[name], sub, root=root, depth=depth + 1)
            if name in value
            else constrain(unclaimed.pop(0), sub, root=root, depth=depth + 1)
            if unclaimed
            else sample_from_schema(sub, root=root, depth=depth + 1)
            for name, sub in properties.items()
        }
    if kind == "array":
        if not isinstance(value, list):
            return sample_from_schema(schema, root=root, depth=depth)
        return [constrain(v, schema.get("items"), root=root, depth=depth + 1) for v in value]
    if kind == "string":
        return value if isinstance(value, str) else sample_from_schema(schema, root=root)
    if kind in ("integer", "number"):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return sample_from_schema(schema, root=root)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return sample_from_schema(schema, root=root)
        low, high = schema.get("minimum"), schema.get("maximum")
        if isinstance(low, int | float) and value < low:
            value = low
        if isinstance(high, int | float) and value > high:
            value = high
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return value if isinstance(value, bool) else False
    return value
