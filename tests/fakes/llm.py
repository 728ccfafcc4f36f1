"""The fake LLM server for tests: scripted OpenAI and Anthropic APIs on a real socket.

Re-exported from app.ai.fake_llm, which also serves `wfs dev --fake-llm`.
"""

from app.ai.fake_llm import (
    FakeLLM,
    FakeLLMServer,
    LLMRequest,
    RecordedCall,
    Responder,
    Rule,
    count_tokens,
    create_app,
    default_responder,
    sample_from_schema,
)

__all__ = [
    "FakeLLM",
    "FakeLLMServer",
    "LLMRequest",
    "RecordedCall",
    "Responder",
    "Rule",
    "count_tokens",
    "create_app",
    "default_responder",
    "sample_from_schema",
]
