"""`text.*` step activities: deterministic, rule-based text analysis.

They are the non-AI path of the AI enhancement points (classify, summarise, extract) and run
for every tier; the AI layer replaces them with model calls where a tier allows it and falls
back to them on any failure. Pure functions, no I/O.

- text.classify {text, categories, keywords?, default?} -> {category, scores, method}
- text.summarize {text, max_sentences? 3, max_chars? 500} -> {summary, sentences, method}
- text.extract_entities {text, types?} -> {entities: [{type, text, start, end}], method};
  types: email url phone date money percent
"""

from __future__ import annotations

from typing import Any

from app.ai.rules import ENTITY_PATTERNS, classify, extract_entities, summarize
from app.ai.tasks.analysis import KEYWORDS_SCHEMA
from app.cpu import run_cpu
from app.steps.base import StepActivity, StepContext, define

# Texts run to 1 MB: the rules run on the CPU pool so the worker's loop (and heartbeats) go on.
# That alone does not keep the loop free: one regex call holds the GIL until it returns, so the
# rules' patterns are linear-time (app/ai/rules.py) and no single call runs long.


async def _classify(input: dict[str, Any], ctx: StepContext) -> Any:
    return await run_cpu(
        classify, input["text"], input["categories"], input.get("keywords"), input.get("default")
    )


async def _summarize(input: dict[str, Any], ctx: StepContext) -> Any:
    return await run_cpu(
        summarize, input["text"], input.get("max_sentences", 3), input.get("max_chars", 500)
    )


async def _extract(input: dict[str, Any], ctx: StepContext) -> Any:
    return await run_cpu(extract_entities, input["text"], input.get("types"))


TEXT = {"type": "string", "maxLength": 1_000_000}
TEXT_ACTIVITIES: list[StepActivity] = [
    define(
        "text.classify",
        "pick one of `categories` by keyword rules (the non-AI path of classify_content)",
        {
            "type": "object",
            "required": ["text", "categories"],
            "additionalProperties": False,
            "properties": {
                "text": TEXT,
                "categories": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 200,
                    "items": {"type": "string", "maxLength": 200},
                },
                "keywords": KEYWORDS_SCHEMA,
                "default": {"type": "string", "maxLength": 200},
            },
        },
        _classify,
    ),
    define(
        "text.summarize",
        "extractive summary within sentence and character limits (the non-AI path of summarize)",
        {
            "type": "object",
            "required": ["text"],
            "additionalProperties": False,
            "properties": {
                "text": TEXT,
                "max_sentences": {"type": "integer", "minimum": 1, "maximum": 50},
                "max_chars": {"type": "integer", "minimum": 20, "maximum": 20_000},
            },
        },
        _summarize,
    ),
    define(
        "text.extract_entities",
        "emails, URLs, phones, dates, money and percentages by pattern (non-AI extract_entities)",
        {
            "type": "object",
            "required": ["text"],
            "additionalProperties": False,
            "properties": {
                "text": TEXT,
                "types": {"type": "array", "items": {"enum": sorted(ENTITY_PATTERNS)}},
            },
        },
        _extract,
    ),
]
