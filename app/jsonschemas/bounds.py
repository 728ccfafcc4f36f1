"""Size and depth caps on JSON values, and what PostgreSQL's jsonb can store.

`limit_problems` measures depth without recursion, then the compact JSON size, before anything
recursive touches the value; `storable` makes a value recorded after the fact (events,
results) always storable instead of refusing it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from app.jsonschemas.problems import Problem, problem


def shape_problem(value: Any, max_depth: int) -> str | None:
    """Why the value cannot be taken as it is: containers nested deeper than max_depth (a
    scalar is depth 0, `{}` depth 1), NaN/Infinity (Python's json reads them; JSON and
    PostgreSQL do not) or text PostgreSQL refuses (see text_problem). Iterative, so a value
    nested past the recursion limit is measured too."""
    # Level by level: the lists hold the value's own objects, so the walk allocates nothing the
    # garbage collector tracks per node.
    level: list[Any] = [value]
    depth = 0
    while level:
        below: list[Any] = []
        for node in level:
            if isinstance(node, float) and not math.isfinite(node):
                return "holds NaN or Infinity, which JSON does not have"
            if isinstance(node, str) and (reason := text_problem(node)):
                return reason
            if isinstance(node, Mapping):
                for key in node:
                    if isinstance(key, str) and (reason := text_problem(key)):
                        return reason
                below.extend(node.values())
            elif isinstance(node, list | tuple):
                below.extend(node)
            else:
                continue
            if depth + 1 > max_depth:
                return f"nests deeper than {max_depth} levels"
        level, depth = below, depth + 1
    return None


def text_problem(text: str) -> str | None:
    """Why PostgreSQL's text and jsonb would refuse this string: a NUL character, or a lone
    surrogate (U+D800-U+DFFF, which Python's json reads from `\\ud800` but which is not UTF-8);
    None when it is fine."""
    if "\x00" in text:
        return "holds a NUL character (\\u0000), which PostgreSQL cannot store"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "holds a lone surrogate (\\ud800-\\udfff), which is not UTF-8"
    return None


def storable_text(text: str) -> str:
    """The string with NUL characters and lone surrogates replaced by U+FFFD."""
    if text_problem(text) is None:
        return text
    return "".join("\ufffd" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in text)


def compact_size(value: Any) -> int:
    """Bytes of the value as compact UTF-8 JSON (call after shape_problem: json recurses)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return len(text.encode("utf-8", "surrogatepass"))


def storable(value: Any, max_depth: int) -> Any:
    """The value as PostgreSQL's jsonb and Temporal can always take it: NaN/Infinity become
    null, NUL characters and lone surrogates U+FFFD, containers past max_depth a marker
    string. For what is recorded after the fact (events, results), where refusing would lose
    the record. A value that needs none of it (nearly all) is returned as it is, uncopied."""
    if shape_problem(value, max_depth) is None:
        return value
    return _storable_copy(value, max_depth)


def _storable_copy(value: Any, max_depth: int, _depth: int = 0) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, Mapping | list | tuple) and _depth >= max_depth:
        return f"(nested deeper than {max_depth} levels)"
    if isinstance(value, Mapping):
        return {
            _storable_copy(str(k), max_depth): _storable_copy(v, max_depth, _depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_storable_copy(v, max_depth, _depth + 1) for v in value]
    return value


def limit_problems(
    value: Any,
    *,
    what: str,
    max_bytes: int,
    bytes_setting: str,
    max_depth: int,
    depth_setting: str = "max_json_depth",
) -> list[Problem]:
    """Depth first (without recursion), then size; each problem names the setting to raise."""
    shape = shape_problem(value, max_depth)
    if shape is not None:
        setting = f" (setting {depth_setting})" if shape.startswith("nests") else ""
        return [problem("$", f"{what} {shape}{setting}")]
    size = compact_size(value)
    if size > max_bytes:
        return [
            problem(
                "$",
                f"{what} is {size} bytes as compact JSON; at most {max_bytes} "
                f"(setting {bytes_setting})",
            )
        ]
    return []
