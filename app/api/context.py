"""The typed request context: dependencies, the authenticated principal and DataLoaders.

HTTP: one context per request. WebSocket: Strawberry builds one context per connection, so
subscriptions call `fresh_loaders()` before each event; a connection outlives its data.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.websockets import WebSocket
from strawberry.dataloader import DataLoader

from app.ai.repository import AiRepository
from app.api.deps import Deps
from app.errors import DomainError, Unauthenticated
from app.executions.repository import ExecutionRepository
from app.models import AiUsage, Execution, Template, TemplateVersion, Tenant
from app.templates.repository import TemplateRepository
from app.templates.service import popularity_since
from app.tenants.repository import TenantRepository
from app.tenants.service import Principal


@dataclass
class Loaders:
    templates: DataLoader[uuid.UUID, Template | None]
    latest_versions: DataLoader[uuid.UUID, TemplateVersion | None]
    versions: DataLoader[uuid.UUID, TemplateVersion | None]
    executions: DataLoader[uuid.UUID, Execution | None]
    tenants: DataLoader[uuid.UUID, Tenant | None]
    # Keyed by template id; only ever asked for templates the caller can already read.
    template_versions: DataLoader[uuid.UUID, list[TemplateVersion]]
    template_run_counts: DataLoader[uuid.UUID, int]
    template_shares: DataLoader[uuid.UUID, list[str]]
    # Keyed by execution id; only asked for executions already loaded for the caller.
    ai_usage: DataLoader[uuid.UUID, list[AiUsage]]


@dataclass
class Context:
    deps: Deps
    request: Request | WebSocket
    response: Any = None
    auth_error: DomainError | None = None
    principal_: Principal | None = None
    connection_params: dict[str, Any] | None = None
    loaders: Loaders = field(init=False)

    def __post_init__(self) -> None:
        self.fresh_loaders()

    def principal(self) -> Principal:
        """The caller, or the reason there is none (missing, malformed, revoked or bad key)."""
        if self.principal_ is not None:
            return self.principal_
        raise self.auth_error or Unauthenticated(
            "missing API key: send `Authorization: Bearer <key>`"
        )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.deps.sessions() as session:
            yield session

    def fresh_loaders(self) -> Loaders:
        self.loaders = Loaders(
            templates=DataLoader(self._load_templates),
            latest_versions=DataLoader(self._load_latest_versions),
            versions=DataLoader(self._load_versions),
            executions=DataLoader(self._load_executions),
            tenants=DataLoader(self._load_tenants),
            template_versions=DataLoader(self._load_template_versions),
            template_run_counts=DataLoader(self._load_template_run_counts),
            template_shares=DataLoader(self._load_template_shares),
            ai_usage=DataLoader(self._load_ai_usage),
        )
        return self.loaders

    async def _load_ai_usage(self, ids: list[uuid.UUID]) -> list[list[AiUsage]]:
        async with self.session() as s:
            found = await AiRepository(s).usage_for_executions(ids)
        return [found.get(i, []) for i in ids]

    # Loaders scope every lookup to the caller's tenant: another tenant's id loads as None.
    async def _load_templates(self, ids: list[uuid.UUID]) -> list[Template | None]:
        async with self.session() as s:
            found = await TemplateRepository(s).get_many_visible(self.principal().tenant_id, ids)
        return [found.get(i) for i in ids]

    async def _load_latest_versions(self, ids: list[uuid.UUID]) -> list[TemplateVersion | None]:
        async with self.session() as s:
            found = await TemplateRepository(s).latest_versions(ids)
        return [found.get(i) for i in ids]

    async def _load_versions(self, ids: list[uuid.UUID]) -> list[TemplateVersion | None]:
        async with self.session() as s:
            found = await TemplateRepository(s).versions_by_ids(ids)
        return [found.get(i) for i in ids]

    async def _load_executions(self, ids: list[uuid.UUID]) -> list[Execution | None]:
        async with self.session() as s:
            found = await ExecutionRepository(s).get_many_for_tenant(
                self.principal().tenant_id, ids
            )
        return [found.get(i) for i in ids]

    async def _load_tenants(self, ids: list[uuid.UUID]) -> list[Tenant | None]:
        async with self.session() as s:
            found = await TenantRepository(s).get_many(ids)
        return [found.get(i) for i in ids]

    async def _load_template_versions(self, ids: list[uuid.UUID]) -> list[list[TemplateVersion]]:
        async with self.session() as s:
            found = await TemplateRepository(s).versions_of(ids)
        return [found[i] for i in ids]

    async def _load_template_run_counts(self, ids: list[uuid.UUID]) -> list[int]:
        async with self.session() as s:
            found = await TemplateRepository(s).run_counts(ids, popularity_since())
        return [found.get(i, 0) for i in ids]

    async def _load_template_shares(self, ids: list[uuid.UUID]) -> list[list[str]]:
        async with self.session() as s:
            found = await TemplateRepository(s).shared_tenant_names(ids)
        return [found[i] for i in ids]
