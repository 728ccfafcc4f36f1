"""Process-wide live event bus over Redis pub/sub.

PostgreSQL is the source of truth; this bus only carries live notifications between processes
and tells subscribers (`Resync`) when they may have missed some, so they re-read PostgreSQL.

Design:
- ONE listener task owns ONE pub/sub connection per process. Local subscribers are refcounted
  per channel under a lock: the first sends SUBSCRIBE and returns only once Redis confirmed it,
  the last one leaving sends UNSUBSCRIBE.
- The listener runs an outer reconnect loop (capped exponential backoff). Each connection is a
  fresh `PubSub` with retries disabled and commands are written on its raw connection, so
  redis-py never reconnects and re-subscribes behind our back: every reconnect is ours; it
  re-subscribes all active channels, then puts `Resync("reconnected")` into every queue.
- Idle connections are PINGed and declared dead if nothing comes back within seconds
  (redis-py's `health_check_interval` only sends PINGs on pub/sub connections, never awaits them).
- Queues are bounded. A full queue drops the event and owes exactly one `Resync("overflow")`,
  delivered as soon as there is room and before any later event.
- Bad payloads (non-UTF-8, invalid JSON, not an object) are logged and skipped.
- Publishing uses a separate pooled client with short timeouts; False when Redis is unreachable.

Why not `broadcaster`: measured with redis-py 8, its Redis backend never delivers, its listener
dies silently when Redis restarts or on one non-UTF-8 payload, concurrent first subscribers race
and its queues are unbounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from app.events.channels import BUS_PREFIX
from app.redis_conn import redis_client

log = logging.getLogger(__name__)

_NET_ERRORS = (RedisError, OSError, TimeoutError)
_POLL = 0.5  # listener read timeout; bounds the reaction to reconnect requests
_PING_IDLE = 1.0  # PING the pub/sub connection after this long without traffic
_DEAD_AFTER = 3.0  # nothing received (not even the PONG) for this long: the connection is dead
_ACK_TIMEOUT = 5.0  # max wait for Redis to confirm a SUBSCRIBE
_START_TIMEOUT = 10.0  # max wait in start() for the first connection attempt
_MIN_BACKOFF = 0.1


@dataclass(frozen=True, slots=True)
class Event:
    """A message received on a channel (without prefix). `data` is shared: treat as read-only."""

    channel: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Resync:
    """You may have missed messages; re-read the source of truth. reason: reconnected|overflow."""

    reason: str


_CLOSED = object()


class Subscription:
    """Async iterator of `Event | Resync` for one channel; obtain via `EventBus.subscribe`."""

    def __init__(self, channel: str, queue_size: int) -> None:
        self.channel = channel
        self._queue: asyncio.Queue[Event | Resync | object] = asyncio.Queue(maxsize=queue_size)
        self._owed: str | None = None  # reason of a Resync that did not fit into the queue yet
        self._closed = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event | Resync:
        item = await self.get()
        if item is None:
            raise StopAsyncIteration
        return item

    async def get(self, timeout: float | None = None) -> Event | Resync | None:  # noqa: ASYNC109
        """Next item; None on timeout or once the subscription or the bus is closed."""
        if self._closed:
            return None
        try:
            async with asyncio.timeout(timeout):
                item = await self._queue.get()
        except TimeoutError:
            return None
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)  # wake any other waiter too
            return None
        self._flush()
        return cast(Event | Resync, item)

    def _offer(self, item: Event | Resync) -> None:
        """Enqueue without ever blocking (called by the listener)."""
        if self._closed:
            return
        self._flush()
        if isinstance(item, Event) and self._owed is None:
            if not self._queue.full():
                self._queue.put_nowait(item)
                return
            log.warning("events.bus.overflow channel=%s dropping events", self.channel)
        self._owed = self._owed or (item.reason if isinstance(item, Resync) else "overflow")
        self._flush()

    def _flush(self) -> None:
        if self._owed is not None and not self._queue.full():
            self._queue.put_nowait(Resync(self._owed))
            self._owed = None

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(_CLOSED)


async def publish_on(
    redis: Redis, channel: str, data: dict[str, Any], *, prefix: str = BUS_PREFIX
) -> bool:
    """Publish `data` on `channel` as the bus does (its prefix, compact JSON) with any Redis
    client (code without a bus: the AI gateway); False (logged) if Redis is unreachable."""
    if not isinstance(data, dict):
        raise TypeError("event data must be a dict")
    try:
        await redis.publish(prefix + channel, json.dumps(data, separators=(",", ":")))
    except _NET_ERRORS as exc:
        log.warning("events.bus.publish_failed channel=%s error=%r", channel, exc)
        return False
    return True


class EventBus:
    """Live events over Redis pub/sub with reconnect, refcounted channels and bounded queues."""

    def __init__(
        self,
        redis_url: str,
        *,
        queue_size: int = 1000,
        max_backoff: float = 5.0,
        prefix: str = BUS_PREFIX,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self._queue_size, self._max_backoff, self._prefix = queue_size, max_backoff, prefix
        timeouts: dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0}
        # One quick retry, so a pooled connection left stale by a Redis restart gets replaced.
        retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), 1)
        self._redis = redis_client(redis_url, retry=retry, **timeouts)
        self._sub_redis = redis_client(redis_url, retry=Retry(NoBackoff(), 0), **timeouts)
        self._channels: dict[str, set[Subscription]] = {}  # prefixed channel -> subscribers
        self._acks: dict[str, deque[asyncio.Future[bool]]] = {}  # SUBSCRIBEs awaiting confirm
        self._lock = asyncio.Lock()  # serialises refcount transitions and re-subscribing
        self._pubsub: PubSub | None = None
        self._connected = self._reconnect_requested = self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._first_attempt = asyncio.Event()

    @property
    def connected(self) -> bool:
        """True while the listener's pub/sub connection is up and subscribed."""
        return self._connected

    async def start(self) -> None:
        """Start the listener (idempotent); waits briefly for the first connection attempt."""
        if self._closed:
            raise RuntimeError("EventBus is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="events.bus.listener")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_START_TIMEOUT):
                await self._first_attempt.wait()

    async def close(self) -> None:
        """Stop the listener, end every subscription's iteration, close the connections."""
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        await self._drop_connection()
        for subs in self._channels.values():
            for sub in subs:
                sub._close()
        self._channels.clear()
        self._first_attempt.set()
        await self._sub_redis.aclose()
        await self._redis.aclose()

    async def publish(self, channel: str, data: dict[str, Any]) -> bool:
        """Publish `data` as JSON; False (logged) instead of raising if Redis is unreachable."""
        if not isinstance(data, dict):
            raise TypeError("event data must be a dict")
        if self._closed:
            log.warning("events.bus.publish_failed channel=%s error=closed", channel)
            return False
        return await publish_on(self._redis, channel, data, prefix=self._prefix)

    async def ping(self) -> bool:
        """Readiness check: False if Redis is unreachable."""
        try:
            return bool(await self._redis.ping())
        except _NET_ERRORS:
            return False

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[Subscription]:
        """On entry Redis has confirmed the SUBSCRIBE, or Redis is down and the first item will
        be `Resync("reconnected")`. Starts the bus if needed."""
        return self._subscription(channel)

    @asynccontextmanager
    async def _subscription(self, channel: str) -> AsyncIterator[Subscription]:
        await self.start()
        sub, key = Subscription(channel, self._queue_size), self._prefix + channel
        try:
            await self._add(sub, key)
            yield sub
        finally:
            sub._close()
            subs = self._channels.get(key)
            if subs is not None and sub in subs:
                subs.discard(sub)
                if not subs:
                    del self._channels[key]
                    await asyncio.shield(self._unsubscribe(key))

    async def _add(self, sub: Subscription, key: str) -> None:
        async with self._lock:
            if self._closed:
                raise RuntimeError("EventBus is closed")
            if key in self._channels:  # confirmed already: its first subscriber held the lock
                self._channels[key].add(sub)
                return
            self._channels[key] = {sub}
            if not self._connected:
                return  # the listener subscribes it on (re)connect, then sends Resync
            ack = asyncio.get_running_loop().create_future()
            self._acks.setdefault(key, deque()).append(ack)
            try:
                await self._send("SUBSCRIBE", key)
                async with asyncio.timeout(_ACK_TIMEOUT):
                    confirmed = await ack
            except _NET_ERRORS as exc:
                log.warning("events.bus.subscribe_failed channel=%s error=%r", key, exc)
                confirmed = False
            if not confirmed and self._connected:
                self._reconnect_requested = True  # reconnecting re-subscribes and sends Resync

    async def _unsubscribe(self, key: str) -> None:
        async with self._lock:
            if key in self._channels or not self._connected:
                return  # re-subscribed meanwhile, or the next connection leaves it out anyway
            try:
                await self._send("UNSUBSCRIBE", key)
            except _NET_ERRORS as exc:
                log.info("events.bus.unsubscribe_failed channel=%s error=%r", key, exc)

    async def _send(self, *args: str) -> None:
        # Raw connection: PubSub.execute_command would silently reconnect a dropped connection.
        conn = self._pubsub.connection if self._pubsub is not None else None
        if conn is None or not conn.is_connected:
            raise RedisConnectionError("pub/sub connection is down")
        await conn.send_command(*args)

    async def _run(self) -> None:
        failures = 0
        while not self._closed:
            error: BaseException | None = None
            try:
                await self._connect()
                failures = 0
                await self._listen()
            except asyncio.CancelledError:
                raise
            except _NET_ERRORS as exc:
                error = exc
            except Exception as exc:
                log.exception("events.bus.listener_error")
                error = exc
            finally:
                await self._drop_connection()
                self._first_attempt.set()
            delay = min(self._max_backoff, _MIN_BACKOFF * 2**failures) * random.uniform(0.5, 1)
            failures += 1
            log.warning(
                "events.bus.reconnecting attempt=%d delay=%.2fs error=%r", failures, delay, error
            )
            await asyncio.sleep(delay)

    async def _connect(self) -> None:
        self._pubsub = pubsub = self._sub_redis.pubsub()
        await pubsub.connect()  # outside the lock: a slow connect must not block subscribers
        async with self._lock:
            pending = set(self._channels)
            if pending:
                await self._send("SUBSCRIBE", *pending)
                async with asyncio.timeout(_ACK_TIMEOUT):
                    while pending:
                        msg = await pubsub.get_message(timeout=_POLL)
                        if msg is not None and msg["type"] == "subscribe":
                            pending.discard(_text(msg["channel"]))
                        elif msg is not None:
                            self._handle(msg)
            self._connected, self._reconnect_requested = True, False
            for subs in self._channels.values():
                for sub in subs:
                    sub._offer(Resync("reconnected"))
        self._first_attempt.set()
        log.info("events.bus.connected channels=%d", len(self._channels))

    async def _listen(self) -> None:
        pubsub = self._pubsub
        assert pubsub is not None
        loop = asyncio.get_running_loop()
        last_rx, ping_sent = loop.time(), False
        while True:
            conn = pubsub.connection
            if self._reconnect_requested or conn is None or not conn.is_connected:
                # (get_message would silently reconnect a closed connection)
                raise RedisConnectionError("pub/sub connection closed or reconnect requested")
            msg = await pubsub.get_message(timeout=_POLL)
            now = loop.time()
            if msg is not None:
                last_rx, ping_sent = now, False
                try:
                    self._handle(msg)
                except Exception:
                    log.exception("events.bus.handle_error")
            elif now - last_rx > _DEAD_AFTER:
                raise TimeoutError(f"nothing received from Redis for {now - last_rx:.1f}s")
            elif now - last_rx > _PING_IDLE and not ping_sent:
                await self._send("PING")
                ping_sent = True

    async def _drop_connection(self) -> None:
        if self._connected:
            level = logging.INFO if self._closed else logging.WARNING
            log.log(level, "events.bus.disconnected channels=%d", len(self._channels))
        self._connected = False
        for waiters in self._acks.values():
            for ack in waiters:
                if not ack.done():
                    ack.set_result(False)
        self._acks.clear()
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def _handle(self, msg: dict[str, Any]) -> None:
        kind, channel = msg["type"], _text(msg["channel"])
        if kind == "subscribe" and (waiters := self._acks.get(channel)):
            ack = waiters.popleft()
            if not waiters:
                del self._acks[channel]
            if not ack.done():
                ack.set_result(True)
        elif kind == "message" and (subs := self._channels.get(channel)):
            raw = msg["data"]
            try:
                data = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
            except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                log.warning(
                    "events.bus.bad_payload channel=%s error=%s raw=%.60r", channel, exc, raw
                )
                return
            if not isinstance(data, dict):
                log.warning("events.bus.bad_payload channel=%s error=not-an-object", channel)
                return
            event = Event(channel.removeprefix(self._prefix), data)
            for sub in tuple(subs):
                sub._offer(event)


def _text(value: bytes | str | None) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value or ""
