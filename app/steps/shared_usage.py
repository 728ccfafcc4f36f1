"""A tenant's storage usage shared by every process (API and worker replicas), kept in Redis,
for the S3 backend; the bucket itself is the truth it is measured from.

Three keys per tenant storage: `used` (bytes of the stored objects, each charged in whole
4 KiB blocks as on disk, as last measured plus every committed change since), `held` (a hash:
reservation id -> bytes of writes in progress) and `until` (a sorted set: reservation id -> when
it lapses). A write reserves before it sends a byte; one Lua script checks `used + held + new
<= quota` and records the reservation, atomically for all processes, so two replicas writing
for one tenant at once cannot pass the quota together.

Exact accounting under concurrency (review finding: two deletes of one path both subtracted
its size; two overwrites both subtracted the replaced object, so `used` drifted to 0 while the
bucket held several times the quota). Every change of a key (commit of a write, delete) now
happens under a per-key lock in Redis (`lock:<path>`, SET NX PX with a random token, all keys
of a batch taken at once by one script): inside it the backend HEADs what the key holds now,
changes the object, and settles `used` by the exact difference (new size less what it
replaced; a delete subtracts only what it found). S3 is strongly consistent, so the HEAD under
the lock is the truth and the second of two deletes finds nothing to subtract. Chosen over a
per-object size hash in Redis (its updates can reach Redis in another order than the writes
reached S3, which undercounts) and over If-Match conditional writes/deletes (conditional
deletes are not supported by every S3-compatible store). The settle is fenced: it applies the
difference only while the locks still carry its token; a lock that lapsed (LOCK_SECONDS, a
stalled process) makes it drop `used` instead, so the next write measures again. A settle that
fails after the object is in place (Redis unreachable) is not the write's failure: the backend
drops `used` and reports success; when Redis cannot be reached to drop it either, this process
drops it before its next use of the counter (a Redis restored from its own persistence holds
the counter without that settle; other processes trust it until it expires).

Staleness and repair: `used` expires USAGE_TTL_SECONDS after it was measured, and a missing
`used` (expired, dropped, Redis restarted or flushed) is measured again by listing the tenant's
keys (`ListObjectsV2`, 1,000 keys a request; at most quota / 4 KiB keys). One process measures
(a `measuring` lock, SET NX); the others wait up to MEASURE_WAIT_SECONDS for its result instead
of listing the bucket too. Drift (a process killed between its upload and its settle, objects
changed by hand in the bucket) lasts until the next measure. Reservations of a killed process
lapse after RESERVATION_SECONDS. The one race left: a write that commits while a measure lists
the bucket may be counted zero or two times until the next measure (the commit finds no `used`
to add to, and the listing may or may not have seen the object); measures happen once per
USAGE_TTL_SECONDS, so this cannot be looped.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import redis

from app.steps.base import StepTransientError
from app.steps.storage import Quota, StorageFull, _size, charged

USAGE_TTL_SECONDS = 3600  # exact while writers settle here; the measure repairs outside drift
RESERVATION_SECONDS = 3600
LOCK_SECONDS = 120  # a key's lock lapses after this (a stalled process); the settle is fenced
LOCK_WAIT_SECONDS = 30.0  # how long a change waits for another change of the same key
MEASURE_LOCK_SECONDS = 300  # one measurer at a time; lapses if that process dies
MEASURE_WAIT_SECONDS = 30.0  # how long others wait for its result before measuring themselves

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

# KEYS: used, held, until, lock keys... ARGV: id, delta (bytes the commit adds to `used`; 0 for
# a release), token. Returns 1, or 0 when a lock lapsed: `used` is dropped (measured again).
_SETTLE = """
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
for i = 4, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[3] then
    redis.call('DEL', KEYS[1])
    return 0
  end
end
local delta = tonumber(ARGV[2])
if delta ~= 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  local now = redis.call('INCRBY', KEYS[1], delta)
  if now < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL') end
end
return 1
"""

# KEYS: lock keys. ARGV: token, milliseconds. All taken, or none (returns 0).
_LOCK = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end
end
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2]) end
return 1
"""

# KEYS: lock keys. ARGV: token. Removes those still holding the token.
_UNLOCK = """
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return 1
"""

_CLIENTS: dict[str, redis.Redis] = {}
_CLIENTS_LOCK = threading.Lock()
# Counters this process must drop but could not (Redis was unreachable): dropped before its
# next reservation or reading of the same counter, so a settle lost to an outage (and a `used`
# restored by Redis' own persistence) is not trusted by the process that lost it.
_UNFORGOTTEN: set[str] = set()
_UNFORGOTTEN_LOCK = threading.Lock()


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
        self.base = base = f"wfs:storage:{name}"
        self.keys = [f"{base}:used", f"{base}:held", f"{base}:until"]
        self.measuring = f"{base}:measuring"
        self.client, self.measure = client, measure
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._lock = client.register_script(_LOCK)
        self._unlock = client.register_script(_UNLOCK)

    def reserve(self, written: int, replaced: int, quota: Quota) -> SharedReservation:
        """Hold what a write adds (`written` less the `replaced` object it overwrites), or
        raise StorageFull."""
        reservation = SharedReservation(self, written, replaced, quota)
        reservation.hold()
        return reservation

    def _try(self, rid: str, adding: int, quota: Quota) -> None:
        self._forget_pending()
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
            self.current()
        raise RuntimeError("storage usage could not be measured")  # Redis dropping keys at once

    def current(self) -> int:
        """`used`, measured first when missing: by this process when it takes the `measuring`
        lock, else it waits (up to MEASURE_WAIT_SECONDS) for the process that holds it."""
        self._forget_pending()
        deadline = time.monotonic() + MEASURE_WAIT_SECONDS
        pause = 0.02
        while True:
            found = self.used()
            if found is not None:
                return found
            token = uuid.uuid4().hex
            if self.client.set(self.measuring, token, nx=True, ex=MEASURE_LOCK_SECONDS):
                try:
                    total = self.measure()
                    self.client.set(self.keys[0], total, ex=USAGE_TTL_SECONDS, nx=True)
                    return total
                finally:
                    self._unlock(keys=[self.measuring], args=[token])
            if time.monotonic() > deadline:  # the measurer is stuck: measure without it
                total = self.measure()
                self.client.set(self.keys[0], total, ex=USAGE_TTL_SECONDS, nx=True)
                return total
            time.sleep(pause)
            pause = min(pause * 2, 0.25)

    @contextlib.contextmanager
    def locked(self, paths: list[str]) -> Iterator[KeyLock]:
        """Hold the change locks of these keys (all or none; waits up to LOCK_WAIT_SECONDS
        for other changes of them to end, then StepTransientError)."""
        lock = KeyLock(
            [f"{self.base}:lock:{path}" for path in sorted(set(paths))], uuid.uuid4().hex
        )
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        pause = 0.01
        while not self._lock(keys=lock.keys, args=[lock.token, LOCK_SECONDS * 1000]):
            if time.monotonic() > deadline:
                raise StepTransientError(
                    "another change of the same file is still in progress; try again"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.2)
        try:
            yield lock
        finally:
            with contextlib.suppress(redis.RedisError):  # it lapses by itself
                self._unlock(keys=lock.keys, args=[lock.token])

    def settle(self, rid: str, delta: int, lock: KeyLock | None = None) -> bool:
        """Drop reservation `rid` and add `delta` to `used`; under `lock` only while it is
        still held (False, and `used` dropped, when it lapsed)."""
        held = lock or KeyLock([], "")
        return bool(self._settle(keys=[*self.keys, *held.keys], args=[rid, delta, held.token]))

    def freed(self, nbytes: int, lock: KeyLock | None = None) -> None:
        """Objects of `nbytes` (charged), found under `lock`, were deleted."""
        if nbytes or lock is not None:
            self.settle("-", -nbytes, lock)

    def forget(self) -> None:
        """Measure again before the next write (after objects were added without one). When
        Redis cannot be reached, this process drops the counter at its next use of it."""
        try:
            self.client.delete(self.keys[0])
        except redis.RedisError:
            with _UNFORGOTTEN_LOCK:
                _UNFORGOTTEN.add(self.keys[0])
            raise

    def _forget_pending(self) -> None:
        if self.keys[0] not in _UNFORGOTTEN:
            return
        self.client.delete(self.keys[0])
        with _UNFORGOTTEN_LOCK:
            _UNFORGOTTEN.discard(self.keys[0])

    def used(self) -> int | None:
        value = self.client.get(self.keys[0])
        return None if value is None else int(value)


class KeyLock:
    """The change locks of some keys, held with one random token."""

    def __init__(self, keys: list[str], token: str) -> None:
        self.keys, self.token = keys, token


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

    def commit(self, size: int, replaced: int, lock: KeyLock) -> None:
        """The object of `size` bytes is stored in place of one of `replaced` bytes (charged;
        0 when there was none), both found under `lock`: count it, drop the reservation."""
        if self.open:
            self.open = False
            self.usage.settle(self.id, charged(size) - replaced, lock)

    def release(self) -> None:
        if self.open:
            self.usage.settle(self.id, 0)
            self.open = False
