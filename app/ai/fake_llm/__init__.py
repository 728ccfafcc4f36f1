"""A local, scriptable fake of the OpenAI (Chat Completions, Responses) and Anthropic (Messages)
APIs, for dev and tests that drive the real SDKs over real sockets.

    with FakeLLMServer() as server:
        server.fake.rule(provider="openai", status=429, times=2)
        server.fake.rule(provider="openai", json={"ok": True})
        client = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k")

Separate process: `python -m app.ai.fake_llm --port 8400`, scripted over POST /_fake/script,
POST /_fake/reset and GET /_fake/calls.
"""

from app.ai.fake_llm.app import create_app
from app.ai.fake_llm.sample import sample_from_schema
from app.ai.fake_llm.script import (
    DEFAULT_MODELS,
    FakeLLM,
    LLMRequest,
    RecordedCall,
    Responder,
    Rule,
    default_responder,
)
from app.ai.fake_llm.server import FakeLLMServer, main
from app.ai.fake_llm.wire import count_tokens

__all__ = [
    "DEFAULT_MODELS",
    "FakeLLM",
    "FakeLLMServer",
    "LLMRequest",
    "RecordedCall",
    "Responder",
    "Rule",
    "count_tokens",
    "create_app",
    "default_responder",
    "main",
    "sample_from_schema",
]
