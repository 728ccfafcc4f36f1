"""The fake's Starlette app: model endpoints of both providers, health, and /_fake control.

Every model call is authenticated (Bearer or x-api-key), parsed, matched against the rules of
the `FakeLLM`, answered, and recorded. Scripted waits (latency, hangs) race the client's
disconnect and the fake's release, so a client timeout or a server stop ends them at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.ai.fake_llm.sample import constrain
from app.ai.fake_llm.script import FakeLLM, LLMRequest, RecordedCall, Rule
from app.ai.fake_llm.wire import (
    PROVIDER_OF,
    Api,
    ParsedRequest,
    Provider,
    WireError,
    count_tokens,
    error_body,
    model_list,
    model_object,
    parse_request,
    success_body,
)
from app.ai.tasks.base import parse_reply

_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key"})
_CLIENT_GONE = 499  # nginx's "client closed request": recorded when the caller gave up
_DEFAULT_MESSAGES = {
    400: "fake: bad request",
    401: "fake: invalid API key",
    404: "fake: not found",
    429: "fake: rate limit reached, retry shortly",
    500: "fake: internal server error",
    503: "fake: service unavailable",
    529: "fake: overloaded",
}

Pause = Literal["elapsed", "released", "disconnected"]


def create_app(fake: FakeLLM) -> Starlette:
    """An ASGI app serving `fake` (run it with FakeLLMServer, uvicorn, or httpx2.ASGITransport)."""

    async def chat(request: Request) -> Response:
        return await _model_call(fake, request, "chat")

    async def responses(request: Request) -> Response:
        return await _model_call(fake, request, "responses")

    async def messages(request: Request) -> Response:
        return await _model_call(fake, request, "messages")

    async def models(request: Request) -> Response:
        return await _model_call(fake, request, "models")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def script(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse({"rules": [r.to_dict() for r in fake.rules]})
        try:
            data = await request.json()
            rules = data.get("rules", [])
            if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
                raise ValueError("'rules' must be a list of rule objects")
            added = fake.script(
                rules, replace=bool(data.get("replace")), first=bool(data.get("first"))
            )
        except (ValueError, TypeError, AttributeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"added": len(added), "rules": len(fake.rules)})

    async def reset(request: Request) -> Response:
        fake.reset()
        return JSONResponse({"ok": True})

    async def calls(request: Request) -> Response:
        found = fake.calls(
            provider=request.query_params.get("provider"), api=request.query_params.get("api")
        )
        return JSONResponse({"calls": [c.to_dict() for c in found]})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/responses", responses, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", models, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/_fake/script", script, methods=["GET", "POST"]),
            Route("/_fake/reset", reset, methods=["POST"]),
            Route("/_fake/calls", calls, methods=["GET"]),
        ]
    )


async def _model_call(fake: FakeLLM, request: Request, api: Api | Literal["models"]) -> Response:
    """Answer one provider call and record it, whatever happens (499 if cancelled)."""
    if api == "models":  # shared by both SDKs: tell them apart by Anthropic's version header
        provider: Provider = "anthropic" if "anthropic-version" in request.headers else "openai"
    else:
        provider = PROVIDER_OF[api]
    key, auth_header = _credentials(request)
    call = RecordedCall(
        provider=provider,
        api=api,
        path=request.url.path,
        model=request.path_params.get("model_id"),
        api_key=key,
        auth_header=auth_header,
        headers={k: v for k, v in request.headers.items() if k not in _CREDENTIAL_HEADERS},
        body=None,
        status=_CLIENT_GONE,
        started=time.monotonic(),
    )
    try:
        response = await _answer(fake, request, provider, api, call)
        call.status = response.status_code
        return response
    finally:
        call.finished = time.monotonic()
        fake.record(call)


async def _answer(
    fake: FakeLLM,
    request: Request,
    provider: Provider,
    api: Api | Literal["models"],
    call: RecordedCall,
) -> Response:
    if not fake.key_is_valid(call.api_key):
        message = "fake: invalid API key" if call.api_key else "fake: no API key provided"
        return _error(provider, 401, message)
    if api == "models":
        return await _models_answer(fake, request, provider, call)
    try:
        body = await request.json()
        if not isinstance(body, dict):
            raise WireError("the body must be a JSON object")
        call.body = body
        parsed = parse_request(api, body)
    except ValueError as exc:  # WireError, or JSON that does not parse
        return _error(provider, 400, f"fake: {exc}")
    call.model = parsed.model
    if parsed.stream:
        return _error(provider, 400, "fake: streaming is not supported; call without stream")
    rule, call.rule = fake.take_rule(provider, api, parsed)
    waited = await _scripted_waits(fake, request, rule)
    if waited == "disconnected":
        return Response(status_code=_CLIENT_GONE)
    if rule is not None and rule.timeout:
        return _error(provider, 504, "fake: scripted hang ended", retry_after_ms=None)
    if rule is not None and rule.status:
        return _scripted_error(provider, rule, rule.status)
    refused = _model_refusal(fake, provider, parsed)
    if refused is not None:
        return refused
    try:
        text = _reply_text(fake, rule, LLMRequest(provider, api, parsed, body, call.api_key))
    except Exception as exc:  # a broken custom responder: tell the test, as the provider would
        return _error(provider, 500, f"fake: responder failed: {exc!r}", retry_after_ms=None)
    if parsed.response_format == "json_schema" and (rule is None or rule.reply_text() is None):
        # The responder's answer, decoded under the schema; a scripted text or json stays
        # verbatim (a test scripts exactly what arrives).
        text = constrained(text, parsed.schema)
    call.reply = text
    call_id = fake.new_call_id()
    input_tokens, output_tokens = _usage(rule, parsed, text)
    payload = success_body(
        api,
        body,
        call_id=call_id,
        text=text,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        truncated=rule is not None and rule.truncated,
    )
    return JSONResponse(payload, headers=_request_id(provider, call_id))


async def _models_answer(
    fake: FakeLLM, request: Request, provider: Provider, call: RecordedCall
) -> Response:
    """GET /v1/models and /v1/models/{id}: only rules with api="models" apply here."""
    probe = ParsedRequest(call.model or "", "", "", "text", None, False)
    rule, label = fake.take_rule(provider, "models", probe)
    if rule is not None:
        call.rule = label
        if await _scripted_waits(fake, request, rule) == "disconnected":
            return Response(status_code=_CLIENT_GONE)
        if rule.status:
            return _scripted_error(provider, rule, rule.status)
    if call.model:
        if not fake.knows(call.model):
            return _error(provider, 404, f"model: {call.model}")
        return JSONResponse(model_object(call.model))
    return JSONResponse(model_list(fake.models))


async def _scripted_waits(fake: FakeLLM, request: Request, rule: Rule | None) -> Pause:
    """The rule's latency, then its hang (if it is a timeout rule)."""
    if rule is None:
        return "elapsed"
    outcome: Pause = "elapsed"
    if rule.latency_ms:
        outcome = await _pause(fake, request, rule.latency_ms / 1000)
    if outcome == "elapsed" and rule.timeout:
        outcome = await _pause(fake, request, fake.hang_s)
    return outcome


async def _pause(fake: FakeLLM, request: Request, seconds: float) -> Pause:
    """Wait `seconds`, unless the client disconnects or the fake releases its sleepers."""
    sleeper = asyncio.create_task(fake.sleep(seconds))
    watcher = asyncio.create_task(_disconnected(request))
    try:
        done, _ = await asyncio.wait({sleeper, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, watcher):
            task.cancel()
        await asyncio.gather(sleeper, watcher, return_exceptions=True)
    if watcher in done:
        return "disconnected"
    return "elapsed" if sleeper.result() else "released"


async def _disconnected(request: Request) -> None:
    """Return once the client has gone (the body is already read, so only that can arrive)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _credentials(request: Request) -> tuple[str | None, str | None]:
    """The API key and the header that carried it: `Authorization: Bearer`, else x-api-key."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip(), "authorization"
    key = request.headers.get("x-api-key")
    return (key, "x-api-key") if key else (None, None)


def _model_refusal(fake: FakeLLM, provider: Provider, parsed: ParsedRequest) -> Response | None:
    """What the real APIs answer for a model they do not have, or a format it cannot do."""
    if not fake.knows(parsed.model):
        if provider == "anthropic":
            return _error(provider, 404, f"model: {parsed.model}")
        message = f"The model `{parsed.model}` does not exist or you do not have access to it."
        return _error(provider, 404, message)
    if parsed.response_format == "json_schema" and fake.refuses_schema(parsed.model):
        field = "output_config.format" if provider == "anthropic" else "response_format"
        return _error(provider, 400, f"fake: {field} json_schema is not supported by this model")
    return None


def constrained(text: str, schema: dict[str, Any] | None) -> str:
    """A reply made to fit `schema`, as a model decoding under the schema would give: the JSON
    object the text meant (prose around it cannot be written under a schema), constrained. A
    reply with no object in it (cut off) gets the schema's smallest sample."""
    try:
        value: Any = json.loads(text)
    except ValueError:
        try:
            value = parse_reply(text)
        except ValueError:
            value = None
    return json.dumps(constrain(value, schema or {}))


def _reply_text(fake: FakeLLM, rule: Rule | None, request: LLMRequest) -> str:
    scripted = rule.reply_text() if rule is not None else None
    if scripted is not None:
        return scripted
    reply = fake.responder(request)
    return reply if isinstance(reply, str) else json.dumps(reply)


def _usage(rule: Rule | None, parsed: ParsedRequest, text: str) -> tuple[int, int]:
    usage = {"input_tokens": count_tokens(parsed.prompt), "output_tokens": count_tokens(text)}
    if rule is not None and rule.usage:
        usage.update(rule.usage)
    return usage["input_tokens"], usage["output_tokens"]


def _request_id(provider: Provider, call_id: str) -> dict[str, str]:
    header = "request-id" if provider == "anthropic" else "x-request-id"
    return {header: f"req_{call_id}"}


def _scripted_error(provider: Provider, rule: Rule, status: int) -> JSONResponse:
    message = rule.message or _DEFAULT_MESSAGES.get(status, f"fake: error {status}")
    return _error(provider, status, message, rule.error_type, rule.retry_after_ms)


def _error(
    provider: Provider,
    status: int,
    message: str,
    error_type: str | None = None,
    retry_after_ms: int | None = 50,
) -> JSONResponse:
    """An error in the provider's JSON shape; retryable statuses say how soon to retry."""
    headers = _request_id(provider, "fake_error")
    if retry_after_ms is not None and (status in (408, 409, 429) or status >= 500):
        headers["retry-after-ms"] = str(retry_after_ms)
        headers["retry-after"] = f"{retry_after_ms / 1000:g}"
    body: dict[str, Any] = error_body(provider, status, message, error_type)
    return JSONResponse(body, status_code=status, headers=headers)
