"""A tenant's API keys as its admins manage them: list, create, revoke (the API and the CLI).

Only admins see or change keys: a key's name, role and use are the tenant's security settings.
No listing ever carries a hash or secret; the secret exists once, in create's answer.
Revoking is idempotent: revoking a revoked key answers it as it is (its first revocation time),
so a client that retries after a lost answer gets the same result.

A credential that ends may not make one that outlives it (docs/security.md): a key with an
expiry makes keys expiring no later; an identity provider's token (minutes) makes only keys
with an explicit `expiresAt`. `created_by` says which credential made a key: `key:<key id>`
or `sub:<token subject>`.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Forbidden, NotFound, ValidationFailed
from app.models import ApiKey
from app.models.base import utcnow
from app.pagination import Page, check_first, decode_cursor, keyset_page
from app.tenants.repository import TenantRepository
from app.tenants.service import Principal, TenantService

log = structlog.get_logger(__name__)
DURATION = re.compile(r"(\d{1,5})([hdw])")
CLI_LISTED = 10_000  # live keys are capped at 100; revoked ones accumulate
UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def parse_expiry(text: str, now: datetime | None = None) -> datetime:
    """`90d`, `12h`, `4w` from now, or an ISO date (its midnight, UTC) or date-time (UTC when
    it has no offset). Bounds are create_api_key's."""
    text = text.strip()
    now = now or utcnow()
    duration = DURATION.fullmatch(text)
    if duration:
        return now + int(duration[1]) * UNITS[duration[2]]
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValidationFailed(
            f"expiry {text!r}: expected a duration (90d, 12h, 4w) or an ISO date or date-time"
        ) from exc
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class KeyService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.repo = TenantRepository(session)

    async def page(
        self, principal: Principal, first: int | None, after: str | None
    ) -> Page[ApiKey]:
        _admin_only(principal)
        limit = check_first(first, default=50)
        position = decode_cursor(after, "datetime", "uuid")
        keys = await self.repo.keys_of(
            principal.tenant_id,
            limit + 1,
            (datetime.fromisoformat(position[0]), uuid.UUID(position[1])) if position else None,
        )
        return keyset_page(keys, limit, key=lambda k: [k.created_at.isoformat(), str(k.id)])

    async def create(
        self, principal: Principal, name: str, role: str, expires_at: datetime | None
    ) -> tuple[ApiKey, str]:
        _admin_only(principal)
        tenants = TenantService(self.session)
        tenant = await self.repo.get(principal.tenant_id)
        if tenant is None:  # deleted under an authenticated request
            raise NotFound("tenant not found")
        if principal.key_id is None:  # an identity provider's token
            if expires_at is None:
                raise ValidationFailed(
                    "a key made with an access token needs an `expiresAt`: the token lasts "
                    "minutes, a key without an expiry would outlive it for good",
                    details=[{"path": "$.expiresAt", "message": "required with a token"}],
                )
        else:
            caller = await self.repo.key_of(principal.tenant_id, principal.key_id)
            ends = caller.expires_at if caller else None
            if ends is not None and (expires_at is None or expires_at > ends):
                raise ValidationFailed(
                    f"this key expires at {ends:%Y-%m-%d %H:%M:%S} UTC: a key it makes needs "
                    "an `expiresAt` no later than that",
                    details=[{"path": "$.expiresAt", "message": f"at most {ends.isoformat()}"}],
                )
        return await tenants.create_api_key(
            tenant, role=role, name=name, expires_at=expires_at, created_by=principal.actor
        )

    async def get(self, principal: Principal, key_id: uuid.UUID) -> ApiKey:
        _admin_only(principal)
        key = await self.repo.key_of(principal.tenant_id, key_id)
        if key is None:  # another tenant's key names nothing here
            raise NotFound("no API key with this id")
        return key

    async def revoke(self, principal: Principal, key_id: uuid.UUID) -> ApiKey:
        return await self._revoke(await self.get(principal, key_id))

    async def of_tenant(self, name: str) -> list[ApiKey]:
        """Tenant NAME's keys, oldest first (`wfs apikey list`)."""
        tenant = await TenantService(self.session).get_by_name(name)
        return await self.repo.keys_of(tenant.id, CLI_LISTED)

    async def revoke_any(self, key_id: uuid.UUID) -> ApiKey:
        """Any tenant's key, for the platform operator (`wfs apikey revoke`)."""
        key = await self.repo.key(key_id)
        if key is None:
            raise NotFound(f"no API key {key_id}")
        return await self._revoke(key)

    async def _revoke(self, key: ApiKey) -> ApiKey:
        if await self.repo.revoke(key):
            log.info("api_key.revoked", tenant_id=str(key.tenant_id), key_id=str(key.id))
        return key


def _admin_only(principal: Principal) -> None:
    if principal.role != "admin":
        raise Forbidden("only admins manage API keys")
