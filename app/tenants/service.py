"""Tenants, API keys and authentication of a bearer key or access token (app/tenants/tokens.py).

A key is `wfs_<8-char prefix>_<secret>`; only its SHA-256 is stored (the secret has 256 bits of
entropy, so a fast hash is enough and lookups stay one indexed query). `last_used_at` is
written at most once a minute per key so authentication does not turn every read into a write.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, NotFound, Unauthenticated, ValidationFailed
from app.models import ROLES, ApiKey, Tenant
from app.models.base import utcnow
from app.models.template import PLATFORM_PUBLISHER_NAME
from app.tenants.repository import TenantRepository
from app.tenants.tokens import TokenVerifier
from app.tiers import TIERS

log = structlog.get_logger(__name__)
TOUCH_INTERVAL = timedelta(minutes=1)
TENANT_NAME = re.compile(r"[a-z](?:-?[a-z0-9])+")
KEY_PREFIXES = ("wfs_", "wfsp_")  # tenant and platform API keys; any other bearer is a token


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved from an API key, or from an identity provider's access token
    (then `key_id` is None and `expires_at`/`subject` are the token's `exp` and `sub`)."""

    tenant_id: uuid.UUID
    tenant_name: str
    tier: str
    role: str
    key_id: uuid.UUID | None
    expires_at: datetime | None = None
    subject: str | None = None


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def parse_bearer(header: str | None) -> str:
    if not header:
        raise Unauthenticated("missing API key: send `Authorization: Bearer <key>`")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("malformed Authorization header: expected `Bearer <key>`")
    return token.strip()


class TenantService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.repo = TenantRepository(session)

    async def create_tenant(self, name: str, tier: str) -> Tenant:
        name = name.strip()
        if name.lower() == PLATFORM_PUBLISHER_NAME:
            raise Conflict(f"{name!r} is the platform's own publisher name")
        if len(name) > 100 or not TENANT_NAME.fullmatch(name):
            # ASCII only: a tenant's name is its publisher name in the public catalog, where
            # look-alike letters or invisible characters would let it pass for another one.
            raise ValidationFailed(
                "tenant name must be 2-100 characters: lower-case letters, digits and single "
                "hyphens, starting with a letter"
            )
        if tier not in TIERS:
            raise ValidationFailed(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}")
        if await self.repo.by_name(name):
            raise Conflict(f"tenant {name!r} already exists")
        return await self.repo.add(Tenant(name=name, tier=tier))

    async def set_tier(self, name: str, tier: str) -> tuple[Tenant, str]:
        """Move a tenant to another tier; returns the tenant and its previous tier.

        A platform operator's action only (`wfs tenant set-tier`): no tenant credential reaches
        it, since a tier is what the tenant pays for. What the tier entitles to (models, budget
        maximum, concurrency) is read from the tier at use, so it applies from the next call."""
        if tier not in TIERS:
            raise ValidationFailed(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}")
        tenant = await self.get_by_name(name)
        previous = tenant.tier
        tenant.tier = tier
        await self.session.flush()
        log.info("tenant.tier_changed", tenant_id=str(tenant.id), previous=previous, tier=tier)
        return tenant, previous

    async def get_by_name(self, name: str) -> Tenant:
        tenant = await self.repo.by_name(name)
        if tenant is None:
            raise NotFound(f"tenant {name!r} not found")
        return tenant

    async def create_api_key(
        self, tenant: Tenant, role: str = "admin", name: str = "default"
    ) -> tuple[ApiKey, str]:
        """Returns the stored key and its plaintext, which is shown once and never stored."""
        if role not in ROLES:
            raise ValidationFailed(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        prefix = secrets.token_hex(4)
        plaintext = f"wfs_{prefix}_{secrets.token_urlsafe(32)}"
        key = ApiKey(
            tenant_id=tenant.id, name=name, prefix=prefix, key_hash=hash_key(plaintext), role=role
        )
        await self.repo.add_key(key)
        return key, plaintext

    async def authenticate(
        self, authorization: str | None, *, tokens: TokenVerifier | None = None
    ) -> Principal:
        bearer = parse_bearer(authorization)
        if tokens is not None and not bearer.startswith(KEY_PREFIXES):
            return await self._authenticate_token(bearer, tokens)
        found = await self.repo.key_by_hash(hash_key(bearer))
        if found is None:
            raise Unauthenticated("invalid API key")
        key, tenant = found
        if key.revoked_at is not None:
            raise Unauthenticated("API key has been revoked")
        now = utcnow()
        if key.last_used_at is None or now - key.last_used_at > TOUCH_INTERVAL:
            await self.repo.touch_key(key.id, now)
        return Principal(
            tenant_id=tenant.id,
            tenant_name=tenant.name,
            tier=tenant.tier,
            role=key.role,
            key_id=key.id,
        )

    async def _authenticate_token(self, token: str, tokens: TokenVerifier) -> Principal:
        """An identity provider's access token: the tenant is the one its claim names."""
        claims = await tokens.verify(token)
        tenant = await self.repo.by_name(claims.tenant)
        if tenant is None:
            raise Unauthenticated("unknown tenant")
        return Principal(
            tenant_id=tenant.id,
            tenant_name=tenant.name,
            tier=tenant.tier,
            role=claims.role,
            key_id=None,
            expires_at=claims.expires_at,
            subject=claims.subject,
        )
