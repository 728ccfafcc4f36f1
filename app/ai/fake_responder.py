"""A task-aware answer for the fake LLM server (`wfs dev --fake-llm` and the tests).

It recognises which AI task a prompt is for (by the task's instructions in the system text),
reads the delimited data block, and answers what the task's baseline would, as a model would:
valid JSON that passes the task's validation. So without any API key the AI path (routing,
cost, cache, budget, usage records) can be tried end to end, and a premium tenant's run shows
model results while a free tenant's shows baseline ones. Other prompts get the fake's default.
"""

from __future__ import annotations

import json
from typing import Any

from app.ai.fake_llm import LLMRequest, default_responder
from app.ai.tasks import TASK_SPECS
from app.ai.tasks.base import DATA_CLOSE, DATA_OPEN, sanitize_text, truncate
from app.ai.tasks.writing import DEFAULT_TEXT_CHARS


def _task_of(prompt: str) -> str | None:
    for name, spec in TASK_SPECS.items():
        instructions = getattr(spec, "instructions", None)
        if instructions and instructions in prompt:
            return name
    return None


def _answer(task: str, data: dict[str, Any]) -> dict[str, Any]:
    """What the task's baseline gives for the input the prompt data came from. The writing
    tasks send their text already rendered: personalize_content answers its `draft`, and
    generate_text the last paragraph of its `prompt` (the standard templates put the text to
    rewrite there, so a demo reads sensibly)."""
    limit = data.get("max_chars", DEFAULT_TEXT_CHARS)
    if task == "generate_text":  # a prompt's last paragraph is the text to work on
        return {"text": truncate(sanitize_text(data["prompt"].strip().split("\n\n")[-1]), limit)}
    if task == "personalize_content":
        return {"text": truncate(sanitize_text(data["draft"]), limit)}
    spec = TASK_SPECS[task]
    known = spec.input_schema.get("properties", {})
    return spec.baseline({k: v for k, v in data.items() if k in known})


def task_responder(request: LLMRequest) -> Any:
    prompt = request.parsed.prompt
    task = _task_of(prompt)
    start, end = (
        request.parsed.last_user.find(DATA_OPEN),
        request.parsed.last_user.rfind(DATA_CLOSE),
    )
    if task is None or start < 0 or end < 0:
        return default_responder(request)
    try:
        data = json.loads(request.parsed.last_user[start + len(DATA_OPEN) : end])
        answer = _answer(task, data)
    except (ValueError, TypeError, KeyError):
        return default_responder(request)
    if task == "classify_content":
        answer = {"category": answer["category"], "confidence": 0.9}
    return answer
