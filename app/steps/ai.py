"""`ai.*` step activities: the six AI tasks as template steps.

They run on the AI task queue, served by `wfs worker --queue ai` (workers/ai_activities.py),
so `run` is None here: these entries give templates the names and input schemas to validate
against. Every one answers even without AI: a free tier, a missing key, an exhausted budget or
a failing provider give the task's baseline result, with the reason in the output's `ai` field.
"""

from __future__ import annotations

from app.ai.contracts import TASKS
from app.ai.tasks import TASK_SPECS
from app.steps.base import StepActivity, define

DESCRIPTIONS = {
    "generate_text": "write text from a sandboxed Jinja2 prompt template and variables",
    "classify_content": "pick one of the given categories for a text",
    "summarize": "summarise a text within sentence and character limits",
    "extract_entities": "find entities of the requested types that occur in the text",
    "personalize_content": "adapt a message template to a user",
    "optimize_timing": "the best time to send, from time zone and engagement history",
}

ACTIVITIES: list[StepActivity] = [
    define(
        f"ai.{task}",
        f"AI: {DESCRIPTIONS[task]} (baseline without AI)",
        TASK_SPECS[task].input_schema,
        None,
    )
    for task in TASKS
]
