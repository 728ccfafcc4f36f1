"""Plugins as callers see them: what each loaded plugin adds, whether a worker serves its
queue, whether the calling tenant may use it (`plugins` query), and the platform operator's
per-tenant switch (`setTenantPlugin`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound, ValidationFailed
from app.models import Tenant
from app.plugins.checks import Manifest
from app.plugins.registry import PluginRegistry
from app.tenants.plugin_access import PluginAccess, PluginAccessService
from app.tenants.repository import TenantRepository
from app.tenants.service import PlatformPrincipal


@dataclass(frozen=True)
class PluginView:
    """One plugin for the `plugins` query. `manifest` is None for a refused plugin (its
    `problems` say why) or one this deployment does not load (DISABLED)."""

    name: str
    manifest: Manifest | None
    health: str  # OK | NO_WORKER | DISABLED | REFUSED
    workers_polling: int | None
    enabled_for_tenant: bool | None  # None: asked by the platform, not a tenant
    problems: list[str] = field(default_factory=list)


def health_of(loaded: bool, refused: bool, allowed: bool | None, pollers: int | None) -> str:
    """REFUSED (bad declarations), DISABLED (not loaded here, or not for this tenant),
    NO_WORKER (nobody polls its queue; unknown counts as no worker), else OK."""
    if refused:
        return "REFUSED"
    if not loaded or allowed is False:
        return "DISABLED"
    return "OK" if pollers else "NO_WORKER"


def plugin_views(
    registry: PluginRegistry,
    access: PluginAccess | None,
    pollers: dict[str, int | None],
) -> list[PluginView]:
    """Every installed, loaded or refused plugin, by name. A tenant (`access` given) sees the
    loaded ones only; the platform (None) also sees the refused and the unloaded ones."""
    names = sorted({*registry.loaded, *registry.refused, *registry.installed})
    views = []
    for name in names:
        manifest = registry.loaded.get(name)
        if access is not None and manifest is None:
            continue
        allowed = access.allows(name) if access is not None else None
        views.append(
            PluginView(
                name=name,
                manifest=manifest,
                health=health_of(
                    manifest is not None, name in registry.refused, allowed, pollers.get(name)
                ),
                workers_polling=pollers.get(name),
                enabled_for_tenant=allowed,
                problems=list(registry.refused.get(name, [])),
            )
        )
    return views


class PluginAdministration:
    """The platform operator's plugin switches per tenant."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.tenants = TenantRepository(session)

    async def set_for_tenant(
        self,
        by: PlatformPrincipal,
        registry: PluginRegistry,
        tenant_id: uuid.UUID,
        plugin: str,
        enabled: bool,
    ) -> Tenant:
        """Switch `plugin` on or off for the tenant; returns the tenant. A plugin this
        deployment does not load is refused (a switch for a typo would do nothing)."""
        if plugin not in registry.loaded:
            loaded = ", ".join(sorted(registry.loaded)) or "none"
            raise ValidationFailed(
                f"no loaded plugin named {plugin[:50]!r}; loaded: {loaded}",
                details=[{"path": "$.plugin", "message": "not a loaded plugin"}],
            )
        tenant = await self.tenants.get(tenant_id)
        if tenant is None:
            raise NotFound("no tenant with this id")
        await PluginAccessService(self.session).set(
            tenant_id, plugin, enabled, f"platform:{by.name}"
        )
        return tenant
