"""The platform operator's credentials and what they may do: manage tenants.

A platform credential is `wfsp_<8-char prefix>_<secret>`, made only by the CLI (`wfs platform
key create`, run with the database's credentials), stored as a SHA-256 like tenant keys. Through
the API it lists tenants, creates them (optionally with a first admin key), changes tiers and
suspends or resumes them. It belongs to no tenant, so it reads no tenant's templates or
executions; and no tenant key, admin or not, reaches these operations.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound
from app.models import ApiKey, PlatformKey, Tenant
from app.pagination import Page, check_first, decode_cursor, keyset_page
from app.tenants.repository import TenantRepository
from app.tenants.service import (
    PLATFORM_PREFIX,
    PlatformPrincipal,
    TenantService,
    check_key_name,
    new_secret,
)

log = structlog.get_logger(__name__)


class PlatformKeys:
    """Create, list and revoke platform credentials (the CLI only)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.repo = TenantRepository(session)

    async def create(self, name: str) -> tuple[PlatformKey, str]:
        """The stored key and its plaintext, shown once."""
        name = check_key_name(name)
        prefix, plaintext, key_hash = new_secret(PLATFORM_PREFIX)
        key = PlatformKey(name=name, prefix=prefix, key_hash=key_hash)
        await self.repo.add_platform_key(key)
        log.info("platform_key.created", key_id=str(key.id))
        return key, plaintext

    async def all(self) -> list[PlatformKey]:
        return await self.repo.platform_keys()

    async def revoke(self, key_id: uuid.UUID) -> PlatformKey:
        """Idempotent: a revoked key keeps its first revocation time."""
        key = await self.repo.platform_key(key_id)
        if key is None:
            raise NotFound(f"no platform key {key_id}")
        if await self.repo.revoke(key):
            log.info("platform_key.revoked", key_id=str(key.id))
        return key


class TenantAdministration:
    """What a platform credential does through the API; every method takes its principal, so
    no caller reaches one without having shown one (Context.platform())."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.repo = TenantRepository(session)
        self.tenants = TenantService(session)

    async def page(
        self, _: PlatformPrincipal, first: int | None, after: str | None
    ) -> Page[Tenant]:
        limit = check_first(first, default=50)
        position = decode_cursor(after, "datetime", "uuid")
        found = await self.repo.page(
            limit + 1,
            (datetime.fromisoformat(position[0]), uuid.UUID(position[1])) if position else None,
        )
        return keyset_page(found, limit, key=lambda t: [t.created_at.isoformat(), str(t.id)])

    async def create(
        self, by: PlatformPrincipal, name: str, tier: str, admin_key_name: str | None
    ) -> tuple[Tenant, tuple[ApiKey, str] | None]:
        """The new tenant, with its first admin key and that key's secret when asked for one
        (onboarding without a shell)."""
        tenant = await self.tenants.create_tenant(name, tier)
        log.info("tenant.created", tenant_id=str(tenant.id), by=str(by.key_id))
        if admin_key_name is None:
            return tenant, None
        first_key = await self.tenants.create_api_key(
            tenant, role="admin", name=admin_key_name, created_by=f"platform:{by.name}"
        )
        return tenant, first_key

    async def set_tier(self, _: PlatformPrincipal, tenant_id: uuid.UUID, tier: str) -> Tenant:
        tenant, _previous = await self.tenants.set_tier(await self._get(tenant_id), tier)
        return tenant

    async def set_suspended(
        self, _: PlatformPrincipal, tenant_id: uuid.UUID, suspended: bool
    ) -> Tenant:
        return await self.tenants.set_suspended(await self._get(tenant_id), suspended)

    async def _get(self, tenant_id: uuid.UUID) -> Tenant:
        tenant = await self.repo.get(tenant_id)
        if tenant is None:
            raise NotFound("no tenant with this id")
        return tenant
