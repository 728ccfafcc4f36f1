"""Process-wide dependencies the API builds once in its lifespan and hands to every request."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from app.db import SessionFactory
from app.events.bus import EventBus
from app.ratelimit import RateLimiter
from app.settings import Settings
from app.tenants.tokens import TokenVerifier


@dataclass
class Deps:
    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    bus: EventBus
    temporal: Client
    limiter: RateLimiter
    redis: aioredis.Redis
    # Access tokens from the identity provider (AUTH_*), or None for API keys only.
    tokens: TokenVerifier | None = None
