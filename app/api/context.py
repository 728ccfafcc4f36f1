"""The typed request context: dependencies, the authenticated principal and DataLoaders.

HTTP: one context per request. WebSocket: Strawberry builds one context per connection, so
subscriptions call `fresh_loaders()` before each event; a connection outlives its data.

`admit()` is the edge's one gate, called for every operation (HTTP or socket) and every socket
connect: it authenticates the key once and counts the operation against the caller's budget,
the tenant's with a valid key, the client address's without one (docs/security.md).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.websockets import WebSocket
from strawberry.dataloader import DataLoader

from app.ai.repository import AiRepository
from app.api.deps import Deps
from app.errors import DomainError, RateLimited, Unauthenticated, Unavailable
from app.executions.repository import ExecutionRepository
from app.metrics import AUTH_FAILURES, RATE_LIMITED
from app.models import AiUsage, Execution, Template, TemplateVersion, Tenant
from app.templates.repository import TemplateRepository
from app.templates.service import popularity_since
from app.tenants.repository import TenantRepository
from app.tenants.service import Principal, TenantService

log = structlog.get_logger(__name__)


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
    # The caller's `Authorization` value (HTTP header or connection_init payload); checked
    # lazily by admit(), so a request that runs no operation costs no key lookup.
    authorization: str | None = None
    # Sockets admit each operation in their message loop (GuardedTransportWSHandler), so
    # the schema's OperationBudget does not count it twice.
    admitted_per_message: bool = False
    loaders: Loaders = field(init=False)
    _authenticated: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.fresh_loaders()

    def principal(self) -> Principal:
        """The caller, or the reason there is none (missing, malformed, revoked or bad key)."""
        if self.principal_ is not None:
            return self.principal_
        raise self.auth_error or Unauthenticated(
            "missing API key: send `Authorization: Bearer <key>`"
        )

    @property
    def client_address(self) -> str:
        """The peer address (uvicorn puts a trusted proxy's X-Forwarded-For client here)."""
        client = self.request.client
        return client.host if client is not None else "unknown"

    async def admit(self, cost: int = 1) -> DomainError | None:
        """Count `cost` requests against the caller's budget; the refusal, or None to go on.

        Callers with a valid key spend their tenant's budget (RATE_LIMIT_PER_MINUTE); callers
        without one (no key, a bad or revoked key) spend their address's
        (ANONYMOUS_RATE_LIMIT_PER_MINUTE), so failed authentications count too.
        """
        await self._authenticate_once()
        settings = self.deps.settings
        if self.principal_ is not None:
            key, limit = f"tenant:{self.principal_.tenant_id}", settings.rate_limit_per_minute
        else:
            key, limit = f"ip:{self.client_address}", settings.anonymous_rate_limit_per_minute
        try:
            await self.deps.limiter.check(key, cost=cost, per_minute=limit)
        except RateLimited as exc:
            return self._refuse(exc)
        if isinstance(self.auth_error, Unavailable):
            return self.auth_error
        return None

    async def recheck_key(self) -> bool:
        """Authenticate the key again (an open socket, periodically): False once it is revoked
        or gone. A fresh principal also carries a changed tier or role. Infrastructure errors
        propagate: the caller keeps the socket and asks again later."""
        async with self.deps.sessions() as session:
            try:
                principal = await TenantService(session).authenticate(self.authorization)
            except DomainError as exc:
                self.principal_, self.auth_error = None, exc
                return False
            await session.commit()
        self.principal_ = principal
        return True

    async def _authenticate_once(self) -> None:
        if self._authenticated or self.authorization is None:
            return
        self._authenticated = True
        # An address already over its anonymous budget (a bad-key flood) costs no key lookup.
        blocked = await self.deps.limiter.exceeded(
            f"ip:{self.client_address}",
            per_minute=self.deps.settings.anonymous_rate_limit_per_minute,
        )
        if blocked is not None:
            self.auth_error = blocked
            return
        try:
            async with self.deps.sessions() as session:
                self.principal_ = await TenantService(session).authenticate(self.authorization)
                await session.commit()
        except DomainError as exc:
            AUTH_FAILURES.inc()
            self.auth_error = exc
        except Exception as exc:  # the database: never show its error text to the caller
            log.warning("api.auth_unavailable", error=str(exc))
            self.auth_error = Unavailable("could not check the API key; try again shortly")

    def _refuse(self, exc: RateLimited) -> RateLimited:
        RATE_LIMITED.inc()
        if isinstance(self.request, Request) and self.response is not None:
            self.response.status_code = 429
            self.response.headers["Retry-After"] = str(exc.retry_after)
        return exc

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
