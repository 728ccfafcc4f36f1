"""The AI tasks (contracts.TASKS) as TaskSpecs: input schema, prompt, validation and baseline.

Beyond the TaskSpec protocol each spec has `check_input(input)` (InvalidInput listing every
problem, including rules JSON Schema can't express) and `max_output_tokens(input)`.

- generate_text {prompt_template, variables?, max_chars? 2000, tone?} -> {text}
- classify_content {text, categories, keywords?, default?} -> {category, confidence}
- summarize {text, max_sentences? 3, max_chars? 500} -> {summary}
- extract_entities {text, types? all} -> {entities: [{type, text}]}
- personalize_content {template, user, max_chars? 2000} -> {text}
- optimize_timing {timezone, now, engagement_hours?, window_hours? 48} -> {send_at, reason}

A task reads at most MAX_TEXT_CHARS of a text: `bounded(input)` cuts the fields a task may cut
(`truncation(input)` says which), `check_input` refuses the rest (see tasks/base.py).
"""

from __future__ import annotations

from typing import Any

from app.ai import extensions
from app.ai.contracts import TASKS, TaskSpec
from app.ai.tasks.analysis import ENTITY_TYPES, ClassifyContent, ExtractEntities
from app.ai.tasks.base import (
    DATA_CLOSE,
    DATA_OPEN,
    DEFAULT_MAX_OUTPUT_TOKENS,
    MAX_TEXT_CHARS,
    BaseTask,
    InvalidInput,
    PreparedTask,
    data_block,
    parse_reply,
    sanitize_text,
)
from app.ai.tasks.timing import OptimizeTiming
from app.ai.tasks.writing import GenerateText, PersonalizeContent, Summarize

__all__ = [
    "DATA_CLOSE",
    "DATA_OPEN",
    "ENTITY_TYPES",
    "MAX_TEXT_CHARS",
    "TASK_SPECS",
    "BaseTask",
    "InvalidInput",
    "PreparedTask",
    "bound_input",
    "check_input",
    "max_output_tokens",
    "find_task",
    "task_names",
    "reply_schema",
    "data_block",
    "parse_reply",
    "sanitize_text",
    "truncation",
]

_SPECS: dict[str, BaseTask] = {
    spec.name: spec
    for spec in (
        GenerateText(),
        ClassifyContent(),
        Summarize(),
        ExtractEntities(),
        PersonalizeContent(),
        OptimizeTiming(),
    )
}
assert tuple(_SPECS) == TASKS, "every task in contracts.TASKS needs a spec, in order"
TASK_SPECS: dict[str, TaskSpec] = dict(_SPECS)


def find_task(name: str) -> TaskSpec | None:
    """A built-in task's spec, or a plugin's (app/ai/extensions.py); None: unknown."""
    return TASK_SPECS.get(name) or extensions.TASKS.get(name)


def task_names() -> list[str]:
    """The built-in tasks, then the plugins'."""
    return [*TASK_SPECS, *extensions.TASKS]


def _spec(task: str) -> BaseTask:
    spec = _SPECS.get(task) or extensions.TASKS.get(task)
    if not isinstance(spec, BaseTask):
        raise KeyError(task)
    return spec


def check_input(task: str, input: dict[str, Any]) -> None:
    """InvalidInput unless `input` is a valid input of `task` (KeyError for an unknown task)."""
    _spec(task).check_input(input)


def bound_input(task: str, input: dict[str, Any]) -> dict[str, Any]:
    """The part of `input` the task reads: long texts cut where the task allows (KeyError for an
    unknown task)."""
    return _spec(task).bounded(input)


def truncation(task: str, input: dict[str, Any]) -> dict[str, int]:
    """{field: length} of each text field `bound_input` cuts to MAX_TEXT_CHARS."""
    return _spec(task).truncation(input)


def reply_schema(task: TaskSpec, input: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema structured outputs ask for (the output schema for foreign specs)."""
    if isinstance(task, BaseTask | PreparedTask):
        return task.reply_schema(input)
    return task.output_schema


def max_output_tokens(task: TaskSpec, input: dict[str, Any]) -> int:
    """The task's bound for the reply's length (DEFAULT_MAX_OUTPUT_TOKENS for foreign specs)."""
    if isinstance(task, BaseTask | PreparedTask):
        return task.max_output_tokens(input)
    return DEFAULT_MAX_OUTPUT_TOKENS
