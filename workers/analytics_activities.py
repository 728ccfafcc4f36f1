"""The analytics rollup activity: a thin edge that owns the session and commits, one
transaction per chunk of the refresh (RollupService.refresh), heartbeating while it works."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import structlog
from temporalio import activity

from app.analytics.rollup_repository import ROLLUP_CHUNK_DAYS
from app.analytics.service import RollupRefresh, RollupService
from app.analytics.workflow_io import ROLLUP_ACTIVITY, ROLLUP_BUDGET, RollupInput, RollupResult
from app.db import SessionFactory
from workers.heartbeat import Beats, beat_every, heartbeating

log = structlog.get_logger(__name__)


class AnalyticsActivities:
    def __init__(
        self,
        sessions: SessionFactory,
        budget: timedelta = ROLLUP_BUDGET,
        chunk_days: int = ROLLUP_CHUNK_DAYS,
    ) -> None:
        self.sessions = sessions
        self.budget = budget
        self.chunk_days = chunk_days

    def all(self) -> list[Callable[..., Awaitable[Any]]]:
        return [self.refresh_rollup]

    @activity.defn(name=ROLLUP_ACTIVITY)
    async def refresh_rollup(self, inp: RollupInput) -> RollupResult:
        """Refresh chunk by chunk, committing each, until caught up or the budget is used
        (a chunk is not started after it): a first fill or a catch-up after an outage keeps
        its progress through a timeout, a crash or the next scheduled run."""
        beats = Beats()
        return await heartbeating(self._chunks(beats), beat_every(activity.info()), beats)

    async def _chunks(self, beats: Beats) -> RollupResult:
        deadline = time.monotonic() + self.budget.total_seconds()
        result = RollupResult()
        while True:
            async with self.sessions() as session:
                done = await RollupService(session).refresh(self.chunk_days)
                await session.commit()
            self._log(done)
            if done.skipped:  # another worker's refresh holds the lock (it goes on)
                result.skipped = result.chunks == 0
                return result
            result.chunks += 1
            result.days += done.days
            result.rows += done.rows
            result.complete_until = done.complete_until.isoformat() if done.complete_until else None
            result.more = done.more
            beats(result.complete_until)
            if not done.more or time.monotonic() >= deadline:
                return result

    @staticmethod
    def _log(done: RollupRefresh) -> None:
        log.info(
            "analytics.rollup_refreshed",
            skipped=done.skipped,
            complete_until=done.complete_until.isoformat() if done.complete_until else None,
            more=done.more,
            days=done.days,
            rows=done.rows,
            estimates=done.estimates,
            estimates_kept=done.estimates_kept,
        )
