"""Provider health: sliding-window figures and the circuit breaker, on a fake clock; and the
snapshots workers publish to Redis for the API."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from app.ai.health import ProviderHealth, publish_snapshot, read_snapshots

P, M = "openai", "gpt-6-luna"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def health(clock: FakeClock) -> ProviderHealth:
    return ProviderHealth(clock=clock)


def gauge(provider: str, model: str) -> float | None:
    return REGISTRY.get_sample_value("wfs_ai_breaker_state", {"provider": provider, "model": model})


def test_unknown_model_is_closed_and_allowed(health: ProviderHealth) -> None:
    assert health.state(P, "never-called") == "CLOSED"
    assert health.allow(P, "never-called")
    assert health.error_rate(P, "never-called") == 0.0
    assert health.p95_latency_ms(P, "never-called") is None
    assert health.snapshot() == []


def test_opens_on_error_rate_with_min_calls(health: ProviderHealth) -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    for ok in (True, False, True, False):
        health.record(P, model, ok, 100)
    assert health.state(P, model) == "CLOSED"  # 50% but only 4 calls
    assert gauge(P, model) == 0
    health.record(P, model, False, 100)  # 3/5 = 60%
    assert health.state(P, model) == "OPEN"
    assert not health.allow(P, model)
    assert gauge(P, model) == 2


def test_opens_on_consecutive_failures(clock: FakeClock) -> None:
    health = ProviderHealth(min_calls=1000, clock=clock)
    for _ in range(20):
        health.record(P, M, True, 10)
    for _ in range(4):
        health.record(P, M, False, 10)
    assert health.state(P, M) == "CLOSED"  # 4/24 failures, 4 in a row
    health.record(P, M, False, 10)
    assert health.state(P, M) == "OPEN"


def test_half_open_trial_then_recovery(health: ProviderHealth, clock: FakeClock) -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    for _ in range(5):
        health.record(P, model, False, 50)
    assert health.state(P, model) == "OPEN"
    clock.advance(29.9)
    assert health.state(P, model) == "OPEN" and not health.allow(P, model)
    clock.advance(0.1)
    assert health.state(P, model) == "HALF_OPEN"
    assert gauge(P, model) == 1
    assert health.allow(P, model)  # the one trial slot
    assert not health.allow(P, model)
    health.record(P, model, True, 40)
    assert health.state(P, model) == "CLOSED"
    assert gauge(P, model) == 0
    assert health.allow(P, model) and health.allow(P, model)
    # A recovered model starts with a fresh window: old failures cannot re-open it at once.
    assert health.error_rate(P, model) == 0.0
    health.record(P, model, False, 40)
    assert health.state(P, model) == "CLOSED"


def test_failed_trial_reopens_for_a_full_period(health: ProviderHealth, clock: FakeClock) -> None:
    for _ in range(5):
        health.record(P, M, False, 50)
    clock.advance(30)
    assert health.allow(P, M)
    health.record(P, M, False, 50)
    assert health.state(P, M) == "OPEN"
    clock.advance(29)
    assert not health.allow(P, M)
    clock.advance(1)
    assert health.state(P, M) == "HALF_OPEN"


def test_half_open_slots_and_abandoned_trials(clock: FakeClock) -> None:
    health = ProviderHealth(half_open_max_calls=2, clock=clock)
    for _ in range(5):
        health.record(P, M, False, 50)
    clock.advance(30)
    assert health.allow(P, M) and health.allow(P, M)
    assert not health.allow(P, M)
    # Neither trial ever recorded (cancelled callers): their slots free up after open_seconds.
    clock.advance(30)
    assert health.state(P, M) == "HALF_OPEN"
    assert health.allow(P, M)


def test_error_rate_and_p95_over_the_window(health: ProviderHealth, clock: FakeClock) -> None:
    for i in range(1, 21):  # 10, 20, ... 200 ms
        health.record(P, M, i % 10 != 0, i * 10)
        clock.advance(1)
    assert health.calls(P, M) == 20
    assert health.error_rate(P, M) == pytest.approx(0.1)  # 100 ms and 200 ms failed
    assert health.p95_latency_ms(P, M) == 190  # nearest rank: the 19th of 20
    assert health.state(P, M) == "CLOSED"
    clock.advance(60 - 20 + 10.5)  # the first 11 calls (t=1000..1010) leave the 60 s window
    assert health.calls(P, M) == 9
    assert health.error_rate(P, M) == pytest.approx(1 / 9)
    assert health.p95_latency_ms(P, M) == 200
    clock.advance(60)
    assert (health.calls(P, M), health.error_rate(P, M)) == (0, 0.0)
    assert health.p95_latency_ms(P, M) is None


def test_old_failures_leave_the_window(health: ProviderHealth, clock: FakeClock) -> None:
    for ok in (False, False, False, False, True):  # 4 of 5 failed, but never 5 calls at a failure
        health.record(P, M, ok, 10)
    clock.advance(61)
    for ok in (True, True, True, False):
        health.record(P, M, ok, 10)
    # Counting the old calls would be 5 failures of 9 (open); the window holds 1 of 4.
    assert health.state(P, M) == "CLOSED"
    assert health.error_rate(P, M) == pytest.approx(0.25)


def test_snapshot(health: ProviderHealth) -> None:
    health.record("anthropic", "claude-haiku-5-5", True, 120)
    for _ in range(5):
        health.record(P, M, False, 300)
    assert health.snapshot() == [
        {
            "provider": "anthropic",
            "model": "claude-haiku-5-5",
            "state": "CLOSED",
            "error_rate": 0.0,
            "p95_latency_ms": 120,
            "calls": 1,
            "unavailable": None,
        },
        {
            "provider": P,
            "model": M,
            "state": "OPEN",
            "error_rate": 1.0,
            "p95_latency_ms": 300,
            "calls": 5,
            "unavailable": None,
        },
    ]


async def test_published_snapshots_are_merged(redis: aioredis.Redis) -> None:
    key = f"test:aihealth:{uuid.uuid4().hex}"
    one, two = ProviderHealth(), ProviderHealth()
    for _ in range(3):
        one.record(P, M, True, 100)
    one.record(P, M, False, 900)  # 1 failure in 4
    for _ in range(5):
        two.record(P, M, False, 50)  # open in worker two
    two.record("anthropic", "claude-opus-5-5", True, 70)
    two.mark_unavailable("anthropic", "claude-opus-5-5", "model_not_found")
    await publish_snapshot(redis, one, "w1", key=key)
    await publish_snapshot(redis, two, "w2", key=key)
    await redis.hset(key, "dead", json.dumps({"at": time.time() - 3600, "rows": []}))
    await redis.hset(key, "garbage", "{")
    rows = await read_snapshots(redis, key=key)
    assert rows == [
        {
            "provider": "anthropic",
            "model": "claude-opus-5-5",
            "state": "CLOSED",
            "error_rate": 0.0,
            "p95_latency_ms": 70.0,
            "calls": 1,
            "unavailable": "model_not_found",  # any worker refused it
        },
        {
            "provider": P,
            "model": M,
            "state": "OPEN",  # the worst state any worker sees
            "error_rate": pytest.approx(6 / 9),
            "p95_latency_ms": 900.0,
            "calls": 9,
            "unavailable": None,
        },
    ]
    assert sorted(await redis.hkeys(key)) == [b"w1", b"w2"]  # stale entries removed
    await redis.delete(key)


async def test_snapshots_without_redis_are_empty() -> None:
    down = aioredis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.5)
    await publish_snapshot(down, ProviderHealth(), "w1")  # logged, not raised
    assert await read_snapshots(down) == []
    await down.aclose()


def unavailable_gauge(model: str, reason: str) -> float | None:
    return REGISTRY.get_sample_value(
        "wfs_ai_model_unavailable", {"provider": P, "model": model, "reason": reason}
    )


def test_a_refused_model_is_unavailable_until_it_answers_or_the_mark_expires(
    clock: FakeClock,
) -> None:
    health = ProviderHealth(clock=clock, unavailable_seconds=600)
    model = f"retired-{uuid.uuid4().hex[:6]}"
    health.mark_unavailable(P, model, "model_not_found")
    assert (health.allow(P, model), health.unavailable(P, model)) == (False, "model_not_found")
    assert health.state(P, model) == "CLOSED"  # a fact about the model, not an outage
    assert unavailable_gauge(model, "model_not_found") == 1
    health.record(P, model, True, 5, probe=True)  # the model list answering says nothing
    assert health.unavailable(P, model) == "model_not_found"
    clock.advance(601)  # then one call may find out whether it came back
    assert health.allow(P, model) and health.unavailable(P, model) is None
    assert unavailable_gauge(model, "model_not_found") == 0
    health.mark_unavailable(P, model, "model_forbidden")
    health.record(P, model, True, 5)  # it answered: access was granted
    assert health.unavailable(P, model) is None
    assert unavailable_gauge(model, "model_forbidden") == 0
