"""Administration in GraphQL: a tenant admin's API keys (`apiKeys`, `createApiKey`,
`revokeApiKey`) and the platform operator's tenants (`tenants`, `createTenant`,
`setTenantTier`, `suspendTenant`).

Key fields are for tenant admins (Context.principal(), then the admin check in KeyService);
tenant fields for platform credentials only (Context.platform()). No type here carries a key's
hash; a secret appears once, in the answer that created it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import strawberry

from app.api.context import Context
from app.api.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    QuotaExceededError,
    ValidationError,
)
from app.api.relay import Connection, Node, from_global_id, to_global_id
from app.api.viewer import Role, Tenant, Tier
from app.models import ApiKey as ApiKeyModel
from app.tenants.keys import KeyService
from app.tenants.platform import TenantAdministration


@strawberry.type(description="One of the tenant's API keys; never its secret or hash.")
class ApiKey(Node):
    name: str
    role: Role
    prefix: str = strawberry.field(description="The 8 characters after `wfs_` in the key.")
    created_at: datetime
    expires_at: datetime | None = strawberry.field(description="Null: valid until revoked.")
    last_used_at: datetime | None = strawberry.field(
        description="Last authentication, to the minute."
    )
    revoked_at: datetime | None
    created_by: str | None = strawberry.field(
        description='"key:<key id>" (made through the API with that key; the id as stored, '
        'not the node ID), "sub:<subject>" (with an identity provider\'s token; a subject '
        'over 116 characters is cut), "cli" or "platform:<credential name>"; earlier keys '
        'may say "key:<prefix>" or null.'
    )

    @classmethod
    def from_model(cls, m: ApiKeyModel) -> ApiKey:
        return cls(
            id=to_global_id("ApiKey", m.id),
            name=m.name,
            role=Role(m.role),
            prefix=m.prefix,
            created_at=m.created_at,
            expires_at=m.expires_at,
            last_used_at=m.last_used_at,
            revoked_at=m.revoked_at,
            created_by=m.created_by,
        )


@strawberry.type
class CreatedApiKey:
    api_key: ApiKey
    secret: str = strawberry.field(
        description="The key to send as `Authorization: Bearer <secret>`. Shown only here, "
        "once: only its hash is stored."
    )


@strawberry.input
class CreateApiKeyInput:
    name: str = strawberry.field(description="A label, 1-100 characters.")
    role: Role
    expires_at: datetime | None = strawberry.field(
        default=None,
        description="In the future, at most 730 days ahead; null: valid until revoked. A "
        "caller whose key expires must give one no later than its own key's; a caller with "
        "an identity provider's token must give one.",
    )


CreateApiKeyResult = Annotated[
    CreatedApiKey | ValidationError | ForbiddenError | QuotaExceededError | NotFoundError,
    strawberry.union("CreateApiKeyResult"),
]
RevokeApiKeyResult = Annotated[
    ApiKey | NotFoundError | ForbiddenError, strawberry.union("RevokeApiKeyResult")
]


@strawberry.type
class CreatedTenant:
    tenant: Tenant
    admin_key: CreatedApiKey | None = strawberry.field(
        description="Its first admin key, when `adminKeyName` was given."
    )


@strawberry.input
class CreateTenantInput:
    name: str = strawberry.field(
        description="2-100 lower-case letters, digits and single hyphens; its publisher name."
    )
    tier: Tier
    admin_key_name: str | None = strawberry.field(
        default=None, description="Also make a first admin key with this name."
    )


@strawberry.input
class SetTenantTierInput:
    tenant: strawberry.ID
    tier: Tier


@strawberry.input
class SuspendTenantInput:
    tenant: strawberry.ID
    suspended: bool = strawberry.field(description="false resumes the tenant.")


CreateTenantResult = Annotated[
    CreatedTenant | ValidationError | ConflictError | ForbiddenError,
    strawberry.union("CreateTenantResult"),
]
ManageTenantResult = Annotated[
    Tenant | ValidationError | NotFoundError | ForbiddenError,
    strawberry.union("ManageTenantResult"),
]


async def load_api_key_node(info: strawberry.Info[Context, None], pk: uuid.UUID) -> ApiKey:
    """`node(id)` for an ApiKey: the caller's tenant's, for admins."""
    principal = info.context.principal()
    async with info.context.session() as s:
        return ApiKey.from_model(await KeyService(s).get(principal, pk))


@strawberry.type
class AdminQuery:
    @strawberry.field(description="The tenant's API keys, oldest first; admins only.")
    async def api_keys(
        self, info: strawberry.Info[Context, None], first: int | None = 50, after: str | None = None
    ) -> Connection[ApiKey]:
        principal = info.context.principal()
        async with info.context.session() as s:
            page = await KeyService(s).page(principal, first, after)
        nodes = [ApiKey.from_model(k) for k in page.items]
        return Connection.build(nodes, page.cursors, page.has_next, after is not None)

    @strawberry.field(description="Every tenant, oldest first; platform credentials only.")
    async def tenants(
        self, info: strawberry.Info[Context, None], first: int | None = 50, after: str | None = None
    ) -> Connection[Tenant]:
        platform = info.context.platform()
        async with info.context.session() as s:
            page = await TenantAdministration(s).page(platform, first, after)
        nodes = [Tenant.from_model(t) for t in page.items]
        return Connection.build(nodes, page.cursors, page.has_next, after is not None)


@strawberry.type
class AdminMutation:
    @strawberry.mutation(description="Make an API key; its secret is in this answer only.")
    async def create_api_key(
        self, info: strawberry.Info[Context, None], input: CreateApiKeyInput
    ) -> CreateApiKeyResult:
        principal = info.context.principal()
        async with info.context.session() as s:
            key, secret = await KeyService(s).create(
                principal, input.name, input.role.value, input.expires_at
            )
            await s.commit()
        return CreatedApiKey(api_key=ApiKey.from_model(key), secret=secret)

    @strawberry.mutation(
        description="Revoke a key: refused from its next request; its open sockets close at "
        "their next key re-check. Revoking a revoked key answers it unchanged."
    )
    async def revoke_api_key(
        self, info: strawberry.Info[Context, None], id: strawberry.ID
    ) -> RevokeApiKeyResult:
        principal = info.context.principal()
        pk = from_global_id(id, "ApiKey")[1]
        async with info.context.session() as s:
            key = await KeyService(s).revoke(principal, pk)
            await s.commit()
        return ApiKey.from_model(key)

    @strawberry.mutation(description="Create a tenant; platform credentials only.")
    async def create_tenant(
        self, info: strawberry.Info[Context, None], input: CreateTenantInput
    ) -> CreateTenantResult:
        platform = info.context.platform()
        async with info.context.session() as s:
            tenant, first_key = await TenantAdministration(s).create(
                platform, input.name, input.tier.value, input.admin_key_name
            )
            await s.commit()
        admin_key = None
        if first_key is not None:
            admin_key = CreatedApiKey(api_key=ApiKey.from_model(first_key[0]), secret=first_key[1])
        return CreatedTenant(tenant=Tenant.from_model(tenant), admin_key=admin_key)

    @strawberry.mutation(
        description="Move a tenant to another tier (from its next call); platform credentials only."
    )
    async def set_tenant_tier(
        self, info: strawberry.Info[Context, None], input: SetTenantTierInput
    ) -> ManageTenantResult:
        platform = info.context.platform()
        pk = from_global_id(input.tenant, "Tenant")[1]
        async with info.context.session() as s:
            tenant = await TenantAdministration(s).set_tier(platform, pk, input.tier.value)
            await s.commit()
        return Tenant.from_model(tenant)

    @strawberry.mutation(
        description="Suspend a tenant (its credentials are refused, its open sockets close, "
        "running executions go on) or resume it; platform credentials only."
    )
    async def suspend_tenant(
        self, info: strawberry.Info[Context, None], input: SuspendTenantInput
    ) -> ManageTenantResult:
        platform = info.context.platform()
        pk = from_global_id(input.tenant, "Tenant")[1]
        async with info.context.session() as s:
            tenant = await TenantAdministration(s).set_suspended(platform, pk, input.suspended)
            await s.commit()
        return Tenant.from_model(tenant)
