"""Semantic checks of a parsed template spec. Each returns (json path, message) problems so a
spec author sees every mistake at once: unknown activities, dependency cycles, references to
steps that may not have run, bad expressions, too many expressions together, unknown AI tasks
or tiers, and steps or AI tasks of plugins the tenant may not use.

Checking expressions is the CPU-heavy part (each string is compiled and tried): every string
first looks at the validation's deadline (app.jsonschemas.check_deadline), so a validation
whose caller got "did not finish within" stops within one string instead of keeping the
shared validation pool busy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.ai.tasks import find_task, task_names
from app.jsonschemas import check_deadline, instance_problems, json_validator
from app.steps import WORKFLOW_NATIVE, activity_names, find_activity
from app.templates import expressions
from app.templates.expressions import Limits, SpecTally
from app.tiers import TIERS

if TYPE_CHECKING:
    from app.templates.schemas import StepSpec, TemplateSpec
    from app.tenants.plugin_access import PluginAccess

Problem = tuple[str, str]


def resolved_needs(spec: TemplateSpec) -> dict[str, list[str]]:
    """`needs` absent means "after the previous step" (so a plain list runs in order)."""
    out: dict[str, list[str]] = {}
    previous: str | None = None
    for step in spec.steps:
        if step.needs is None:
            out[step.id] = [previous] if previous is not None else []
        else:
            out[step.id] = list(step.needs)
        previous = step.id
    return out


def _ancestors(needs: dict[str, list[str]]) -> dict[str, set[str]]:
    memo: dict[str, set[str]] = {}

    def visit(node: str, trail: tuple[str, ...]) -> set[str]:
        if node in memo:
            return memo[node]
        found: set[str] = set()
        for parent in needs.get(node, []):
            if parent in trail or parent not in needs:
                continue
            found |= {parent} | visit(parent, (*trail, parent))
        memo[node] = found
        return found

    return {node: visit(node, (node,)) for node in needs}


def _cycles(needs: dict[str, list[str]]) -> list[list[str]]:
    """Each dependency cycle once, as the list of step ids around it."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for parent in needs.get(node, []):
            if parent not in needs:
                continue
            if state.get(parent) == 1:
                cycles.append(stack[stack.index(parent) :] + [parent])
            elif parent not in state:
                visit(parent)
        stack.pop()
        state[node] = 2

    for node in needs:
        if node not in state:
            visit(node)
    return cycles


def _activity_problems(
    where: str, name: str, *, native_ok: bool, plugins: PluginAccess | None = None
) -> list[Problem]:
    entry = find_activity(name)
    if entry is None:
        known = ", ".join(activity_names())
        return [(where, f"unknown activity {name!r}; known: {known}")]
    if not native_ok and name in WORKFLOW_NATIVE:
        return [(where, f"{name} cannot be used here")]
    if entry.plugin is not None and plugins is not None and not plugins.allows(entry.plugin):
        return [(where, plugin_refusal(name, entry.plugin))]
    return []


def plugin_refusal(name: str, plugin: str) -> str:
    return (
        f"{name} comes from the plugin {plugin!r}, which is not enabled for your tenant "
        "(the platform operator enables plugins per tenant)"
    )


def _task_plugin(task: str) -> str | None:
    """The plugin an AI task comes from ("acme" for "acme.score"); None for a built-in one."""
    return task.split(".", 1)[0] if "." in task else None


def _literal_input_problems(where: str, step: StepSpec) -> list[Problem]:
    """Check an input against the activity's schema when it holds no expressions."""
    entry = find_activity(step.activity)
    schema = getattr(entry, "input_schema", None)
    if not schema or step.for_each or expressions.has_expressions(step.input):
        return []
    return [
        (f"{where}.input{p['path'][1:]}", p["message"])
        for p in instance_problems(json_validator(schema), step.input)
    ]


def _apply_problems(where: str, activity: str, task: str, apply: dict[str, str]) -> list[Problem]:
    """`apply` maps AI output fields the task has to input fields the step's activity takes."""
    problems: list[Problem] = []
    spec = find_task(task)
    outputs = set(spec.output_schema.get("properties", {})) if spec else set()
    entry = find_activity(activity)
    inputs = set((getattr(entry, "input_schema", None) or {}).get("properties", {}))
    for target, source in apply.items():
        if spec is not None and source not in outputs:
            problems.append(
                (
                    f"{where}.apply.{target}",
                    f"{task} gives no {source!r}; it gives: {', '.join(sorted(outputs))}",
                )
            )
        field = target.split(".")[0]
        if inputs and field not in inputs:
            problems.append(
                (
                    f"{where}.apply.{target}",
                    f"{activity} takes no {field!r}; it takes: {', '.join(sorted(inputs))}",
                )
            )
    return problems


def _step_problems(
    i: int,
    step: StepSpec,
    ancestors: set[str],
    ids: set[str],
    limits: Limits | None,
    tally: SpecTally,
    plugins: PluginAccess | None = None,
) -> list[Problem]:
    where = f"$.steps[{i}]"
    problems = _activity_problems(
        f"{where}.activity", step.activity, native_ok=True, plugins=plugins
    )
    if not problems:
        problems += _literal_input_problems(where, step)
    for field, value in (
        ("input", step.input),
        ("when", expressions.wrap(step.when) if step.when else None),
        ("for_each", expressions.wrap(step.for_each) if step.for_each else None),
    ):
        for path, message in expressions.check(value, limits, tally):
            problems.append((f"{where}.{field}{path[1:]}", f"bad expression: {message}"))
        for ref in sorted(expressions.step_references(value, limits, tally)):
            if ref not in ids:
                problems.append((f"{where}.{field}", f"refers to unknown step {ref!r}"))
            elif ref not in ancestors:
                problems.append(
                    (f"{where}.{field}", f"refers to step {ref!r}, which it does not need")
                )
    if step.for_each and step.activity in WORKFLOW_NATIVE:
        problems.append((f"{where}.for_each", f"{step.activity} cannot fan out"))
    if step.compensate is not None:
        problems += _activity_problems(
            f"{where}.compensate.activity",
            step.compensate.activity,
            native_ok=False,
            plugins=plugins,
        )
        for path, message in expressions.check(step.compensate.input, limits, tally):
            problems.append((f"{where}.compensate.input{path[1:]}", f"bad expression: {message}"))
    for j, point in enumerate(step.enhancements):
        here = f"{where}.enhancements[{j}]"
        if (point.input is None) != (point.apply is None):
            problems.append((here, "give both `input` and `apply`, or neither"))
        elif point.apply is not None and not point.apply:
            problems.append((f"{here}.apply", "map at least one step input field"))
        elif point.input is not None and step.activity in WORKFLOW_NATIVE:
            problems.append((here, f"{step.activity} has no input an AI task could improve"))
        for path, message in expressions.check(point.input, limits, tally):
            problems.append((f"{here}.input{path[1:]}", f"bad expression: {message}"))
        for ref in sorted(expressions.step_references(point.input, limits, tally)):
            if ref not in ancestors:
                problems.append(
                    (f"{here}.input", f"refers to step {ref!r}, which it does not need")
                )
        problems += _apply_problems(here, step.activity, point.task, point.apply or {})
        if find_task(point.task) is None:
            problems.append(
                (
                    f"{where}.enhancements[{j}].task",
                    f"unknown AI task {point.task!r}; known: {', '.join(task_names())}",
                )
            )
        elif (owner := _task_plugin(point.task)) and plugins and not plugins.allows(owner):
            problems.append((f"{where}.enhancements[{j}].task", plugin_refusal(point.task, owner)))
        if point.min_tier not in TIERS:
            problems.append(
                (
                    f"{where}.enhancements[{j}].min_tier",
                    f"unknown tier {point.min_tier!r}; known: {', '.join(TIERS)}",
                )
            )
    return problems


def plugins_used(spec: TemplateSpec) -> dict[str, str]:
    """{plugin: the first step activity or AI task of it} that the spec names; an activity
    no longer registered (its plugin not loaded) maps to itself under "?"+name."""
    used: dict[str, str] = {}
    for step in spec.steps:
        names = [step.activity, *([step.compensate.activity] if step.compensate else [])]
        for name in names:
            entry = find_activity(name)
            if entry is None:
                used.setdefault(f"?{name}", name)
            elif entry.plugin is not None:
                used.setdefault(entry.plugin, name)
        for point in step.enhancements:
            if (owner := _task_plugin(point.task)) is not None:
                used.setdefault(owner, point.task)
    return used


def spec_problems(
    spec: TemplateSpec,
    limits: Limits | None = None,
    tally: SpecTally | None = None,
    plugins: PluginAccess | None = None,
) -> list[Problem]:
    """Every semantic problem; expressions are checked within `limits` (the configured ones;
    the defaults without) and counted into `tally` (a new one, which stops at the validation's
    deadline, without). `plugins`: which plugins' steps and AI tasks the tenant may use (None:
    every loaded plugin's, for the platform's own templates)."""
    problems: list[Problem] = []
    ids = [s.id for s in spec.steps]
    for i, step_id in enumerate(ids):
        if step_id in ids[:i]:
            problems.append((f"$.steps[{i}].id", f"duplicate step id {step_id!r}"))
    needs = resolved_needs(spec)
    known = set(ids)
    for i, step in enumerate(spec.steps):
        for j, parent in enumerate(step.needs or []):
            if parent == step.id:
                problems.append((f"$.steps[{i}].needs[{j}]", "a step cannot need itself"))
            elif parent not in known:
                problems.append((f"$.steps[{i}].needs[{j}]", f"unknown step {parent!r}"))
    for cycle in _cycles(needs):
        if len(cycle) > 2:  # a step needing itself is reported above
            index = ids.index(cycle[0])
            problems.append((f"$.steps[{index}].needs", "dependency cycle: " + " -> ".join(cycle)))
    ancestors = _ancestors(needs)
    tally = tally or SpecTally(check_deadline)
    for i, step in enumerate(spec.steps):
        problems += _step_problems(
            i, step, ancestors.get(step.id, set()), known, limits, tally, plugins
        )
    for path, message in expressions.check(spec.output, limits, tally):
        problems.append((f"$.output{path[1:]}", f"bad expression: {message}"))
    problems += [("$", message) for message in tally.problems()]
    return problems
