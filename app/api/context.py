"""The typed request context: dependencies, the authenticated principal and DataLoaders.

HTTP: one context per request. WebSocket: Strawberry builds one context per connection, so
subscriptions call `fresh_loaders()` before each event; a connection outlives its data.

`admit()` is the edge's one gate, called for every operation (HTTP or socket) and every socket
connect: it authenticates the key once and counts the operation against the caller's budget,
the tenant's with a valid key, the client address's without one (docs/security.md).

A platform credential (app/tenants/platform.py) authenticates as `platform_`, never as
`principal_`: `principal()` refuses it (it has no tenant) and `platform()` refuses tenant keys,
so each field asks for the one kind of caller it serves. It spends its own budget,
"platform:<key id>".

`claim_socket()` gives an authenticated socket one of its tenant's WS_MAX_SOCKETS_PER_TENANT
places, counted across API replicas in Redis (SocketLease below).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.websockets import WebSocket
from strawberry.dataloader import DataLoader

from app.ai.repository import AiRepository
from app.analytics.forecast import CostEstimateReport, ForecastService
from app.api.deps import Deps
from app.errors import DomainError, Forbidden, RateLimited, Unauthenticated, Unavailable
from app.executions.repository import ExecutionRepository
from app.log_context import bind, security_event
from app.metrics import AUTH_FAILURES, RATE_LIMITED
from app.models import AiUsage, Execution, Template, TemplateVersion, Tenant
from app.settings import Settings
from app.templates.repository import TemplateRepository
from app.templates.service import popularity_since
from app.tenants.repository import TenantRepository
from app.tenants.service import NO_TENANT, PlatformPrincipal, Principal, TenantService

log = structlog.get_logger(__name__)


# A tenant's open sockets: one sorted set per tenant, a member per socket scored with the time
# (Redis's clock, ms) its lease runs out. Chosen over INCR/DECR: a replica that dies without
# DECR leaves a counter too high for as long as any socket of the tenant keeps refreshing its
# TTL, whereas each socket here has its own lease, so a dead replica's sockets stop counting
# one lease after its last renewal, and a claim drops expired members before it counts.
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local open = redis.call('ZCARD', KEYS[1])
if open >= tonumber(ARGV[2]) then
  return -open
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return open + 1
"""
# Renewal also puts back a member that went missing (Redis restarted or lost the key): the
# socket is open, so it counts, even if that briefly puts the tenant over its cap.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


@dataclass
class SocketLease:
    """One open socket's place among its tenant's, held until `release` or until its lease
    (3 x KEY_RECHECK_SECONDS, renewed at every key re-check) runs out."""

    redis: Redis
    key: str
    member: str
    lease_ms: int

    @classmethod
    async def claim(
        cls, redis: Redis, tenant_id: uuid.UUID, settings: Settings
    ) -> tuple[SocketLease | None, int]:
        """(the lease, the tenant's open sockets with it), or (None, open sockets) when the
        tenant already has WS_MAX_SOCKETS_PER_TENANT. Redis unreachable: let it through
        without a lease (availability over strictness, like the rate limiter)."""
        lease = cls(
            redis,
            f"wfs:ws:{tenant_id}",
            uuid.uuid4().hex,
            max(1000, int(3000 * settings.key_recheck_seconds)),
        )
        cap = settings.ws_max_sockets_per_tenant
        try:
            claim = redis.register_script(_CLAIM)  # EVALSHA: the script text is sent once
            open_ = await claim(keys=[lease.key], args=[lease.member, cap, lease.lease_ms])
        except (RedisError, OSError) as exc:
            log.warning("api.sockets_unavailable", error=str(exc))
            return None, 0
        return (lease, int(open_)) if int(open_) > 0 else (None, -int(open_))

    async def renew(self) -> None:
        try:
            renew = self.redis.register_script(_RENEW)
            await renew(keys=[self.key], args=[self.member, self.lease_ms])
        except (RedisError, OSError) as exc:  # the lease lasts a few renewals
            log.warning("api.sockets_unavailable", error=str(exc))

    async def release(self) -> None:
        try:
            await self.redis.zrem(self.key, self.member)
        except (RedisError, OSError) as exc:  # the lease runs out by itself
            log.warning("api.sockets_unavailable", error=str(exc))


@dataclass
class Loaders:
    templates: DataLoader[uuid.UUID, Template | None]
    versions: DataLoader[uuid.UUID, TemplateVersion | None]
    executions: DataLoader[uuid.UUID, Execution | None]
    tenants: DataLoader[uuid.UUID, Tenant | None]
    # Keyed by template id; only ever asked for templates the caller can already read.
    template_versions: DataLoader[uuid.UUID, list[TemplateVersion]]
    template_run_counts: DataLoader[uuid.UUID, int]
    template_shares: DataLoader[uuid.UUID, list[str]]
    # (template id, version number or None for the latest not deprecated): the version a
    # caller is offered (app/templates/catalog.py); accepted versions are the caller's own.
    offered_versions: DataLoader[tuple[uuid.UUID, int | None], TemplateVersion | None]
    accepted_versions: DataLoader[uuid.UUID, int | None]
    # Keyed by execution id; only asked for executions already loaded for the caller.
    ai_usage: DataLoader[uuid.UUID, list[AiUsage]]
    # (template id, tier): Template.costEstimate, for templates the caller can already read.
    cost_estimates: DataLoader[tuple[uuid.UUID, str], CostEstimateReport]


@dataclass
class Context:
    deps: Deps
    request: Request | WebSocket
    response: Any = None
    auth_error: DomainError | None = None
    principal_: Principal | None = None
    platform_: PlatformPrincipal | None = None
    connection_params: dict[str, Any] | None = None
    # The caller's `Authorization` value (HTTP header or connection_init payload); checked
    # lazily by admit(), so a request that runs no operation costs no key lookup.
    authorization: str | None = None
    # Sockets admit each operation in their message loop (GuardedTransportWSHandler), so
    # the schema's OperationBudget does not count it twice.
    admitted_per_message: bool = False
    # A socket's place among its tenant's open sockets (claim_socket), released when it ends.
    socket_lease: SocketLease | None = None
    loaders: Loaders = field(init=False)
    _authenticated: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.fresh_loaders()

    def principal(self) -> Principal:
        """The caller, or the reason there is none (missing, malformed, revoked or bad key)."""
        if self.principal_ is not None:
            return self.principal_
        if self.platform_ is not None:
            raise Forbidden(NO_TENANT)
        raise self.auth_error or Unauthenticated(
            "missing API key: send `Authorization: Bearer <key>`"
        )

    def platform(self) -> PlatformPrincipal:
        """The platform operator calling, or why not: a tenant key (even an admin's) is
        FORBIDDEN; no key, or a bad one, is the authentication error."""
        if self.platform_ is not None:
            return self.platform_
        if self.principal_ is not None:
            raise Forbidden("only a platform credential may manage tenants")
        raise self.auth_error or Unauthenticated(
            "missing credential: send `Authorization: Bearer wfsp_...`"
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
        elif self.platform_ is not None:
            key, limit = f"platform:{self.platform_.key_id}", settings.rate_limit_per_minute
        else:
            key, limit = f"ip:{self.client_address}", settings.anonymous_rate_limit_per_minute
        try:
            await self.deps.limiter.check(key, cost=cost, per_minute=limit)
        except RateLimited as exc:
            return self._refuse(exc)
        if isinstance(self.auth_error, Unavailable):
            return self.auth_error
        return None

    async def claim_socket(self) -> str | None:
        """Count this (authenticated) socket among its tenant's open sockets, across replicas;
        the refusal text when the tenant already has WS_MAX_SOCKETS_PER_TENANT, else None."""
        cap = self.deps.settings.ws_max_sockets_per_tenant
        if cap <= 0 or self.socket_lease is not None:
            return None
        tenant_id = self.principal().tenant_id
        lease, open_ = await SocketLease.claim(self.deps.redis, tenant_id, self.deps.settings)
        if lease is None and open_ >= cap:
            security_event(
                "socket_refused", "too many open sockets", tenant_id=str(tenant_id), cap=cap
            )
            return f"too many open sockets: this tenant has {open_}, at most {cap}; close one"
        self.socket_lease = lease
        return None

    async def release_socket(self) -> None:
        lease, self.socket_lease = self.socket_lease, None
        if lease is not None:
            await lease.release()

    async def recheck_key(self) -> bool:
        """Authenticate the key again (an open socket, periodically): False once it is revoked
        or gone. A fresh principal also carries a changed tier or role. Infrastructure errors
        propagate: the caller keeps the socket and asks again later."""
        async with self.deps.sessions() as session:
            try:
                principal = await TenantService(session).authenticate(
                    self.authorization, tokens=self.deps.tokens
                )
            except Unavailable:  # the identity provider's keys: keep the socket, ask again
                raise
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
                caller = await TenantService(session).authenticate_any(
                    self.authorization, tokens=self.deps.tokens
                )
                await session.commit()
            if isinstance(caller, PlatformPrincipal):
                self.platform_ = caller
                bind(platform_key_id=caller.key_id)
            else:
                self.principal_ = caller
                bind(tenant_id=caller.tenant_id)
        except DomainError as exc:
            AUTH_FAILURES.inc()
            security_event("auth_failed", exc.message, code=exc.code, address=self.client_address)
            self.auth_error = exc
        except Exception as exc:  # the database: never show its error text to the caller
            log.warning("api.auth_unavailable", error=str(exc))
            self.auth_error = Unavailable("could not check the API key; try again shortly")

    def _refuse(self, exc: RateLimited) -> RateLimited:
        RATE_LIMITED.inc()
        security_event(
            "rate_limited",
            exc.message,
            tenant_id=str(self.principal_.tenant_id) if self.principal_ else None,
            address=self.client_address,
        )
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
            versions=DataLoader(self._load_versions),
            executions=DataLoader(self._load_executions),
            tenants=DataLoader(self._load_tenants),
            template_versions=DataLoader(self._load_template_versions),
            template_run_counts=DataLoader(self._load_template_run_counts),
            template_shares=DataLoader(self._load_template_shares),
            offered_versions=DataLoader(self._load_offered_versions),
            accepted_versions=DataLoader(self._load_accepted_versions),
            ai_usage=DataLoader(self._load_ai_usage),
            cost_estimates=DataLoader(self._load_cost_estimates),
        )
        return self.loaders

    async def _load_cost_estimates(
        self, keys: list[tuple[uuid.UUID, str]]
    ) -> list[CostEstimateReport]:
        async with self.session() as s:
            return await ForecastService(s).cost_estimates(self.principal().tenant_id, keys)

    async def _load_ai_usage(self, ids: list[uuid.UUID]) -> list[list[AiUsage]]:
        async with self.session() as s:
            found = await AiRepository(s).usage_for_executions(ids)
        return [found.get(i, []) for i in ids]

    # Loaders scope every lookup to the caller's tenant: another tenant's id loads as None.
    async def _load_templates(self, ids: list[uuid.UUID]) -> list[Template | None]:
        async with self.session() as s:
            found = await TemplateRepository(s).get_many_visible(self.principal().tenant_id, ids)
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

    async def _load_offered_versions(
        self, keys: list[tuple[uuid.UUID, int | None]]
    ) -> list[TemplateVersion | None]:
        async with self.session() as s:
            found = await TemplateRepository(s).offered_versions(keys)
        return [found.get(k) for k in keys]

    async def _load_accepted_versions(self, ids: list[uuid.UUID]) -> list[int | None]:
        async with self.session() as s:
            found = await TemplateRepository(s).accepted_versions(self.principal().tenant_id, ids)
        return [found.get(i) for i in ids]
