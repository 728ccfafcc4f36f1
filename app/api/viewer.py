"""The caller: `viewer { tenant { id name tier } role }`."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, TypeAlias

import strawberry

from app.api.context import Context
from app.api.relay import Node, to_global_id
from app.models import Tenant as TenantModel
from app.tiers import TierName

if TYPE_CHECKING:
    from app.api.ai import Budget


strawberry.enum(TierName, name="Tier")  # the tier table's names (app/tiers.py)
Tier: TypeAlias = TierName


@strawberry.enum
class Role(enum.Enum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


@strawberry.type
class Tenant(Node):
    name: str
    tier: Tier
    created_at: datetime
    suspended_at: datetime | None = strawberry.field(
        description="Set while suspended: its credentials are refused, running executions go on."
    )

    @classmethod
    def from_model(cls, m: TenantModel) -> Tenant:
        return cls(
            id=to_global_id("Tenant", m.id),
            name=m.name,
            tier=Tier(m.tier),
            created_at=m.created_at,
            suspended_at=m.suspended_at,
        )


@strawberry.type
class Viewer:
    tenant: Tenant
    role: Role
    tenant_pk: strawberry.Private[uuid.UUID]

    @strawberry.field(description="This month's AI budget: limit, spent, reserved, remaining.")
    async def budget(
        self, info: strawberry.Info[Context, None]
    ) -> Annotated[Budget, strawberry.lazy("app.api.ai")]:
        from app.api.ai import budget_of

        return await budget_of(info, self.tenant_pk)


@strawberry.type
class ViewerQuery:
    @strawberry.field(description="The tenant and role of the API key making the request.")
    async def viewer(self, info: strawberry.Info[Context, None]) -> Viewer:
        principal = info.context.principal()
        tenant = await info.context.loaders.tenants.load(principal.tenant_id)
        assert tenant is not None
        return Viewer(
            tenant=Tenant.from_model(tenant), role=Role(principal.role), tenant_pk=tenant.id
        )
