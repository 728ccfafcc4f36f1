"""Plugins in GraphQL: `plugins` (what each plugin adds, its queue, the workers polling it, its
health, whether the caller's tenant may use it) and the platform operator's `setTenantPlugin`.

A tenant key sees the plugins this deployment loaded; a platform credential also sees the
installed ones it refused (with every problem) or leaves out (PLUGINS_ENABLED). A provider's
base URL and key variable are deployment details: neither is shown.
"""

from __future__ import annotations

import asyncio
import uuid
from enum import Enum
from typing import Annotated, cast

import strawberry
from strawberry.scalars import JSON

from app.api.context import Context
from app.api.errors import ForbiddenError, NotFoundError, ValidationError
from app.api.relay import from_global_id
from app.api.viewer import Tenant
from app.plugins.api import plugin_task_queue
from app.plugins.checks import Manifest
from app.plugins.registry import active
from app.plugins.service import PluginAdministration, PluginView, plugin_views
from app.temporal_queues import inspector_for
from app.tenants.plugin_access import PluginAccessService


@strawberry.enum(
    description="OK: loaded, enabled and a worker polls its queue. NO_WORKER: no plugin worker "
    "polls its queue (its steps wait). DISABLED: this deployment does not load it "
    "(PLUGINS_ENABLED), or it is not enabled for your tenant. REFUSED: its declarations were "
    "refused at load (`problems` says why; platform only)."
)
class PluginHealth(Enum):
    OK = "OK"
    NO_WORKER = "NO_WORKER"
    DISABLED = "DISABLED"
    REFUSED = "REFUSED"


@strawberry.type(description="A step a plugin adds; templates name it `<plugin>.<step>`.")
class PluginStepInfo:
    name: str
    description: str
    input_schema: JSON
    output_schema: JSON | None
    timeout_seconds: float


@strawberry.type(
    description="An AI task a plugin adds: `task` of an enhancement point, or the template "
    "step `ai.<plugin>.<task>`."
)
class PluginAiTaskInfo:
    name: str
    step: str
    description: str
    input_schema: JSON
    output_schema: JSON


@strawberry.type(description="An AI provider a plugin adds (an OpenAI-compatible endpoint).")
class PluginProviderInfo:
    name: str
    models: list[str]


@strawberry.type(description="An installed plugin (docs/plugins.md).")
class PluginInfo:
    name: str
    version: str | None
    description: str | None
    steps: list[PluginStepInfo]
    ai_tasks: list[PluginAiTaskInfo]
    providers: list[PluginProviderInfo]
    templates: list[str] = strawberry.field(
        description="Names of the templates it publishes (platform templates)."
    )
    queue: str = strawberry.field(description="The Temporal task queue its worker polls.")
    workers_polling: int | None = strawberry.field(
        description="Workers polling its queue now; null if Temporal was not reachable."
    )
    health: PluginHealth
    enabled_for_tenant: bool | None = strawberry.field(
        description="Whether your tenant may use it; null for a platform credential."
    )
    problems: list[str] = strawberry.field(
        description="Why it was refused at load (platform credentials only; empty otherwise)."
    )

    @classmethod
    def from_view(cls, view: PluginView) -> PluginInfo:
        info = cls(
            name=view.name,
            version=None,
            description=None,
            steps=[],
            ai_tasks=[],
            providers=[],
            templates=[],
            queue=plugin_task_queue(view.name),
            workers_polling=view.workers_polling,
            health=PluginHealth(view.health),
            enabled_for_tenant=view.enabled_for_tenant,
            problems=view.problems,
        )
        if view.manifest is not None:
            info.declared(view.manifest)
        return info

    def declared(self, m: Manifest) -> None:
        """Fill in what a loaded plugin declares."""
        self.version, self.description = m.version, m.description
        self.steps = [
            PluginStepInfo(
                name=m.qualified(s.name),
                description=s.description,
                input_schema=cast(JSON, s.input_schema),
                output_schema=cast(JSON, s.output_schema),
                timeout_seconds=m.step_timeout(s),
            )
            for s in m.steps
        ]
        self.ai_tasks = [
            PluginAiTaskInfo(
                name=m.qualified(t.name),
                step=f"ai.{m.qualified(t.name)}",
                description=t.description,
                input_schema=cast(JSON, t.input_schema),
                output_schema=cast(JSON, t.output_schema),
            )
            for t in m.ai_tasks
        ]
        self.providers = [
            PluginProviderInfo(name=m.qualified(p.name), models=[x.name for x in p.models])
            for p in m.providers
        ]
        self.templates = [str(t.get("name")) for t in m.templates]


@strawberry.input
class SetTenantPluginInput:
    tenant: strawberry.ID
    plugin: str = strawberry.field(description="A loaded plugin's name.")
    enabled: bool


@strawberry.type
class TenantPluginSwitch:
    tenant: Tenant
    plugin: str
    enabled: bool


SetTenantPluginResult = Annotated[
    TenantPluginSwitch | ValidationError | NotFoundError | ForbiddenError,
    strawberry.union("SetTenantPluginResult"),
]


@strawberry.type
class PluginQuery:
    @strawberry.field(
        description="The plugins of this deployment: what each adds, its queue and workers, "
        "its health and whether your tenant may use it."
    )
    async def plugins(self, info: strawberry.Info[Context, None]) -> list[PluginInfo]:
        context = info.context
        registry = active()
        access = None
        if context.platform_ is None:
            principal = context.principal()
            async with context.session() as s:
                access = await PluginAccessService(s).of(principal.tenant_id, context.deps.settings)
        inspector = inspector_for(context.deps.temporal)
        names = sorted(registry.loaded)
        snapshots = await asyncio.gather(*(inspector.describe(plugin_task_queue(n)) for n in names))
        pollers = {n: snap.pollers for n, snap in zip(names, snapshots, strict=True)}
        return [PluginInfo.from_view(v) for v in plugin_views(registry, access, pollers)]


@strawberry.type
class PluginMutation:
    @strawberry.mutation(
        description="Enable or disable a plugin for one tenant (from its next template check "
        "or start); platform credentials only. Without a switch a tenant follows "
        "PLUGINS_DEFAULT_TENANTS."
    )
    async def set_tenant_plugin(
        self, info: strawberry.Info[Context, None], input: SetTenantPluginInput
    ) -> SetTenantPluginResult:
        platform = info.context.platform()
        pk: uuid.UUID = from_global_id(input.tenant, "Tenant")[1]
        async with info.context.session() as s:
            tenant = await PluginAdministration(s).set_for_tenant(
                platform, active(), pk, input.plugin, input.enabled
            )
            await s.commit()
        return TenantPluginSwitch(
            tenant=Tenant.from_model(tenant), plugin=input.plugin, enabled=input.enabled
        )
