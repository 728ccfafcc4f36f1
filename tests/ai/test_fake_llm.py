"""The fake LLM server driven by the real OpenAI and Anthropic SDKs over real sockets."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import anthropic
import httpx
import httpx2
import openai
import pytest
from pydantic import BaseModel

from app.ai.fake_llm.sample import constrain
from tests.fakes.llm import FakeLLM, FakeLLMServer, Rule, count_tokens, create_app

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-test-key"
SDK: dict[str, Any] = {"openai": openai, "anthropic": anthropic}
PROVIDERS = ["openai", "anthropic"]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as running:
        yield running


@pytest.fixture
def fake(server: FakeLLMServer) -> FakeLLM:
    server.fake.reset()
    return server.fake


def openai_client(base_url: str, **options: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=base_url, **{"api_key": KEY, "max_retries": 0, "timeout": 10.0, **options}
    )


def anthropic_client(base_url: str, **options: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=base_url, **{"api_key": KEY, "max_retries": 0, "timeout": 10.0, **options}
    )


async def ask(base_url: str, provider: str, prompt: str = "hello", **options: Any) -> str:
    """One call through a new client of `provider`'s real SDK to the fake at `base_url`."""
    if provider == "openai":
        async with openai_client(f"{base_url}/v1", **options) as client:
            return await complete(client, prompt)
    async with anthropic_client(base_url, **options) as client:
        return await complete(client, prompt)


async def complete(client: openai.AsyncOpenAI | anthropic.AsyncAnthropic, prompt: str) -> str:
    """One chat completion (OpenAI) or message (Anthropic); the answer's text."""
    if isinstance(client, openai.AsyncOpenAI):
        completion = await client.chat.completions.create(
            model="gpt-6-luna", messages=[{"role": "user", "content": prompt}]
        )
        return completion.choices[0].message.content or ""
    message = await client.messages.create(
        model="claude-haiku-5-5",
        max_tokens=256,
        messages=[{"role": "user", "content": prompt}],
    )
    block = message.content[0]
    assert isinstance(block, anthropic.types.TextBlock)
    return block.text


async def eventually(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_chat_completion_returns_scripted_json(server: FakeLLMServer, fake: FakeLLM) -> None:
    fake.rule(provider="openai", api="chat", json={"category": "billing", "score": 0.9})
    system, user = "Classify the ticket.", "I was charged twice this month"
    async with openai_client(server.openai_base_url) as client:
        completion = await client.chat.completions.create(
            model="gpt-6-luna",
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
            response_format={"type": "json_object"},
            max_completion_tokens=200,
            temperature=0,
        )
    content = completion.choices[0].message.content or ""
    assert json.loads(content) == {"category": "billing", "score": 0.9}
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-6-luna" and completion.object == "chat.completion"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == count_tokens(f"{system}\n{user}")
    assert completion.usage.completion_tokens == count_tokens(content)
    usage = completion.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    (call,) = fake.calls()
    assert (call.provider, call.api, call.model) == ("openai", "chat", "gpt-6-luna")
    assert call.status == 200 and call.body["response_format"] == {"type": "json_object"}


async def test_responses_api_returns_scripted_text(server: FakeLLMServer, fake: FakeLLM) -> None:
    fake.rule(api="responses", text="Hello there", usage={"output_tokens": 7})
    async with openai_client(server.openai_base_url) as client:
        response = await client.responses.create(
            model="gpt-6.2-astra",
            instructions="Be brief.",
            input=[{"role": "user", "content": "Say hi"}],
        )
    assert response.output_text == "Hello there"
    assert response.status == "completed"
    assert response.usage is not None
    assert response.usage.input_tokens == count_tokens("Be brief.\nSay hi")
    assert response.usage.output_tokens == 7  # overridden by the rule
    assert response.usage.total_tokens == response.usage.input_tokens + 7


async def test_anthropic_messages_record_the_key_sent(server: FakeLLMServer, fake: FakeLLM) -> None:
    fake.rule(provider="anthropic", text="Bonjour")
    async with anthropic_client(server.anthropic_base_url, api_key="sk-ant-123") as client:
        message = await client.messages.create(
            model="claude-opus-5-5",
            max_tokens=256,
            system="You translate to French.",
            messages=[{"role": "user", "content": "Hello"}],
        )
    block = message.content[0]
    assert isinstance(block, anthropic.types.TextBlock) and block.text == "Bonjour"
    assert message.stop_reason == "end_turn" and message.role == "assistant"
    assert message.usage.input_tokens == count_tokens("You translate to French.\nHello")
    assert message.usage.output_tokens == count_tokens("Bonjour")
    (call,) = fake.calls(provider="anthropic")
    assert call.api_key == "sk-ant-123"
    assert call.auth_header == "authorization"  # anthropic 2.14 sends Bearer, not x-api-key
    assert "anthropic-version" in call.headers


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_rate_limited_twice_then_success(
    server: FakeLLMServer, fake: FakeLLM, provider: str
) -> None:
    fake.rule(provider=provider, status=429, times=1, retry_after_ms=700)
    fake.rule(provider=provider, status=429, times=1)  # retry-after-ms: 50
    fake.rule(provider=provider, text="finally")
    assert await ask(server.base_url, provider, max_retries=2) == "finally"
    calls = fake.calls()
    assert [c.status for c in calls] == [429, 429, 200]
    assert [c.headers["x-stainless-retry-count"] for c in calls] == ["0", "1", "2"]
    # the SDK waited as told (its own first backoff would be 0.375-0.5 s)
    assert calls[1].started - calls[0].finished >= 0.7
    assert fake.rules == [Rule(provider=provider, text="finally")]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_rate_limit_without_retries_raises(
    server: FakeLLMServer, fake: FakeLLM, provider: str
) -> None:
    fake.rule(provider=provider, status=429)
    with pytest.raises(SDK[provider].RateLimitError) as caught:
        await ask(server.base_url, provider, max_retries=0)
    assert caught.value.response.headers["retry-after-ms"] == "50"
    if provider == "openai":  # the SDK keeps only the inner "error" object
        assert caught.value.body["code"] == "rate_limit_exceeded"
    else:
        assert caught.value.type == "rate_limit_error"
    assert len(fake.calls()) == 1


@pytest.mark.parametrize(
    ("provider", "status", "error"),
    [
        ("openai", 500, "InternalServerError"),
        ("anthropic", 500, "InternalServerError"),
        ("anthropic", 529, "OverloadedError"),
        ("openai", 400, "BadRequestError"),
        ("anthropic", 400, "BadRequestError"),
    ],
)
async def test_status_errors_map_to_sdk_exceptions(
    server: FakeLLMServer, fake: FakeLLM, provider: str, status: int, error: str
) -> None:
    fake.rule(provider=provider, status=status, times=1)
    with pytest.raises(getattr(SDK[provider], error)) as caught:
        await ask(server.base_url, provider, max_retries=0)
    assert caught.value.status_code == status
    if status == 529:
        assert isinstance(caught.value, anthropic.InternalServerError)
        assert caught.value.type == "overloaded_error"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_bad_request_is_not_retried(
    server: FakeLLMServer, fake: FakeLLM, provider: str
) -> None:
    fake.rule(provider=provider, status=400)
    with pytest.raises(SDK[provider].BadRequestError):
        await ask(server.base_url, provider, max_retries=2)
    assert len(fake.calls()) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_client_timeout_on_a_hang(
    server: FakeLLMServer, fake: FakeLLM, provider: str
) -> None:
    fake.rule(provider=provider, timeout=True)
    started = time.monotonic()
    with pytest.raises(SDK[provider].APITimeoutError):
        await ask(server.base_url, provider, timeout=0.5, max_retries=0)
    assert time.monotonic() - started < 3.0
    # the hanging handler saw the client go away and ended (recorded as 499)
    await eventually(lambda: [c.status for c in fake.calls()] == [499])


async def test_stop_ends_hanging_calls() -> None:
    fake = FakeLLM()
    server = FakeLLMServer(fake)
    server.start()
    try:
        fake.rule(timeout=True, times=1)
        call = asyncio.create_task(ask(server.base_url, "openai", timeout=30.0))
        await eventually(lambda: not fake.rules)  # the hang has begun
        started = time.monotonic()
        await asyncio.to_thread(server.stop)
        assert time.monotonic() - started < 3.0
        with pytest.raises(openai.APIError):  # 504 "scripted hang ended"
            await asyncio.wait_for(call, 5)
    finally:
        server.stop()


async def test_latency_delays_the_answer(server: FakeLLMServer, fake: FakeLLM) -> None:
    fake.rule(latency_ms=300, text="slow")
    started = time.monotonic()
    assert await ask(server.base_url, "anthropic") == "slow"
    assert time.monotonic() - started >= 0.3
    (call,) = fake.calls()
    assert call.finished - call.started >= 0.3


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_missing_or_wrong_key_is_rejected(provider: str) -> None:
    with FakeLLMServer(FakeLLM(valid_keys={"good-key"})) as server:
        with pytest.raises(SDK[provider].AuthenticationError):
            await ask(server.base_url, provider, api_key="bad-key")
        if provider == "openai":  # openai ignores Omit() in default_headers: per request only
            async with openai_client(server.openai_base_url) as client:
                with pytest.raises(openai.AuthenticationError):
                    await client.chat.completions.create(
                        model="gpt-6-luna",
                        messages=[{"role": "user", "content": "hi"}],
                        extra_headers={"Authorization": openai.Omit()},
                    )
        else:
            with pytest.raises(anthropic.AuthenticationError):
                await ask(
                    server.base_url, provider, default_headers={"Authorization": anthropic.Omit()}
                )
        assert await ask(server.base_url, provider, api_key="good-key")
        assert [(c.api_key, c.status) for c in server.fake.calls()] == [
            ("bad-key", 401),
            (None, 401),
            ("good-key", 200),
        ]


async def test_error_shapes_and_x_api_key(server: FakeLLMServer, fake: FakeLLM) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        chat = await http.post("/v1/chat/completions", json={"model": "m", "messages": []})
        assert chat.status_code == 401 and set(chat.json()["error"]) >= {"message", "type", "code"}
        messages = await http.post("/v1/messages", json={"model": "m"})
        assert messages.status_code == 401
        assert messages.json()["type"] == "error"
        assert messages.json()["error"]["type"] == "authentication_error"
        body = {
            "model": "claude-haiku-5-5",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
        }
        ok = await http.post("/v1/messages", json=body, headers={"x-api-key": "k2"})
        assert ok.status_code == 200 and ok.json()["content"][0]["text"] == '{"echo": "hi"}'
        streamed = await http.post(
            "/v1/messages", json={**body, "stream": True}, headers={"x-api-key": "k2"}
        )
        assert streamed.status_code == 400
        assert streamed.json()["error"]["type"] == "invalid_request_error"
    assert (fake.calls()[2].auth_header, fake.calls()[2].api_key) == ("x-api-key", "k2")


async def test_openai_stream_is_refused(server: FakeLLMServer, fake: FakeLLM) -> None:
    async with openai_client(server.openai_base_url) as client:
        with pytest.raises(openai.BadRequestError, match="streaming"):
            await client.chat.completions.create(
                model="gpt-6-luna", messages=[{"role": "user", "content": "x"}], stream=True
            )


async def test_rules_match_by_model_and_prompt(server: FakeLLMServer, fake: FakeLLM) -> None:
    fake.rule(model="gpt-6-luna", contains="invoice", text="billing", name="invoices")
    fake.rule(provider="openai", text="other")
    fake.rule(provider="openai", text="first!", times=1, first=True)
    assert await ask(server.base_url, "openai", "about my invoice") == "first!"
    assert await ask(server.base_url, "openai", "about my invoice") == "billing"
    assert await ask(server.base_url, "openai", "about the weather") == "other"
    default = await ask(server.base_url, "anthropic", "about the weather")
    assert default == '{"echo": "about the weather"}'
    assert [c.rule for c in fake.calls()] == ["#0", "invoices", "#1", "default"]
    with pytest.raises(ValueError):
        Rule(text="a", status=500)


class Verdict(BaseModel):
    label: Literal["spam", "ham"]
    score: float
    reasons: list[str]


async def test_default_reply_follows_the_requested_schema(
    server: FakeLLMServer, fake: FakeLLM
) -> None:
    async with openai_client(server.openai_base_url) as client:
        completion = await client.chat.completions.parse(
            model="gpt-6-luna",
            messages=[{"role": "user", "content": "Buy now!!!"}],
            response_format=Verdict,
        )
    assert completion.choices[0].message.parsed == Verdict(label="spam", score=0, reasons=[])


async def test_models_listing_for_health_probes(server: FakeLLMServer, fake: FakeLLM) -> None:
    async with openai_client(server.openai_base_url) as client:
        assert "gpt-6-luna" in [m.id async for m in client.models.list()]
    fake.rule(api="models", provider="anthropic", status=503, times=1)
    async with anthropic_client(server.anthropic_base_url) as client:
        with pytest.raises(anthropic.ServiceUnavailableError):
            await client.models.list()
        assert (await client.models.retrieve("claude-opus-5-5")).id == "claude-opus-5-5"
    assert [(c.provider, c.api, c.status) for c in fake.calls()] == [
        ("openai", "models", 200),
        ("anthropic", "models", 503),
        ("anthropic", "models", 200),
    ]


async def test_control_api_of_a_separate_process() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "app.ai.fake_llm", "--port", "0", "--log-level", "warning"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        banner = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
        base_url = banner.split("anthropic base_url ")[1].strip()
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
            await _script_and_check(http, base_url)
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _script_and_check(http: httpx.AsyncClient, base_url: str) -> None:
    assert (await http.get("/healthz")).json() == {"ok": True}
    rules = [
        {"provider": "openai", "status": 429, "times": 1},
        {"provider": "openai", "json": {"ok": True}},
    ]
    scripted = await http.post("/_fake/script", json={"rules": rules})
    assert scripted.json() == {"added": 2, "rules": 2}
    bad = await http.post("/_fake/script", json={"rules": [{"colour": "red"}]})
    assert bad.status_code == 400
    assert len((await http.get("/_fake/script")).json()["rules"]) == 2
    assert json.loads(await ask(base_url, "openai", max_retries=1)) == {"ok": True}
    calls = (await http.get("/_fake/calls", params={"provider": "openai"})).json()["calls"]
    assert [(c["status"], c["api_key"]) for c in calls] == [(429, KEY), (200, KEY)]
    assert (await http.post("/_fake/reset")).json() == {"ok": True}
    assert (await http.get("/_fake/calls")).json() == {"calls": []}
    assert (await http.get("/_fake/script")).json() == {"rules": []}


async def test_fifty_concurrent_calls(server: FakeLLMServer, fake: FakeLLM) -> None:
    fake.rule(latency_ms=100)
    prompts = [f"question {i}" for i in range(50)]
    async with (
        openai_client(server.openai_base_url) as openai_sdk,
        anthropic_client(server.anthropic_base_url) as anthropic_sdk,
    ):
        clients = [openai_sdk, anthropic_sdk]
        answers = await asyncio.gather(
            *(complete(clients[i % 2], prompt) for i, prompt in enumerate(prompts))
        )
    assert answers == [json.dumps({"echo": prompt}) for prompt in prompts]
    calls = fake.calls()
    assert len(calls) == 50 and {c.status for c in calls} == {200}
    events = sorted([(c.started, 1) for c in calls] + [(c.finished, -1) for c in calls])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak > 1  # the calls overlapped


async def test_in_process_via_asgi_transport() -> None:
    fake = FakeLLM()
    fake.rule(latency_ms=50, text="in process")
    transport = httpx2.ASGITransport(app=create_app(fake))
    async with httpx2.AsyncClient(transport=transport, base_url="http://fake") as http:
        client = openai_client("http://fake/v1", http_client=http)
        assert await complete(client, "hi") == "in process"


async def test_unknown_models_are_404_in_each_providers_shape(
    server: FakeLLMServer, fake: FakeLLM
) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        await openai_client(server.openai_base_url).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.NotFoundError) as caught:
        await anthropic_client(server.anthropic_base_url).messages.create(
            model="claude-3-5-sonnet-latest",
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
        )
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await openai_client(server.openai_base_url).models.retrieve("gpt-4o")
    assert [c.status for c in fake.calls()] == [404, 404, 404]
    fake.any_model = True  # a compatible server that takes any name
    try:
        answer = await openai_client(server.openai_base_url).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )
        assert answer.model == "gpt-4o"
    finally:
        fake.any_model = False


def test_constrain_writes_what_the_model_meant_under_the_schema() -> None:
    schema = {
        "type": "object",
        "required": ["category", "confidence"],
        "properties": {
            "category": {"type": "string", "enum": ["Billing", "Support"]},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
    }
    assert constrain({"result": {"label": "billing", "confidence": "0.7"}}, schema) == {
        "category": "Billing",
        "confidence": 0.7,
    }
    assert constrain({"category": "Support", "confidence": 3, "extra": 1}, schema) == {
        "category": "Support",
        "confidence": 1,
    }
    assert constrain(None, schema) == {"category": "Billing", "confidence": 0}
