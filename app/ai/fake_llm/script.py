"""The scriptable state of the fake: rules (what to answer), recorded calls, valid keys.

A `FakeLLM` is shared by the test thread and the server's event loop thread, so every piece of
state sits behind one lock. Rules are tried in the order they were added; the first that
matches answers, and a rule with `times=N` is dropped after answering N calls, so "fail twice,
then succeed" is two rules: `rule(status=429, times=2)` then `rule(json={...})`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.ai.fake_llm.sample import echo_reply, sample_from_schema
from app.ai.fake_llm.wire import PROVIDER_OF, ParsedRequest
from app.ai_catalog import default_catalog

# Every model of the shipped catalogue: the fake offers what a deployment routes to.
DEFAULT_MODELS = tuple(sorted(c.model for c in default_catalog().models))
_USAGE_KEYS = frozenset({"input_tokens", "output_tokens"})


@dataclass
class Rule:
    """When a call matches (every given matcher must hold), how the fake answers it.

    Matchers: `provider` ("openai" | "anthropic"), `api` ("chat" | "responses" | "messages";
    "models" for GET /v1/models, which no other rule touches), `model` (exact), `contains`
    (a substring of the whole prompt text).
    Behaviour: at most one of `text`, `json` (serialised), `status` (an error in the provider's
    shape) or `timeout` (hang until the client goes away or the server stops); none of them
    means the default responder. `latency_ms` is waited first in every case.
    """

    provider: str | None = None
    api: str | None = None
    model: str | None = None
    contains: str | None = None
    text: str | None = None
    json: Any = None
    status: int | None = None
    message: str | None = None  # the error message, with status
    error_type: str | None = None  # overrides the provider's error type for status
    retry_after_ms: int | None = 50  # sent on 408/409/429/5xx so SDK retries are quick
    timeout: bool = False
    latency_ms: int = 0
    times: int | None = None  # None: forever
    usage: dict[str, int] | None = None  # {"input_tokens": X, "output_tokens": Y}, either key
    truncated: bool = False  # finish_reason "length" / stop_reason "max_tokens" / incomplete
    name: str | None = None  # shows up in the recorded calls

    def __post_init__(self) -> None:
        behaviours = [self.text is not None, self.json is not None, self.status, self.timeout]
        if sum(bool(b) for b in behaviours) > 1:
            raise ValueError("a rule has at most one of text, json, status, timeout")
        if self.provider not in (None, "openai", "anthropic"):
            raise ValueError(f"unknown provider {self.provider!r}")
        if self.api not in (None, "models", *PROVIDER_OF):
            raise ValueError(f"unknown api {self.api!r}")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be at least 1")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must not be negative")
        if self.usage is not None and not set(self.usage) <= _USAGE_KEYS:
            raise ValueError(f"usage keys are {sorted(_USAGE_KEYS)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        """A rule from its JSON form (the keys are the field names); unknown keys are errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown rule keys: {sorted(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, as /_fake/script accepts and returns it."""
        return dataclasses.asdict(self)

    def matches(self, provider: str, api: str, request: ParsedRequest) -> bool:
        """Whether every matcher given holds for this call (model listings: only api="models")."""
        return (
            self.provider in (None, provider)
            and (self.api == api if api == "models" else self.api in (None, api))
            and self.model in (None, request.model)
            and (self.contains is None or self.contains in request.prompt)
        )

    def reply_text(self) -> str | None:
        """The scripted answer text, or None to use the default responder."""
        if self.text is not None:
            return self.text
        if self.json is not None:
            return json.dumps(self.json)
        return None


@dataclass(frozen=True)
class LLMRequest:
    """One model call as the default responder sees it."""

    provider: str
    api: str
    parsed: ParsedRequest
    body: dict[str, Any]
    api_key: str | None


# A string is answered verbatim; anything else is serialised to JSON.
Responder = Callable[[LLMRequest], Any]


def default_responder(request: LLMRequest) -> Any:
    """A schema-shaped sample with json_schema, else {"echo": <start of the last user text>}."""
    if request.parsed.response_format == "json_schema":
        return sample_from_schema(request.parsed.schema)
    return echo_reply(request.parsed.last_user)


@dataclass
class RecordedCall:
    """One request to a model endpoint, as the fake saw and answered it."""

    provider: str  # "openai" | "anthropic" (for /v1/models: by the headers sent)
    api: str  # "chat" | "responses" | "messages" | "models"
    path: str
    model: str | None
    api_key: str | None  # the key as sent, from whichever header carried it
    auth_header: str | None  # "authorization" | "x-api-key" | None
    headers: dict[str, str]  # lower-cased, without the credentials
    body: Any
    status: int = 0  # 499: the client went away before the answer
    rule: str | None = None  # the matching rule's name (or "#<index>" when unnamed)
    reply: str | None = None  # the text answered, on success
    started: float = 0.0  # time.monotonic() on arrival
    finished: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form served by /_fake/calls."""
        return dataclasses.asdict(self)


class FakeLLM:
    """Rules, recorded calls and keys of one fake LLM server; safe to use from any thread."""

    def __init__(
        self,
        *,
        valid_keys: Iterable[str] | None = None,
        responder: Responder = default_responder,
        models: Sequence[str] = DEFAULT_MODELS,
        hang_s: float = 120.0,
        any_model: bool = False,
        json_mode_only: Iterable[str] = (),
    ) -> None:
        """`valid_keys` None accepts any non-empty key. `hang_s` bounds a `timeout` rule's
        hang for clients that never give up.

        Per model, like the real APIs: a call to a model not in `models` (which GET /v1/models
        lists) is a 404 in the provider's shape, unless `any_model`. A model in
        `json_mode_only` refuses a JSON Schema response format with a 400 (a compatible server
        without structured outputs); every other model honours it: its reply is made to fit
        the schema, as constrained decoding would (sample.constrain)."""
        self.valid_keys = None if valid_keys is None else frozenset(valid_keys)
        self.responder = responder
        self.models = list(models)
        self.any_model = any_model
        self.json_mode_only = set(json_mode_only)
        self.hang_s = hang_s
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._calls: list[RecordedCall] = []
        self._sleepers: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._next_id = 0

    # -- scripting -------------------------------------------------------------------------

    def rule(self, *, first: bool = False, **fields: Any) -> Rule:
        """Add one rule (keywords are `Rule` fields) after the existing ones, or before them
        with `first`; returns it."""
        return self.script([Rule(**fields)], first=first)[0]

    def script(
        self,
        rules: Iterable[Rule | Mapping[str, Any]],
        *,
        replace: bool = False,
        first: bool = False,
    ) -> list[Rule]:
        """Add rules (objects or their JSON form), keeping their order: after the existing
        ones, or before them with `first` (to override a standing rule); `replace` drops the
        existing ones."""
        # copies: `times` counts down on the stored rule, never on the caller's object
        parsed = [
            dataclasses.replace(r) if isinstance(r, Rule) else Rule.from_dict(r) for r in rules
        ]
        with self._lock:
            if replace:
                self._rules.clear()
            if first:
                self._rules[:0] = parsed
            else:
                self._rules.extend(parsed)
        return parsed

    @property
    def rules(self) -> list[Rule]:
        """The rules still in force, in matching order."""
        with self._lock:
            return list(self._rules)

    def reset(self) -> None:
        """Forget rules and calls, and end any scripted hang or latency still running."""
        with self._lock:
            self._rules.clear()
            self._calls.clear()
        self.release_sleepers()

    def calls(self, *, provider: str | None = None, api: str | None = None) -> list[RecordedCall]:
        """The recorded calls so far (oldest first), optionally filtered."""
        with self._lock:
            return [
                c for c in self._calls if provider in (None, c.provider) and api in (None, c.api)
            ]

    # -- used by the app -------------------------------------------------------------------

    def take_rule(self, provider: str, api: str, request: ParsedRequest) -> tuple[Rule | None, str]:
        """The first matching rule (spending one of its `times`) and its label for the record."""
        with self._lock:
            for index, rule in enumerate(self._rules):
                if rule.matches(provider, api, request):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times == 0:
                            del self._rules[index]
                    return rule, rule.name or f"#{index}"
        return None, "default"

    def knows(self, model: str) -> bool:
        """Whether a call to `model` gets past the model lookup (else: 404)."""
        with self._lock:
            return self.any_model or model in self.models

    def refuses_schema(self, model: str) -> bool:
        """Whether `model` answers a JSON Schema response format with a 400."""
        with self._lock:
            return model in self.json_mode_only

    def key_is_valid(self, key: str | None) -> bool:
        """Whether a call with this key gets past authentication."""
        if not key:
            return False
        return self.valid_keys is None or key in self.valid_keys

    def new_call_id(self) -> str:
        """A unique, deterministic id suffix for an answer."""
        with self._lock:
            self._next_id += 1
            return f"fake{self._next_id:06d}"

    def record(self, call: RecordedCall) -> None:
        """Keep one call for later assertions."""
        with self._lock:
            self._calls.append(call)

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds` on the running loop; False when released early (reset/stop)."""
        loop = asyncio.get_running_loop()
        entry = (loop, loop.create_future())
        with self._lock:
            self._sleepers.add(entry)
        try:
            async with asyncio.timeout(seconds):
                await entry[1]
            return False
        except TimeoutError:
            return True
        finally:
            with self._lock:
                self._sleepers.discard(entry)

    def release_sleepers(self) -> None:
        """End every running `sleep` early, from any thread (server stop, reset)."""
        with self._lock:
            sleepers = list(self._sleepers)
        for loop, future in sleepers:
            try:
                loop.call_soon_threadsafe(_finish, future)
            except RuntimeError:  # that loop is already closed
                pass


def _finish(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
