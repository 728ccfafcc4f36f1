"""SQL for tenants, their API keys and the platform operator's keys."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ApiKey, PlatformKey, Tenant, TenantPlugin


class TenantRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, tenant_id: uuid.UUID) -> Tenant | None:
        return await self.session.get(Tenant, tenant_id)

    async def get_many(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, Tenant]:
        rows = await self.session.scalars(select(Tenant).where(Tenant.id.in_(ids)))
        return {t.id: t for t in rows}

    async def by_name(self, name: str) -> Tenant | None:
        return await self.session.scalar(select(Tenant).where(Tenant.name == name))

    async def add(self, tenant: Tenant) -> Tenant:
        self.session.add(tenant)
        await self.session.flush()
        return tenant

    async def key_by_hash(self, key_hash: str) -> tuple[ApiKey, Tenant] | None:
        row = (
            await self.session.execute(
                select(ApiKey, Tenant)
                .join(Tenant, Tenant.id == ApiKey.tenant_id)
                .where(ApiKey.key_hash == key_hash)
            )
        ).first()
        return (row[0], row[1]) if row else None

    async def keys_of(
        self, tenant_id: uuid.UUID, limit: int, after: tuple[datetime, uuid.UUID] | None = None
    ) -> list[ApiKey]:
        """The tenant's keys oldest first (revoked and expired ones too), `limit` of them after
        the (created_at, id) position."""
        query = (
            select(ApiKey)
            .where(ApiKey.tenant_id == tenant_id)
            .order_by(ApiKey.created_at, ApiKey.id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(tuple_(ApiKey.created_at, ApiKey.id) > after)
        return list(await self.session.scalars(query))

    async def add_key(self, key: ApiKey) -> ApiKey:
        self.session.add(key)
        await self.session.flush()
        return key

    async def touch(self, key: ApiKey | PlatformKey, at: datetime) -> None:
        """Set a tenant's or platform key's `last_used_at`."""
        model = type(key)
        await self.session.execute(update(model).where(model.id == key.id).values(last_used_at=at))

    async def lock(self, tenant_id: uuid.UUID) -> None:
        """Hold the tenant's row until commit: concurrent key creations count one at a time.

        FOR NO KEY UPDATE, not FOR UPDATE: inserts that reference the tenant (executions,
        templates, keys) take FOR KEY SHARE on its row, which only FOR UPDATE would block."""
        await self.session.execute(
            select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True)
        )

    async def live_key_count(self, tenant_id: uuid.UUID, now: datetime) -> int:
        found = await self.session.scalar(
            select(func.count())
            .select_from(ApiKey)
            .where(
                ApiKey.tenant_id == tenant_id,
                ApiKey.revoked_at.is_(None),
                or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
            )
        )
        return int(found or 0)

    async def key(self, key_id: uuid.UUID) -> ApiKey | None:
        """Any tenant's key (the platform operator's CLI)."""
        return await self.session.get(ApiKey, key_id)

    async def revoke(self, key: ApiKey | PlatformKey) -> bool:
        """Set a tenant's or platform key's `revoked_at` unless it has one, in one UPDATE, so
        that of concurrent revocations the first one's time holds; then reload the key. True
        when this call revoked it."""
        model = type(key)
        revoked = await self.session.scalar(
            update(model)
            .where(model.id == key.id, model.revoked_at.is_(None))
            .values(revoked_at=func.now())
            .returning(model.id)
            .execution_options(synchronize_session=False)
        )
        await self.session.refresh(key)
        return revoked is not None

    async def key_of(self, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey | None:
        return await self.session.scalar(
            select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id)
        )

    async def page(self, limit: int, after: tuple[datetime, uuid.UUID] | None) -> list[Tenant]:
        """Tenants oldest first, `limit` of them after the (created_at, id) position."""
        query = select(Tenant).order_by(Tenant.created_at, Tenant.id).limit(limit)
        if after is not None:
            query = query.where(tuple_(Tenant.created_at, Tenant.id) > after)
        return list(await self.session.scalars(query))

    async def platform_key_by_hash(self, key_hash: str) -> PlatformKey | None:
        return await self.session.scalar(
            select(PlatformKey).where(PlatformKey.key_hash == key_hash)
        )

    async def platform_keys(self) -> list[PlatformKey]:
        return list(
            await self.session.scalars(select(PlatformKey).order_by(PlatformKey.created_at))
        )

    async def platform_key(self, key_id: uuid.UUID) -> PlatformKey | None:
        return await self.session.get(PlatformKey, key_id)

    async def add_platform_key(self, key: PlatformKey) -> PlatformKey:
        self.session.add(key)
        await self.session.flush()
        return key

    async def plugin_switches(self, tenant_id: uuid.UUID) -> dict[str, bool]:
        """{plugin: enabled} of the switches the platform set for the tenant."""
        rows = await self.session.execute(
            select(TenantPlugin.plugin, TenantPlugin.enabled).where(
                TenantPlugin.tenant_id == tenant_id
            )
        )
        return {plugin: enabled for plugin, enabled in rows.tuples()}

    async def set_plugin_switch(
        self, tenant_id: uuid.UUID, plugin: str, enabled: bool, by: str
    ) -> None:
        statement = insert(TenantPlugin).values(
            tenant_id=tenant_id,
            plugin=plugin,
            enabled=enabled,
            updated_at=func.now(),
            updated_by=by,
        )
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=[TenantPlugin.tenant_id, TenantPlugin.plugin],
                set_={"enabled": enabled, "updated_at": func.now(), "updated_by": by},
            )
        )
