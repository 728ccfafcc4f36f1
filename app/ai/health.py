"""Health of AI provider models: error rate and p95 latency over a sliding window, and a
circuit breaker per (provider, model).

State is in-process: each worker keeps its own view (and its own breaker gauge series), so one
worker may still try a model another has given up on. That is deliberate: no shared state to
fail, and every worker learns of an outage within a handful of its own calls.

Breaker: CLOSED -> OPEN when the window holds >= min_calls calls with error rate >=
failure_threshold, or after `consecutive_failures` failures in a row. OPEN -> HALF_OPEN after
open_seconds; HALF_OPEN lets half_open_max_calls trial calls through (allow() takes a slot),
then the first trial success closes it (with a fresh window) and a trial failure re-opens it.
Callers pair every allow() that returned True with one record().

A model can also be marked unavailable (mark_unavailable): the provider answered that it does
not know it (404: unknown or retired), that this key may not use it (403), or that it cannot
do the output format or a parameter the request asks for (a 400 about it: unsupported_output).
That is not an outage to ride out but a fact about the model, so no breaker arithmetic: allow()
refuses it at once, with the reason, for `unavailable_seconds` (then one call may try again, in
case the model came back or access was granted), and the wfs_ai_model_unavailable gauge says so.

So the API can show what the workers see, each worker publishes its snapshot() to a Redis hash
(publish_snapshot, e.g. every 15 s) and read_snapshots() merges the fresh ones.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from app.ai.metrics import set_breaker_state, set_model_unavailable

log = structlog.get_logger(__name__)

CLOSED, OPEN, HALF_OPEN = "CLOSED", "OPEN", "HALF_OPEN"
SNAPSHOTS_KEY = "wfs:aihealth"
SNAPSHOT_MAX_AGE_SECONDS = 60.0
MAX_SAMPLES = 10_000  # per model, bounds memory when a model is called very often


@dataclass
class _Call:
    at: float
    ok: bool
    latency_ms: float


@dataclass
class _Breaker:
    calls: deque[_Call] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))
    state: str = CLOSED
    opened_at: float = 0.0
    consecutive_failures: int = 0
    trials: list[float] = field(default_factory=list)  # start times of trial calls in flight


class ProviderHealth:
    """Sliding-window statistics and circuit breakers, keyed by (provider, model)."""

    def __init__(
        self,
        window_seconds: float = 60,
        failure_threshold: float = 0.5,
        min_calls: int = 5,
        open_seconds: float = 30,
        half_open_max_calls: int = 1,
        clock: Callable[[], float] = time.monotonic,
        *,
        consecutive_failures: int = 5,
        unavailable_seconds: float = 600,
    ) -> None:
        self.window_seconds = window_seconds
        self.failure_threshold = failure_threshold
        self.min_calls = min_calls
        self.open_seconds = open_seconds
        self.half_open_max_calls = half_open_max_calls
        self.consecutive_failures = consecutive_failures
        self.unavailable_seconds = unavailable_seconds
        self.clock = clock
        self._breakers: dict[tuple[str, str], _Breaker] = {}
        self._unavailable: dict[tuple[str, str], tuple[str, float]] = {}  # reason, since

    def mark_unavailable(self, provider: str, model: str, reason: str) -> None:
        """The provider refused this model itself (`reason`: model_not_found, model_forbidden,
        unsupported_output): allow() says no for unavailable_seconds. Stands in for record()
        after allow(): a half-open trial slot the call held is given back, and the breaker's
        figures stay."""
        key = (provider, model)
        breaker = self._breakers.get(key)
        if breaker is not None and breaker.trials:
            breaker.trials.pop(0)
        if key not in self._breakers:
            self._breakers[key] = _Breaker()
            set_breaker_state(provider, model, CLOSED)
        previous = self._unavailable.get(key)
        if previous is not None and previous[0] != reason:
            set_model_unavailable(provider, model, previous[0], False)
        self._unavailable[key] = (reason, self.clock())
        set_model_unavailable(provider, model, reason, True)
        if previous is None:
            log.warning("ai.model_unavailable", provider=provider, model=model, reason=reason)

    def unavailable(self, provider: str, model: str) -> str | None:
        """Why this model is marked unavailable now, or None."""
        key = (provider, model)
        marked = self._unavailable.get(key)
        if marked is None:
            return None
        if self.clock() - marked[1] >= self.unavailable_seconds:
            self._clear_unavailable(key)
            return None
        return marked[0]

    def _clear_unavailable(self, key: tuple[str, str]) -> None:
        marked = self._unavailable.pop(key, None)
        if marked is not None:
            set_model_unavailable(key[0], key[1], marked[0], False)

    def allow(self, provider: str, model: str) -> bool:
        """May a call go to this model now? In HALF_OPEN this takes a trial slot."""
        key = (provider, model)
        if self.unavailable(provider, model) is not None:
            return False
        breaker = self._breakers.get(key)
        if breaker is None:
            return True
        now = self.clock()
        self._advance(key, breaker, now)
        if breaker.state == CLOSED:
            return True
        if breaker.state == OPEN:
            return False
        # A trial that never recorded (cancelled caller) must not hold its slot forever.
        breaker.trials = [t for t in breaker.trials if now - t < self.open_seconds]
        if len(breaker.trials) < self.half_open_max_calls:
            breaker.trials.append(now)
            return True
        return False

    def record(
        self, provider: str, model: str, ok: bool, latency_ms: float, *, probe: bool = False
    ) -> None:
        """Record the outcome of one call (or health `probe`) of this model. A call that
        answered ends an unavailable mark; a probe (the provider's model list) cannot say."""
        key = (provider, model)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = _Breaker()
            set_breaker_state(provider, model, CLOSED)
        now = self.clock()
        if ok and not probe:  # it answered: whatever refused it before is over
            self._clear_unavailable(key)
        self._advance(key, breaker, now)
        breaker.calls.append(_Call(now, ok, latency_ms))
        breaker.consecutive_failures = 0 if ok else breaker.consecutive_failures + 1
        if breaker.state == HALF_OPEN:
            if ok:
                breaker.calls.clear()  # old failures must not re-open a recovered model
                self._set_state(key, breaker, CLOSED)
            else:
                self._open(key, breaker, now)
        elif breaker.state == CLOSED and not ok and self._should_open(breaker):
            self._open(key, breaker, now)
        # A result arriving while OPEN (a call started before it opened) only feeds the stats.

    def state(self, provider: str, model: str) -> str:
        """ "CLOSED", "OPEN" or "HALF_OPEN"."""
        key = (provider, model)
        breaker = self._breakers.get(key)
        if breaker is None:
            return CLOSED
        self._advance(key, breaker, self.clock())
        return breaker.state

    def error_rate(self, provider: str, model: str) -> float:
        """Failed share of the calls in the window; 0.0 without calls."""
        calls = self._window(provider, model)
        return sum(not c.ok for c in calls) / len(calls) if calls else 0.0

    def p95_latency_ms(self, provider: str, model: str) -> float | None:
        """95th percentile latency (nearest rank) of the calls in the window; None without calls."""
        calls = self._window(provider, model)
        if not calls:
            return None
        latencies = sorted(c.latency_ms for c in calls)
        return latencies[math.ceil(0.95 * len(latencies)) - 1]

    def calls(self, provider: str, model: str) -> int:
        return len(self._window(provider, model))

    def snapshot(self) -> list[dict[str, Any]]:
        """One dict per known model: provider, model, state, error_rate, p95_latency_ms, calls,
        unavailable (the reason, or None)."""
        return [
            {
                "provider": provider,
                "model": model,
                "state": self.state(provider, model),
                "error_rate": self.error_rate(provider, model),
                "p95_latency_ms": self.p95_latency_ms(provider, model),
                "calls": self.calls(provider, model),
                "unavailable": self.unavailable(provider, model),
            }
            for provider, model in sorted(self._breakers)
        ]

    def _window(self, provider: str, model: str) -> list[_Call]:
        breaker = self._breakers.get((provider, model))
        if breaker is None:
            return []
        self._prune(breaker, self.clock())
        return list(breaker.calls)

    def _prune(self, breaker: _Breaker, now: float) -> None:
        cutoff = now - self.window_seconds
        while breaker.calls and breaker.calls[0].at <= cutoff:
            breaker.calls.popleft()

    def _should_open(self, breaker: _Breaker) -> bool:
        if breaker.consecutive_failures >= self.consecutive_failures:
            return True
        self._prune(breaker, self.clock())
        total = len(breaker.calls)
        failures = sum(not c.ok for c in breaker.calls)
        return total >= self.min_calls and failures / total >= self.failure_threshold

    def _advance(self, key: tuple[str, str], breaker: _Breaker, now: float) -> None:
        if breaker.state == OPEN and now - breaker.opened_at >= self.open_seconds:
            breaker.trials = []
            self._set_state(key, breaker, HALF_OPEN)

    def _open(self, key: tuple[str, str], breaker: _Breaker, now: float) -> None:
        breaker.opened_at = now
        breaker.trials = []
        self._set_state(key, breaker, OPEN)

    def _set_state(self, key: tuple[str, str], breaker: _Breaker, state: str) -> None:
        breaker.state = state
        set_breaker_state(key[0], key[1], state)


async def publish_snapshot(
    redis: aioredis.Redis, health: ProviderHealth, worker_id: str, *, key: str = SNAPSHOTS_KEY
) -> None:
    """Publish this worker's snapshot (best effort: Redis trouble is logged, not raised)."""
    payload = json.dumps({"at": time.time(), "rows": health.snapshot()})
    try:
        await redis.hset(key, worker_id, payload)
    except (RedisError, OSError) as exc:
        log.warning("ai.health.publish_failed", error=str(exc))


async def read_snapshots(
    redis: aioredis.Redis,
    *,
    key: str = SNAPSHOTS_KEY,
    max_age_seconds: float = SNAPSHOT_MAX_AGE_SECONDS,
) -> list[dict[str, Any]]:
    """Merge the workers' fresh snapshots per (provider, model): calls summed, error rate
    weighted by calls, the highest p95 (0.0 when unknown) and the worst state. Stale or
    unreadable entries (dead workers) are deleted. [] when Redis is unreachable."""
    try:
        entries = await redis.hgetall(key)
    except (RedisError, OSError) as exc:
        log.warning("ai.health.read_failed", error=str(exc))
        return []
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    stale = []
    for worker, raw in entries.items():
        try:
            data = json.loads(raw)
            if time.time() - float(data["at"]) > max_age_seconds:
                raise ValueError("stale")
            for row in data["rows"]:
                _merge_row(merged, row)
        except (ValueError, KeyError, TypeError):
            stale.append(worker)
    if stale:
        try:
            await redis.hdel(key, *stale)
        except (RedisError, OSError) as exc:
            log.warning("ai.health.read_failed", error=str(exc))
    return [merged[k] for k in sorted(merged)]


_RANK = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


def _merge_row(merged: dict[tuple[str, str], dict[str, Any]], row: dict[str, Any]) -> None:
    calls, error_rate, state = int(row["calls"]), float(row["error_rate"]), str(row["state"])
    p95 = float(row["p95_latency_ms"] or 0.0)
    item = merged.setdefault(
        (str(row["provider"]), str(row["model"])),
        {
            "provider": row["provider"],
            "model": row["model"],
            "state": CLOSED,
            "error_rate": 0.0,
            "p95_latency_ms": 0.0,
            "calls": 0,
            "unavailable": None,
        },
    )
    if row.get("unavailable"):  # any worker that was refused the model says so
        item["unavailable"] = str(row["unavailable"])
    failures = item["error_rate"] * item["calls"] + error_rate * calls
    item["calls"] += calls
    item["error_rate"] = failures / item["calls"] if item["calls"] else 0.0
    item["p95_latency_ms"] = max(item["p95_latency_ms"], p95)
    if _RANK.get(state, 0) > _RANK[item["state"]]:
        item["state"] = state
