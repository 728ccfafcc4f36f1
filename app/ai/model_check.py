"""The model check: are the catalogue's models offered by their providers?

At start and every AI_MODEL_CHECK_SECONDS each AI worker lists every configured provider's
models (GET /v1/models, through the official SDKs) and compares them with the models the
catalogue routes to (and their cheaper siblings). Missing ones are reported, never enforced:
a listing can lag a release, and a compatible server may list names differently, so calls
still go out and a 404 marks the model unavailable then (app/ai/health.py). The result is
published to Redis for the API (`aiProviders`, the `/readyz` detail, which does not fail on it)
and printed in `wfs dev`'s banner; each missing model sets wfs_ai_model_unavailable
{reason="not_listed"}.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from app.ai.attempts import sanitize
from app.ai.contracts import Provider, ProviderError
from app.ai.metrics import set_model_unavailable
from app.ai_catalog import Catalog

log = structlog.get_logger(__name__)

CHECK_KEY = "wfs:aimodels"
CHECK_MAX_AGE_SECONDS = 7 * 24 * 3600.0  # an older report (workers gone) is not shown
LIST_TIMEOUT_SECONDS = 10.0


@dataclass
class ProviderCheck:
    """One provider's answer: the configured models it does not list, or why it could not say."""

    provider: str
    configured: list[str]
    missing: list[str] = field(default_factory=list)
    error: str | None = None  # the listing failed: missing is unknown (empty)


@dataclass
class ModelCheck:
    at: float
    providers: list[ProviderCheck]

    def missing(self) -> list[str]:
        """ "provider/model" of every configured model its provider does not list."""
        return [f"{p.provider}/{m}" for p in self.providers for m in p.missing]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> ModelCheck:
        data = json.loads(raw)
        return cls(
            at=float(data["at"]),
            providers=[ProviderCheck(**p) for p in data["providers"]],
        )


_reported: set[tuple[str, str]] = set()  # models this process reports as not listed


async def check_models(
    providers: dict[str, Provider], catalog: Catalog, *, timeout: float = LIST_TIMEOUT_SECONDS
) -> ModelCheck:
    """List each configured provider's models and compare with the catalogue's."""
    wanted: dict[str, list[str]] = {}
    for choice in catalog.configured_models():
        if choice.provider in providers:
            wanted.setdefault(choice.provider, []).append(choice.model)
    checks = []
    for name, models in sorted(wanted.items()):
        check = ProviderCheck(provider=name, configured=models)
        try:
            listed = await providers[name].list_models(timeout=timeout)
        except ProviderError as exc:
            check.error = f"{exc.kind}: {sanitize(str(exc))}"
            log.warning("ai.model_check_failed", provider=name, kind=exc.kind)
        else:
            check.missing = [m for m in models if m not in listed]
        checks.append(check)
    result = ModelCheck(at=time.time(), providers=checks)
    _set_gauges(result)
    for missing in result.missing():
        log.warning("ai.model_not_listed", model=missing)
    return result


def _set_gauges(result: ModelCheck) -> None:
    now = {(p.provider, m) for p in result.providers for m in p.missing}
    checked = {p.provider for p in result.providers if p.error is None}
    for provider, model in _reported - now:
        if provider in checked:  # listed again (a failed listing says nothing)
            set_model_unavailable(provider, model, "not_listed", False)
            _reported.discard((provider, model))
    for provider, model in now:
        set_model_unavailable(provider, model, "not_listed", True)
        _reported.add((provider, model))


async def publish_check(redis: aioredis.Redis, result: ModelCheck, *, key: str = CHECK_KEY) -> None:
    """Best effort: Redis trouble is logged, not raised."""
    try:
        await redis.set(key, result.to_json())
    except (RedisError, OSError) as exc:
        log.warning("ai.model_check_publish_failed", error=str(exc))


async def read_check(
    redis: aioredis.Redis,
    *,
    key: str = CHECK_KEY,
    max_age_seconds: float = CHECK_MAX_AGE_SECONDS,
) -> ModelCheck | None:
    """The last published check, or None (none yet, too old, unreadable, Redis down)."""
    try:
        raw = await redis.get(key)
    except (RedisError, OSError) as exc:
        log.warning("ai.model_check_read_failed", error=str(exc))
        return None
    if raw is None:
        return None
    try:
        result = ModelCheck.from_json(raw)
    except (ValueError, KeyError, TypeError):
        return None
    return result if time.time() - result.at <= max_age_seconds else None


def detail(result: ModelCheck | None) -> dict[str, Any]:
    """The check as the /readyz detail shows it."""
    if result is None:
        return {"checked": False}
    return {
        "checked": True,
        "at": result.at,
        "missing": result.missing(),
        "errors": {p.provider: p.error for p in result.providers if p.error},
    }
