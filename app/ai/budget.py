"""Monthly AI budgets per tenant: reserve-then-settle accounting, atomic in Redis.

Before a call the gateway reserves an upper-bound estimate; afterwards it settles the reservation
with the actual cost, or releases it when the call failed. Each step is one Lua script, so
concurrent callers cannot overspend: the only overshoot is a call whose actual cost exceeds its
reservation. Amounts are integer micro-dollars in Redis (exact); the API speaks Decimal USD.

Keys, per tenant and calendar month (UTC), expire ~40 days after their last write:
  {prefix}{<tenant>:<YYYY-MM>}:spent  settled spend
  {prefix}{<tenant>:<YYYY-MM>}:res    hash reservation id -> "<micro>:<reserved at, ms>"
  {prefix}{<tenant>:<YYYY-MM>}:soft   set once the soft threshold was crossed
  {prefix}{<tenant>:<YYYY-MM>}:out    set once the budget was exhausted (settled spend reached
                                      the limit, seen by a settle or a refused reservation)
(the braces are a Redis Cluster hash tag: one script's keys share a slot). Reservations older than
the reservation TTL (a crashed worker never settled them) are dropped by the scripts.

A limit < 0 means unlimited; a limit of 0 allows no AI spend. A reservation is charged to the
month it was made in. PostgreSQL (ai_usage.cost_usd) is the source of truth: reconcile() resets
`spent` from it, keeping live reservations. Redis errors propagate: the caller decides.

Crossing the soft threshold and exhausting the budget are each told once a month per tenant,
decided by the `soft`/`out` flags (SET NX inside the scripts). Exhausted means the settled spend
reached the limit: a reservation refused because of a large estimate or of reservations still in
flight is not (those settle lower or are released, and smaller calls still fit); telling it
would also use up the month's one notice before the money is really gone. With `notices` the
ledger appends BUDGET_THRESHOLD / BUDGET_EXHAUSTED to the tenant's notification log
(app/notifications) and wakes its readers. If that write fails the flag is dropped again, so
the next call retries it.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

import redis.asyncio as aioredis
import structlog
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.ai.metrics import AI_BUDGET_SOFT_THRESHOLD
from app.db import SessionFactory
from app.events.bus import publish_on
from app.models.ai_usage import AiUsage
from app.notifications.service import NotificationService, wake

log = structlog.get_logger(__name__)

UNLIMITED = Decimal(-1)
KEY_TTL_SECONDS = 40 * 24 * 3600

# Sums the live reservations of hash `key`, deleting those reserved before `cutoff` (ms).
_LIVE_RESERVED = """
local function live_reserved(key, cutoff)
  local total = 0
  local entries = redis.call('HGETALL', key)
  for i = 1, #entries, 2 do
    local amount, at = string.match(entries[i + 1], '^(%d+):(%d+)$')
    if amount == nil or tonumber(at) < cutoff then
      redis.call('HDEL', key, entries[i])
    else
      total = total + tonumber(amount)
    end
  end
  return total
end
"""
# KEYS: spent, res, out. ARGV: id, amount, limit (-1 unlimited), now ms, reservation ttl ms,
# key ttl s. Returns {granted, spent, reserved, out flag set now}.
_RESERVE = (
    _LIVE_RESERVED
    + """
local reserved = live_reserved(KEYS[2], tonumber(ARGV[4]) - tonumber(ARGV[5]))
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
if limit >= 0 and spent + reserved + amount > limit then
  local out = 0
  if spent >= limit and redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[6]) then out = 1 end
  return {0, spent, reserved, out}
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ':' .. ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {1, spent, reserved + amount, 0}
"""
)
# KEYS: spent, res, soft, out. ARGV: id, actual, soft threshold (-1 none), now ms, res ttl ms,
# key ttl s, limit (-1 none). Returns {spent, reserved, soft flag set now, out flag set now}.
_SETTLE = (
    _LIVE_RESERVED
    + """
redis.call('HDEL', KEYS[2], ARGV[1])
local spent = redis.call('INCRBY', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[6])
local reserved = live_reserved(KEYS[2], tonumber(ARGV[4]) - tonumber(ARGV[5]))
local threshold = tonumber(ARGV[3])
local crossed = 0
if threshold >= 0 and spent >= threshold then
  if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[6]) then crossed = 1 end
end
local limit = tonumber(ARGV[7])
local out = 0
if limit >= 0 and spent >= limit then
  if redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[6]) then out = 1 end
end
return {spent, reserved, crossed, out}
"""
)
# KEYS: spent, res. ARGV: now ms, reservation ttl ms.
_STATUS = (
    _LIVE_RESERVED
    + """
local reserved = live_reserved(KEYS[2], tonumber(ARGV[1]) - tonumber(ARGV[2]))
return {tonumber(redis.call('GET', KEYS[1]) or '0'), reserved}
"""
)


@dataclass
class BudgetStatus:
    limit_usd: Decimal  # < 0: unlimited
    spent_usd: Decimal
    reserved_usd: Decimal
    remaining_usd: Decimal  # Decimal("Infinity") when unlimited; never below 0
    month: str  # "YYYY-MM"
    crossed_soft_threshold: bool = False  # set only by the settle() that crossed it
    exhausted_now: bool = False  # set only by the call that exhausted it (once a month)


@dataclass
class Reservation:
    tenant_id: str
    month: str
    amount_usd: Decimal
    id: str
    limit_usd: Decimal = UNLIMITED  # the limit it was granted under (for settle's status)


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def month_of(now: datetime | None = None) -> str:
    """The budget month ("YYYY-MM", UTC) of an instant; naive datetimes are taken as UTC."""
    return _utc(now).strftime("%Y-%m")


def month_bounds(now: datetime | None = None) -> tuple[datetime, datetime]:
    """[start, end) of the UTC calendar month holding `now`."""
    start = _utc(now).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def to_micro(amount: Decimal, rounding: str = ROUND_HALF_UP) -> int:
    return int((amount * 1_000_000).to_integral_value(rounding=rounding))


def from_micro(micro: int) -> Decimal:
    return Decimal(micro).scaleb(-6)


def _ms(now: datetime) -> int:
    return int(now.timestamp() * 1000)


class BudgetLedger:
    """Reserve, settle, release and inspect monthly AI budgets (shared by all workers)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        soft_threshold: float | Decimal = 0.8,
        prefix: str = "wfs:budget:",
        reservation_ttl_seconds: float = 15 * 60,
        notices: BudgetNotices | None = None,
    ) -> None:
        self.redis, self.prefix, self.notices = redis, prefix, notices
        self.soft_threshold = Decimal(str(soft_threshold))
        self.reservation_ttl_ms = int(reservation_ttl_seconds * 1000)
        self._reserve = redis.register_script(_RESERVE)
        self._settle = redis.register_script(_SETTLE)
        self._status = redis.register_script(_STATUS)

    def _keys(self, tenant_id: str, month: str) -> tuple[str, str, str, str]:
        base = f"{self.prefix}{{{tenant_id}:{month}}}:"
        return base + "spent", base + "res", base + "soft", base + "out"

    async def reserve(
        self, tenant_id: str, amount: Decimal, limit: Decimal, now: datetime | None = None
    ) -> Reservation | None:
        """Hold `amount` of this month's budget, or None when spent + reserved + amount would
        pass `limit` (always None for a limit of 0; never for a limit < 0)."""
        if amount < 0:
            raise ValueError("a reservation amount must be >= 0")
        if limit == 0:
            return None
        at = _utc(now)
        month = month_of(at)
        spent_key, res_key, _, out_key = self._keys(tenant_id, month)
        micro = to_micro(amount, ROUND_CEILING)
        limit_micro = -1 if limit < 0 else to_micro(limit, ROUND_FLOOR)
        reservation_id = uuid.uuid4().hex
        granted, spent, reserved, out = await self._reserve(
            keys=[spent_key, res_key, out_key],
            args=[
                reservation_id,
                micro,
                limit_micro,
                _ms(at),
                self.reservation_ttl_ms,
                KEY_TTL_SECONDS,
            ],
        )
        if not granted:
            if out:
                status = _make_status(limit, spent, reserved, month, exhausted=True)
                await self._notify(tenant_id, "BUDGET_EXHAUSTED", status, out_key)
            return None
        return Reservation(tenant_id, month, from_micro(micro), reservation_id, limit)

    async def settle(
        self, reservation: Reservation, actual: Decimal, now: datetime | None = None
    ) -> BudgetStatus:
        """Charge the actual cost (lower or higher than reserved) and drop the reservation.
        Call it once per reservation: a second call would charge again."""
        if actual < 0:
            raise ValueError("an actual cost must be >= 0")
        keys = self._keys(reservation.tenant_id, reservation.month)
        limit = reservation.limit_usd
        threshold = -1 if limit <= 0 else to_micro(limit * self.soft_threshold, ROUND_CEILING)
        spent, reserved, crossed, out = await self._settle(
            keys=list(keys),
            args=[
                reservation.id,
                to_micro(actual),
                threshold,
                _ms(_utc(now)),
                self.reservation_ttl_ms,
                KEY_TTL_SECONDS,
                -1 if limit < 0 else to_micro(limit, ROUND_FLOOR),
            ],
        )
        if crossed:
            AI_BUDGET_SOFT_THRESHOLD.inc()
            log.info(
                "ai.budget.soft_threshold_crossed",
                tenant_id=reservation.tenant_id,
                month=reservation.month,
                spent_usd=str(from_micro(spent)),
                limit_usd=str(limit),
            )
        status = _make_status(limit, spent, reserved, reservation.month, bool(crossed), bool(out))
        if crossed:
            await self._notify(reservation.tenant_id, "BUDGET_THRESHOLD", status, keys[2])
        if out:
            await self._notify(reservation.tenant_id, "BUDGET_EXHAUSTED", status, keys[3])
        return status

    async def _notify(self, tenant_id: str, type: str, status: BudgetStatus, flag: str) -> None:
        """Tell the tenant's notification log; on failure drop `flag`, so it is told later."""
        if self.notices is not None and not await self.notices.notify(tenant_id, type, status):
            await self.redis.delete(flag)

    async def release(self, reservation: Reservation) -> None:
        """Give a failed call's reservation back."""
        res_key = self._keys(reservation.tenant_id, reservation.month)[1]
        await self.redis.hdel(res_key, reservation.id)

    async def status(
        self, tenant_id: str, limit: Decimal, now: datetime | None = None
    ) -> BudgetStatus:
        """This month's figures against `limit`."""
        at = _utc(now)
        month = month_of(at)
        spent_key, res_key, _, _ = self._keys(tenant_id, month)
        spent, reserved = await self._status(
            keys=[spent_key, res_key], args=[_ms(at), self.reservation_ttl_ms]
        )
        return _make_status(limit, spent, reserved, month)

    async def reconcile(
        self, tenant_id: str, spent_from_db: Decimal, now: datetime | None = None
    ) -> None:
        """Set this month's spend to the PostgreSQL figure (see month_spend), keeping live
        reservations. A call settled in Redis but not yet committed to PostgreSQL is undercounted
        until the next reconcile."""
        spent_key = self._keys(tenant_id, month_of(now))[0]
        await self.redis.set(spent_key, to_micro(spent_from_db), ex=KEY_TTL_SECONDS)


def _make_status(
    limit: Decimal,
    spent: int,
    reserved: int,
    month: str,
    crossed: bool = False,
    exhausted: bool = False,
) -> BudgetStatus:
    spent_usd, reserved_usd = from_micro(spent), from_micro(reserved)
    if limit < 0:
        remaining = Decimal("Infinity")
    else:
        remaining = max(Decimal(0), limit - spent_usd - reserved_usd)
    return BudgetStatus(limit, spent_usd, reserved_usd, remaining, month, crossed, exhausted)


class BudgetNotices:
    """Appends BUDGET_THRESHOLD / BUDGET_EXHAUSTED to a tenant's notification log, then wakes
    its live readers (on `redis`, the ledger's client, under the bus's channel prefix)."""

    def __init__(self, sessions: SessionFactory, redis: aioredis.Redis) -> None:
        self.sessions, self.redis = sessions, redis

    async def notify(self, tenant_id: str, type: str, status: BudgetStatus) -> bool:
        """True once the notification is committed (the wake-up may still fail: readers poll)."""
        data = {
            "month": status.month,
            "limitUsd": str(status.limit_usd),
            "spentUsd": str(status.spent_usd),
        }
        try:
            async with self.sessions() as session:
                seq = await NotificationService(session).add(uuid.UUID(tenant_id), type, data)
                await session.commit()
        except (SQLAlchemyError, OSError, ValueError) as exc:
            log.warning("ai.budget.notification_failed", tenant_id=tenant_id, error=str(exc))
            return False
        await wake(functools.partial(publish_on, self.redis), tenant_id, seq)  # False: logged
        return True


async def month_spend(
    session: AsyncSession,
    tenant_id: uuid.UUID | str,
    month_start: datetime,
    month_end: datetime | None = None,
) -> Decimal:
    """Sum of ai_usage.cost_usd for the tenant from month_start (to month_end, exclusive)."""
    tenant = tenant_id if isinstance(tenant_id, uuid.UUID) else uuid.UUID(tenant_id)
    query = select(func.coalesce(func.sum(AiUsage.cost_usd), 0)).where(
        AiUsage.tenant_id == tenant, AiUsage.at >= month_start
    )
    if month_end is not None:
        query = query.where(AiUsage.at < month_end)
    return Decimal(await session.scalar(query) or 0)
