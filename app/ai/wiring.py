"""Builds the AI gateway from settings, and the AI worker's upkeep loop: active probes of every
configured model, a health snapshot in Redis that the API's `aiProviders` reads, and the model
check (app/ai/model_check.py) at start and every AI_MODEL_CHECK_SECONDS."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import redis.asyncio as aioredis
import structlog

from app.ai import extensions
from app.ai.budget import BudgetLedger, BudgetNotices, month_bounds, month_spend
from app.ai.cache import AiCache
from app.ai.gateway import AiGateway
from app.ai.health import ProviderHealth, publish_snapshot
from app.ai.input_hash import deployment_key
from app.ai.model_check import check_models, publish_check
from app.ai.providers import build_providers
from app.ai.repository import AiRepository
from app.ai.traced_provider import traced
from app.db import SessionFactory
from app.models.base import utcnow
from app.redis_conn import blocking_redis_client
from app.settings import Settings

log = structlog.get_logger(__name__)


def ai_redis(settings: Settings) -> aioredis.Redis:
    # A blocking pool: under load callers wait for a connection instead of failing at once
    # (redis-py's default pool raises MaxConnectionsError past 100).
    assert settings.redis_url
    return blocking_redis_client(
        settings.redis_url,
        max_connections=200,
        timeout=10,
        socket_connect_timeout=2,
        socket_timeout=5,
    )


def build_gateway(settings: Settings, sessions: SessionFactory | None) -> AiGateway:
    redis = ai_redis(settings)
    catalog = settings.catalog()
    return AiGateway(
        providers=traced(build_providers(settings), catalog),
        ledger=BudgetLedger(
            redis,
            soft_threshold=settings.ai_soft_threshold,
            notices=BudgetNotices(sessions, redis) if sessions is not None else None,
        ),
        cache=AiCache(redis, ttls=settings.ai_cache_ttls),
        health=ProviderHealth(),
        sessions=sessions,
        timeout_seconds=settings.ai_timeout_seconds,
        input_hash_key=deployment_key(settings),
        catalog=catalog,
    )


async def reconcile_budgets(gateway: AiGateway) -> None:
    """Set each tenant's month spend in Redis to PostgreSQL's (the source of truth), so a
    Redis restart or flush cannot reset a budget."""
    if gateway.sessions is None:
        return
    start, _ = month_bounds(utcnow())
    async with gateway.sessions() as session:
        tenants = await AiRepository(session).tenants_with_usage(start)
        for tenant_id in tenants:
            spent = await month_spend(session, tenant_id, start)
            await gateway.ledger.reconcile(str(tenant_id), spent)


async def upkeep(gateway: AiGateway, settings: Settings, stop: asyncio.Event) -> None:
    """Until stop: check the catalogue's models against the providers' lists (at start, then
    every AI_MODEL_CHECK_SECONDS), probe each routed model of each configured provider and
    publish health."""
    redis = gateway.ledger.redis
    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    models = [(c.provider, c.model) for c in gateway.catalog.configured_models()]
    models += sorted(  # plugins' models (app/ai/extensions.py)
        {(c.provider, c.model) for cs in extensions.ROUTES.values() for c in cs} - set(models)
    )
    next_check = 0.0
    while not stop.is_set():
        if time.monotonic() >= next_check:
            await publish_check(redis, await check_models(gateway.providers, gateway.catalog))
            next_check = time.monotonic() + settings.ai_model_check_seconds
        for provider_name, model in models:
            provider = gateway.providers.get(provider_name)
            if provider is None:
                continue
            started = time.monotonic()
            ok = await provider.probe(model, timeout=5)
            gateway.health.record(
                provider_name, model, ok, int((time.monotonic() - started) * 1000), probe=True
            )
        await publish_snapshot(redis, gateway.health, worker_id)
        await reconcile_budgets(gateway)
        try:
            await asyncio.wait_for(stop.wait(), settings.ai_probe_seconds)
        except TimeoutError:
            pass
