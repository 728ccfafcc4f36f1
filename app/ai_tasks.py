"""The names of the AI tasks, in a leaf module: settings validates AI_CACHE_TTLS against them
without importing the AI layer (app.ai imports app.settings; the import contract forbids the
cycle). app/ai/contracts.py re-exports them as TASKS."""

TASKS = (
    "generate_text",
    "classify_content",
    "summarize",
    "extract_entities",
    "personalize_content",
    "optimize_timing",
)
