"""A tenant's storage usage shared by every process (API and worker replicas), kept in Redis,
for the S3 backend; the bucket itself is the truth it is measured from.

Three keys per tenant storage: `used` (bytes of the stored objects, each charged in whole
4 KiB blocks as on disk, as last measured plus every committed change since), `held` (a hash:
reservation id -> bytes of writes in progress) and `until` (a sorted set: reservation id -> when
it lapses). A write reserves before it sends a byte; one Lua script checks `used + held + new
<= quota` and records the reservation, atomically for all processes, so two replicas writing
for one tenant at once cannot pass the quota together. A commit removes the reservation and
adds the object's real size (less the object it replaced) to `used`; a delete subtracts.

Staleness and repair: `used` expires USAGE_TTL_SECONDS after it was measured, and a missing
`used` (expired, Redis restarted or flushed) is measured again by listing the tenant's keys
(`ListObjectsV2`, 1,000 keys a request; at most quota / 4 KiB keys). So the counter is exact
while every writer commits through here, and drift (a process killed between its upload and
its commit, objects changed by hand in the bucket) lasts until the next measure. Reservations
of a killed process lapse after RESERVATION_SECONDS (a write longer than that keeps going but
no longer holds its bytes). The one race: a write that commits while a measure lists the bucket
may be counted zero or two times until the next measure (the commit finds no `used` to add to,
and the listing may or may not have seen the object).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from app.steps.storage import Quota, StorageFull, _size, charged

USAGE_TTL_SECONDS = 300
RESERVATION_SECONDS = 3600

# KEYS: used, held, until. ARGV: adding, limit, now, id, lapses_at, held_ttl.
# Returns {status, used, pending}: status 1 reserved, 0 over quota, -1 `used` must be measured.
# A reservation id already held is resized: its old size is not counted against the new one.
_RESERVE = """
local used = redis.call('GET', KEYS[1])
if not used then return {-1, 0, 0} end
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])
for _, id in ipairs(lapsed) do redis.call('HDEL', KEYS[2], id) end
if #lapsed > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[3]) end
local pending = 0
for _, held in ipairs(redis.call('HVALS', KEYS[2])) do pending = pending + tonumber(held) end
local mine = redis.call('HGET', KEYS[2], ARGV[4])
if mine then pending = pending - tonumber(mine) end
local adding = tonumber(ARGV[1])
if tonumber(used) + pending + adding > tonumber(ARGV[2]) then
  return {0, tonumber(used), pending}
end
redis.call('HSET', KEYS[2], ARGV[4], adding)
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('EXPIRE', KEYS[3], ARGV[6])
return {1, tonumber(used), pending}
"""

# KEYS: used, held, until. ARGV: id, delta (bytes the commit adds to `used`; 0 for a release).
_SETTLE = """
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local delta = tonumber(ARGV[2])
if delta ~= 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  local now = redis.call('INCRBY', KEYS[1], delta)
  if now < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL') end
end
return 1
"""

_CLIENTS: dict[str, redis.Redis] = {}
_CLIENTS_LOCK = threading.Lock()


def redis_client(url: str) -> redis.Redis:
    """One blocking client (and connection pool) per URL; these calls run in worker threads."""
    with _CLIENTS_LOCK:
        if url not in _CLIENTS:
            _CLIENTS[url] = redis.Redis.from_url(url, socket_timeout=10)
        return _CLIENTS[url]


class SharedUsage:
    """The usage of one tenant's storage (`name` says which: bucket, prefix and tenant);
    `measure` lists the storage and returns its usage (called when `used` is missing)."""

    def __init__(self, client: redis.Redis, name: str, measure: Callable[[], int]) -> None:
        base = f"wfs:storage:{name}"
        self.keys = [f"{base}:used", f"{base}:held", f"{base}:until"]
        self.client, self.measure = client, measure
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)

    def reserve(self, written: int, replaced: int, quota: Quota) -> SharedReservation:
        """Hold what a write adds (`written` less the `replaced` object it overwrites), or
        raise StorageFull."""
        reservation = SharedReservation(self, written, replaced, quota)
        reservation.hold()
        return reservation

    def _try(self, rid: str, adding: int, quota: Quota) -> None:
        for _ in range(3):
            now = time.time()
            args: list[Any] = [adding, quota.limit, now, rid, now + RESERVATION_SECONDS]
            status, used, pending = self._reserve(keys=self.keys, args=[*args, 2 * 3600])
            if status == 1:
                return
            if status == 0:
                raise StorageFull(
                    f"storage quota exceeded: the {quota.tier} tier stores at most "
                    f"{_size(quota.limit)} ({quota.limit} bytes); {_size(used + pending)} are "
                    f"used and this write needs {_size(adding)} more (files count in whole "
                    "4 KiB blocks); delete files to make room"
                )
            self.client.set(self.keys[0], self.measure(), ex=USAGE_TTL_SECONDS, nx=True)
        raise RuntimeError("storage usage could not be measured")  # Redis dropping keys at once

    def settle(self, rid: str, delta: int) -> None:
        self._settle(keys=self.keys, args=[rid, delta])

    def freed(self, nbytes: int) -> None:
        """Objects of `nbytes` (charged) were deleted."""
        if nbytes:
            self.settle("-", -nbytes)

    def forget(self) -> None:
        """Measure again before the next write (after objects were added without one)."""
        self.client.delete(self.keys[0])

    def used(self) -> int | None:
        value = self.client.get(self.keys[0])
        return None if value is None else int(value)


class SharedReservation:
    """What `storage.Reservation` is for the local ledger, held in Redis."""

    def __init__(self, usage: SharedUsage, written: int, replaced: int, quota: Quota) -> None:
        self.usage, self.quota = usage, quota
        self.written, self.replaced = written, replaced
        self.held = max(0, written - replaced)
        self.id = uuid.uuid4().hex
        self.open = False

    def hold(self) -> None:
        self.usage._try(self.id, self.held, self.quota)
        self.open = True

    def resize(self, written: int) -> None:
        """The write puts `written` bytes instead; growing is checked against the quota
        (atomically: the reservation keeps its old size when the new one does not fit)."""
        held = max(0, written - self.replaced)
        if held != self.held:
            self.usage._try(self.id, held, self.quota)
        self.written, self.held = written, held

    def commit(self, size: int) -> None:
        """The object of `size` bytes is stored: count it, drop the reservation."""
        if self.open:
            self.usage.settle(self.id, charged(size) - self.replaced)
            self.open = False

    def release(self) -> None:
        if self.open:
            self.usage.settle(self.id, 0)
            self.open = False
