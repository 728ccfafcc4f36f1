"""The wire shapes of the three faked APIs: what a request asks for, and the JSON to answer.

OpenAI Chat Completions (`chat`), OpenAI Responses (`responses`) and Anthropic Messages
(`messages`). Bodies carry every field the official SDKs need to build their typed objects
(openai 3.57, anthropic 2.14); nothing here talks HTTP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

Provider = Literal["openai", "anthropic"]
Api = Literal["chat", "responses", "messages"]
PROVIDER_OF: dict[str, Provider] = {
    "chat": "openai",
    "responses": "openai",
    "messages": "anthropic",
}

_OPENAI_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class WireError(ValueError):
    """The request body is not something the real API would accept (answered with a 400)."""


@dataclass(frozen=True)
class ParsedRequest:
    """What the fake needs to know about one model call, whatever the API."""

    model: str
    prompt: str  # every piece of prompt text (system, instructions, all messages), "\n"-joined
    last_user: str  # the text of the last user message ("" when there is none)
    response_format: Literal["text", "json_object", "json_schema"]
    schema: dict[str, Any] | None  # the JSON Schema asked for, with json_schema
    stream: bool


def count_tokens(text: str) -> int:
    """A rough, deterministic token count: about four characters a token."""
    return len(text) // 4 + 1


def _text_of(content: Any) -> str:
    """Plain text of a message content: a string, or a list of text parts of any API."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(text for text in map(_text_of, content) if text)
    if isinstance(content, dict):
        text = content.get("text")
        if isinstance(text, str):
            return text
        return _text_of(content.get("content"))
    return ""


def _messages(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    messages = body.get(key)
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise WireError(f"'{key}' must be a list of message objects")
    return messages


def _last_user(messages: list[dict[str, Any]]) -> str:
    users = [m for m in messages if m.get("role", "user") == "user"]
    return _text_of(users[-1].get("content")) if users else ""


def _format_of(fmt: Any) -> tuple[Literal["text", "json_object", "json_schema"], Any]:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        return "json_object", None
    if kind == "json_schema":
        assert isinstance(fmt, dict)
        nested = fmt.get("json_schema")  # chat nests it; responses and anthropic do not
        schema = (nested if isinstance(nested, dict) else fmt).get("schema")
        return "json_schema", schema if isinstance(schema, dict) else {}
    return "text", None


def parse_request(api: Api, body: dict[str, Any]) -> ParsedRequest:
    """Pull model, prompt text and the asked-for output format out of a request body."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise WireError("'model' is required")
    if api == "chat":
        messages = _messages(body, "messages")
        parts = [_text_of(m.get("content")) for m in messages]
        last_user = _last_user(messages)
        fmt = _format_of(body.get("response_format"))
    elif api == "responses":
        raw = body.get("input")
        if isinstance(raw, str):
            messages = [{"role": "user", "content": raw}]
        else:
            messages = _messages(body, "input")
        parts = [_text_of(body.get("instructions")), *(_text_of(m) for m in messages)]
        last_user = _last_user(messages)
        text_config = body.get("text")
        fmt = _format_of(text_config.get("format") if isinstance(text_config, dict) else None)
    else:
        messages = _messages(body, "messages")
        if not isinstance(body.get("max_tokens"), int):
            raise WireError("max_tokens: Field required")
        parts = [_text_of(body.get("system")), *(_text_of(m.get("content")) for m in messages)]
        last_user = _last_user(messages)
        output_config = body.get("output_config")
        fmt = _format_of(output_config.get("format") if isinstance(output_config, dict) else None)
    return ParsedRequest(
        model=model,
        prompt="\n".join(p for p in parts if p),
        last_user=last_user,
        response_format=fmt[0],
        schema=fmt[1],
        stream=body.get("stream") is True,
    )


def success_body(
    api: Api,
    body: dict[str, Any],
    *,
    call_id: str,
    text: str,
    input_tokens: int,
    output_tokens: int,
    truncated: bool,
) -> dict[str, Any]:
    """The JSON of a successful, non-streaming answer carrying `text`."""
    model, now = body["model"], int(time.time())
    if api == "chat":
        return {
            "id": f"chatcmpl-{call_id}",
            "object": "chat.completion",
            "created": now,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "length" if truncated else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": input_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            },
            "system_fingerprint": "fp_fake",
        }
    if api == "responses":
        return {
            "id": f"resp_{call_id}",
            "object": "response",
            "created_at": now,
            "completed_at": now,
            "status": "incomplete" if truncated else "completed",
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": model,
            "output": [
                {
                    "type": "message",
                    "id": f"msg_{call_id}",
                    "status": "incomplete" if truncated else "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
            "parallel_tool_calls": True,
            "temperature": body.get("temperature", 1.0),
            "tool_choice": "auto",
            "tools": [],
            "top_p": body.get("top_p", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
        }
    return {
        "id": f"msg_{call_id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "max_tokens" if truncated else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def error_body(
    provider: Provider, status: int, message: str, error_type: str | None = None
) -> dict[str, Any]:
    """A provider's error JSON: OpenAI's `{"error": {...}}` or Anthropic's `{"type": "error"}`."""
    if provider == "anthropic":
        default = "api_error" if status >= 500 else "invalid_request_error"
        kind = error_type or _ANTHROPIC_ERROR_TYPES.get(status, default)
        return {"type": "error", "error": {"type": kind, "message": message}}
    fallback = ("server_error", None) if status >= 500 else ("invalid_request_error", None)
    kind, code = _OPENAI_ERROR_TYPES.get(status, fallback)
    return {"error": {"message": message, "type": error_type or kind, "param": None, "code": code}}


def model_object(model: str) -> dict[str, Any]:
    """One entry of GET /v1/models, carrying the fields of both SDKs' model types."""
    return {
        "id": model,
        "object": "model",
        "created": 1_700_000_000,
        "owned_by": "fake-llm",
        "type": "model",
        "display_name": model,
        "created_at": "2023-11-14T22:13:20Z",
    }


def model_list(models: list[str]) -> dict[str, Any]:
    """GET /v1/models: OpenAI's list object plus Anthropic's paging fields."""
    return {
        "object": "list",
        "data": [model_object(m) for m in models],
        "has_more": False,
        "first_id": models[0] if models else None,
        "last_id": models[-1] if models else None,
    }
