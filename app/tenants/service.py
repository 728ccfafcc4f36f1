"""Tenants, API keys and authentication of a bearer key or access token (app/tenants/tokens.py).

A key is `wfs_<8-char prefix>_<secret>`; only its SHA-256 is stored (the secret has 256 bits of
entropy, so a fast hash is enough and lookups stay one indexed query). `last_used_at` is
written at most once a minute per key so authentication does not turn every read into a write.
A key stops authenticating when revoked, when past its `expires_at`, or while its tenant is
suspended. The platform operator's credentials (`wfsp_...`, app/tenants/platform.py) are told
apart by their prefix in `authenticate_any`; `authenticate` answers for tenant keys only.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import (
    Conflict,
    Forbidden,
    NotFound,
    QuotaExceeded,
    Unauthenticated,
    ValidationFailed,
)
from app.models import ROLES, ApiKey, PlatformKey, Tenant
from app.models.base import utcnow
from app.models.template import PLATFORM_PUBLISHER_NAME
from app.tenants.repository import TenantRepository
from app.tenants.tokens import TokenVerifier
from app.tiers import TIERS

log = structlog.get_logger(__name__)
TOUCH_INTERVAL = timedelta(minutes=1)
TENANT_NAME = re.compile(r"[a-z](?:-?[a-z0-9])+")
KEY_EXPIRED = "API key expired"
TENANT_SUSPENDED = "tenant suspended: its credentials are refused until the platform resumes it"
NO_TENANT = "a platform credential has no tenant: use a tenant's API key for tenant fields"
PLATFORM_PREFIX = "wfsp_"
MAX_KEY_LIFETIME = timedelta(days=730)  # an expiring key's `expires_at`, at most this far ahead
MAX_KEYS_PER_TENANT = 100  # live (neither revoked nor expired) keys of one tenant
MAX_KEY_NAME = 100
TENANT_PREFIX = "wfs_"
KEY_PREFIXES = (TENANT_PREFIX, PLATFORM_PREFIX)  # tenant and platform keys; others: tokens
ACTOR_CHARS = 120  # the audit columns naming an actor (api_keys.created_by, ...) are VARCHAR(120)


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved from an API key, or from an identity provider's access token
    (then `key_id` is None and `expires_at`/`subject` are the token's `exp` and `sub`).
    `expires_at` is a token's only: app/api/app.py closes a socket at it as a token's expiry."""

    tenant_id: uuid.UUID
    tenant_name: str
    tier: str
    role: str
    key_id: uuid.UUID | None
    expires_at: datetime | None = None
    subject: str | None = None

    def __post_init__(self) -> None:
        if self.key_id is None and not self.subject:  # audit trails name one or the other
            raise ValueError("a principal has an API key id or a token subject")

    @property
    def actor(self) -> str:
        """How every audit trail names the caller: `key:<API key id>`, or `sub:<subject>` for
        a token, cut to ACTOR_CHARS (a `sub` has no length limit, the columns do)."""
        if self.key_id is not None:
            return f"key:{self.key_id}"
        return f"sub:{self.subject}"[:ACTOR_CHARS]


@dataclass(frozen=True)
class PlatformPrincipal:
    """The platform operator, resolved from a platform credential: no tenant, no role."""

    key_id: uuid.UUID
    name: str


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def new_secret(prefix: str) -> tuple[str, str, str]:
    """A new key `<prefix><8 hex>_<secret>`: (its 8-hex prefix, the plaintext, its hash)."""
    short = secrets.token_hex(4)
    plaintext = f"{prefix}{short}_{secrets.token_urlsafe(32)}"
    return short, plaintext, hash_key(plaintext)


def check_key_name(name: str) -> str:
    """A tenant or platform key's name, stripped; 1-MAX_KEY_NAME printable characters."""
    name = name.strip()
    if not 1 <= len(name) <= MAX_KEY_NAME or not name.isprintable():
        raise ValidationFailed(
            f"a key's name must be 1-{MAX_KEY_NAME} printable characters",
            details=[{"path": "$.name", "message": f"1-{MAX_KEY_NAME} printable characters"}],
        )
    return name


def check_tier(tier: str) -> None:
    if tier not in TIERS:
        raise ValidationFailed(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}")


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
        check_tier(tier)
        if await self.repo.by_name(name):
            raise Conflict(f"tenant {name!r} already exists")
        try:
            return await self.repo.add(Tenant(name=name, tier=tier))
        except IntegrityError as exc:  # lost a race with a create of the same name
            raise Conflict(f"tenant {name!r} already exists") from exc

    async def set_tier(self, tenant: Tenant, tier: str) -> tuple[Tenant, str]:
        """Move a tenant to another tier; returns the tenant and its previous tier.

        A platform operator's action only (`wfs tenant set-tier`): no tenant credential reaches
        it, since a tier is what the tenant pays for. What the tier entitles to (models, budget
        maximum, concurrency) is read from the tier at use, so it applies from the next call."""
        check_tier(tier)
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
        self,
        tenant: Tenant,
        role: str = "admin",
        name: str = "default",
        *,
        expires_at: datetime | None = None,
        created_by: str | None = None,
    ) -> tuple[ApiKey, str]:
        """Returns the stored key and its plaintext, which is shown once and never stored.

        Bounds (the API and the CLI alike): a printable name of 1-MAX_KEY_NAME characters, an
        expiry in the future and at most MAX_KEY_LIFETIME ahead, at most MAX_KEYS_PER_TENANT
        live keys (counted under the tenant's row lock, so concurrent creations cannot pass
        the cap together)."""
        if role not in ROLES:
            raise ValidationFailed(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        name = check_key_name(name)
        now = utcnow()
        if expires_at is not None and not now < expires_at <= now + MAX_KEY_LIFETIME:
            raise ValidationFailed(
                "a key's expiry must be in the future and at most "
                f"{MAX_KEY_LIFETIME.days} days ahead",
                details=[{"path": "$.expiresAt", "message": "in the future, within 730 days"}],
            )
        await self.repo.lock(tenant.id)
        if await self.repo.live_key_count(tenant.id, now) >= MAX_KEYS_PER_TENANT:
            raise QuotaExceeded(
                f"this tenant already has {MAX_KEYS_PER_TENANT} live API keys; revoke one first"
            )
        prefix, plaintext, key_hash = new_secret(TENANT_PREFIX)
        key = ApiKey(
            tenant_id=tenant.id,
            name=name,
            prefix=prefix,
            key_hash=key_hash,
            role=role,
            expires_at=expires_at,
            created_by=created_by,
        )
        await self.repo.add_key(key)
        log.info("api_key.created", tenant_id=str(tenant.id), key_id=str(key.id), role=role)
        return key, plaintext

    async def set_suspended(self, tenant: Tenant, suspended: bool) -> Tenant:
        """Suspend (or resume) a tenant: its keys stop authenticating at their next use, its
        open sockets close at their next key re-check. Running executions keep running.
        Suspending a suspended tenant keeps its first suspension time."""
        if suspended and tenant.suspended_at is None:
            tenant.suspended_at = utcnow()
        elif not suspended:
            tenant.suspended_at = None
        await self.session.flush()
        log.info("tenant.suspended" if suspended else "tenant.resumed", tenant_id=str(tenant.id))
        return tenant

    async def authenticate_any(
        self, authorization: str | None, *, tokens: TokenVerifier | None = None
    ) -> Principal | PlatformPrincipal:
        """A tenant's principal, or the platform operator's for a `wfsp_` credential."""
        token = parse_bearer(authorization)
        if token.startswith(PLATFORM_PREFIX):
            return await self._authenticate_platform(token)
        return await self.authenticate(authorization, tokens=tokens)

    async def authenticate(
        self, authorization: str | None, *, tokens: TokenVerifier | None = None
    ) -> Principal:
        token = parse_bearer(authorization)
        if token.startswith(PLATFORM_PREFIX):
            raise Forbidden(NO_TENANT)
        if tokens is not None and not token.startswith(KEY_PREFIXES):
            return await self._authenticate_token(token, tokens)
        found = await self.repo.key_by_hash(hash_key(token))
        if found is None:
            raise Unauthenticated("invalid API key")
        key, tenant = found
        if key.revoked_at is not None:
            raise Unauthenticated("API key has been revoked")
        now = utcnow()
        if key.expires_at is not None and key.expires_at <= now:
            raise Unauthenticated(KEY_EXPIRED)
        if tenant.suspended_at is not None:
            raise Unauthenticated(TENANT_SUSPENDED)
        await self._touch(key, now)
        return Principal(
            tenant_id=tenant.id,
            tenant_name=tenant.name,
            tier=tenant.tier,
            role=key.role,
            key_id=key.id,
        )

    async def _authenticate_platform(self, token: str) -> PlatformPrincipal:
        key = await self.repo.platform_key_by_hash(hash_key(token))
        if key is None:
            raise Unauthenticated("invalid platform credential")
        if key.revoked_at is not None:
            raise Unauthenticated("platform credential has been revoked")
        await self._touch(key, utcnow())
        return PlatformPrincipal(key_id=key.id, name=key.name)

    async def _touch(self, key: ApiKey | PlatformKey, now: datetime) -> None:
        """Record the key's use at most once per TOUCH_INTERVAL: reads stay reads."""
        if key.last_used_at is None or now - key.last_used_at > TOUCH_INTERVAL:
            await self.repo.touch(key, now)

    async def _authenticate_token(self, token: str, tokens: TokenVerifier) -> Principal:
        """An identity provider's access token: the tenant is the one its claim names."""
        claims = await tokens.verify(token)
        tenant = await self.repo.by_name(claims.tenant)
        if tenant is None:
            raise Unauthenticated("unknown tenant")
        if tenant.suspended_at is not None:
            raise Unauthenticated(TENANT_SUSPENDED)
        return Principal(
            tenant_id=tenant.id,
            tenant_name=tenant.name,
            tier=tenant.tier,
            role=claims.role,
            key_id=None,
            expires_at=claims.expires_at,
            subject=claims.subject,
        )
