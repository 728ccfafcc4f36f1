"""Between two versions of a template: what changed (spec diffs: structural, and a unified
text diff computed only when asked for, off the event loop) and how params of the previous
version map onto the next (param_migration). Pure, apart from `unified_off_loop`, which runs
the text diff on the validation pool.
"""

from __future__ import annotations

import copy
import difflib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from app import jsonschemas
from app.errors import NotFound, Unavailable
from app.models import TemplateVersion
from app.settings import Settings
from app.templates.schemas import validation_deadline


def same_content(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal apart from param_migration, which belongs to the version that introduced it."""
    return {**a, "param_migration": None} == {**b, "param_migration": None}


def migrate_params(params: dict[str, Any], migration: dict[str, Any] | None) -> dict[str, Any]:
    """Map params of the previous version onto a version's parameters (top-level keys):
    rename (the new name wins if both are present), then drop, then fill defaults."""
    if not migration:
        return params
    out = dict(params)
    for old, new in (migration.get("rename") or {}).items():
        if old in out:
            value = out.pop(old)
            out.setdefault(new, value)
    for key in migration.get("drop") or []:
        out.pop(key, None)
    for key, value in (migration.get("defaults") or {}).items():
        out.setdefault(key, copy.deepcopy(value))
    return out


@dataclass
class StepChange:
    step_id: str
    fields: list[str]


# A line diff (difflib) costs worse than quadratic time on long runs of near-repeating lines:
# two 10,000-value enums took 6 s, 20,000 took 41 s. Up to this many lines of indented JSON a
# side it stays in tens of milliseconds (1,000 lines, the worst found: 20 ms); larger specs get
# a linear list of the places that changed instead.
MAX_DIFF_LINES = 1_000
MAX_DIFF_CHANGES = 200  # places listed when the specs are too large for a line diff
MAX_DIFF_VALUE_CHARS = 200  # of each value shown there (compact JSON)


@dataclass
class SpecDiff:
    """What changed between two specs. Every field but `unified` is a structural comparison
    of the parsed specs (linear); `unified` is text, computed only when asked for."""

    from_version: int
    to_version: int
    added_steps: list[str]
    removed_steps: list[str]
    changed_steps: list[StepChange]
    changed_fields: list[str]
    old: dict[str, Any] = field(repr=False)
    new: dict[str, Any] = field(repr=False)

    @property
    def unified(self) -> str:
        """A unified diff of the specs as sorted, indented JSON ("" when equal); beyond
        MAX_DIFF_LINES a side, the changed places by JSON path. CPU-bound: off the event
        loop, see `unified_off_loop`."""
        return unified_diff(self.old, self.new, self.from_version, self.to_version)


def diff_specs(
    old: dict[str, Any], new: dict[str, Any], from_version: int, to_version: int
) -> SpecDiff:
    """Steps added, removed and changed (by id, with the keys that changed) and the other
    top-level fields that changed, comparing the parsed specs; the text diff waits until asked."""
    old_steps = {s["id"]: s for s in old.get("steps", [])}
    new_steps = {s["id"]: s for s in new.get("steps", [])}
    changed = [
        StepChange(i, _changed_keys(old_steps[i], step))
        for i, step in new_steps.items()
        if i in old_steps and step != old_steps[i]
    ]
    fields = [k for k in _changed_keys(old, new) if k != "steps"]
    if [i for i in old_steps if i in new_steps] != [i for i in new_steps if i in old_steps]:
        fields.append("steps (order)")
    return SpecDiff(
        from_version=from_version,
        to_version=to_version,
        added_steps=[i for i in new_steps if i not in old_steps],
        removed_steps=[i for i in old_steps if i not in new_steps],
        changed_steps=changed,
        changed_fields=fields,
        old=old,
        new=new,
    )


def unified_diff(old: Any, new: Any, from_version: int, to_version: int) -> str:
    """See SpecDiff.unified."""
    if old == new:
        return ""
    names = f"v{from_version}", f"v{to_version}"
    if not (_lines_over(old, MAX_DIFF_LINES) or _lines_over(new, MAX_DIFF_LINES)):
        a = json.dumps(old, indent=2, sort_keys=True).splitlines()
        b = json.dumps(new, indent=2, sort_keys=True).splitlines()
        return "\n".join(difflib.unified_diff(a, b, *names, lineterm=""))
    lines = [
        f"--- {names[0]}",
        f"+++ {names[1]}",
        f"@@ more than {MAX_DIFF_LINES} lines of JSON: too large for a line diff; "
        "the places that changed, by JSON path @@",
    ]
    total = 0
    for path, before, after in _changes("$", old, new):
        total += 1
        if total <= MAX_DIFF_CHANGES:
            lines.append(f"@@ {path} @@")
            lines += [f"-{_shown(before)}"] if before is not _MISSING else []
            lines += [f"+{_shown(after)}"] if after is not _MISSING else []
    if total > MAX_DIFF_CHANGES:
        lines.append(f"@@ ... and {total - MAX_DIFF_CHANGES} more changed places @@")
    return "\n".join(lines)


def _lines_over(value: Any, limit: int) -> bool:
    """Whether `value` as indented JSON takes more than `limit` lines, counted without
    writing it (json.dumps with an indent is the slow pure-Python encoder); stops early."""
    lines, stack = 0, [value]
    while stack and lines <= limit:
        node = stack.pop()
        if isinstance(node, dict) and node:
            lines += 2  # the opening and closing lines; a key shares its value's line
            stack += node.values()
        elif isinstance(node, list) and node:
            lines += 2
            stack += node
        else:
            lines += 1
    return lines > limit


_MISSING: Any = object()


def _changes(path: str, old: Any, new: Any) -> Iterator[tuple[str, Any, Any]]:
    """(JSON path, old value, new value) of every place that differs, objects by sorted key,
    arrays by index (`_MISSING` on the side without it). Linear in the specs, and it keeps
    nothing per unchanged element (no garbage for the collector, which holds the GIL); the
    recursion is as deep as the spec, which max_json_depth caps."""
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys()):
            yield from _changes(f"{path}.{key}", old.get(key, _MISSING), new.get(key, _MISSING))
    elif isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            before = old[i] if i < len(old) else _MISSING
            after = new[i] if i < len(new) else _MISSING
            if before != after:
                yield from _changes(f"{path}[{i}]", before, after)
    else:
        yield path, old, new


def _shown(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    if len(text) <= MAX_DIFF_VALUE_CHARS:
        return text
    return text[: MAX_DIFF_VALUE_CHARS - 3] + "..."


async def unified_off_loop(
    diff: SpecDiff, settings: Settings | None = None, *, tenant: uuid.UUID | None = None
) -> str:
    """diff.unified on the validation pool within validation_timeout_seconds, in the fair
    share of `tenant` (who asks): a query may ask for many diffs at once (aliases)."""
    try:
        return await jsonschemas.run_bounded(
            unified_diff,
            diff.old,
            diff.new,
            diff.from_version,
            diff.to_version,
            deadline=validation_deadline(settings),
            tenant=tenant,
        )
    except jsonschemas.ValidationTimeout as exc:
        raise Unavailable(
            "the diff did not finish within the validation timeout "
            "(setting validation_timeout_seconds); ask for fewer diffs at once"
        ) from exc


def _changed_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def diff_versions(versions: list[TemplateVersion], from_version: int, to_version: int) -> SpecDiff:
    by_number = {v.version: v for v in versions}
    for number in (from_version, to_version):
        if number not in by_number:
            raise NotFound(f"template has no version {number}")
    return diff_specs(
        by_number[from_version].spec, by_number[to_version].spec, from_version, to_version
    )
