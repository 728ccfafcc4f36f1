"""Which plugins a tenant may use: the platform operator's per-tenant switches
(`setTenantPlugin`, table tenant_plugins) over the deployment's default
(PLUGINS_DEFAULT_TENANTS: "all" tenants get every loaded plugin, or "none" until enabled).

Template validation asks `PluginAccess.allows(plugin)` for every plugin step and AI task a spec
names; a start asks again (a switch may have changed since the version was published).
Which plugins the deployment loads at all is PLUGINS_ENABLED (app/plugins/registry.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.settings import Settings
from app.tenants.repository import TenantRepository

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PluginAccess:
    """A tenant's plugin switches: `switches` where the platform set one, else `default`."""

    default: bool
    switches: Mapping[str, bool] = field(default_factory=dict)

    def allows(self, plugin: str) -> bool:
        return self.switches.get(plugin, self.default)


class PluginAccessService:
    def __init__(self, session: AsyncSession) -> None:
        self.repo = TenantRepository(session)

    async def of(self, tenant_id: uuid.UUID, settings: Settings | None) -> PluginAccess:
        default = (settings.plugins_default_tenants if settings else "all") == "all"
        return PluginAccess(default, await self.repo.plugin_switches(tenant_id))

    async def set(self, tenant_id: uuid.UUID, plugin: str, enabled: bool, by: str) -> None:
        """Switch one plugin on or off for one tenant (the caller checked the plugin is
        loaded and the tenant exists); from its next validation or start."""
        await self.repo.set_plugin_switch(tenant_id, plugin, enabled, by)
        log.info("tenant.plugin_switched", tenant_id=str(tenant_id), plugin=plugin, enabled=enabled)
