"""The analytics rollup activity: a thin edge that owns the session and commits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from temporalio import activity

from app.analytics.service import RollupService
from app.analytics.workflow_io import ROLLUP_ACTIVITY, RollupInput, RollupResult
from app.db import SessionFactory

log = structlog.get_logger(__name__)


class AnalyticsActivities:
    def __init__(self, sessions: SessionFactory) -> None:
        self.sessions = sessions

    def all(self) -> list[Callable[..., Awaitable[Any]]]:
        return [self.refresh_rollup]

    @activity.defn(name=ROLLUP_ACTIVITY)
    async def refresh_rollup(self, inp: RollupInput) -> RollupResult:
        async with self.sessions() as session:
            done = await RollupService(session).refresh()
            await session.commit()
        until = done.complete_until.isoformat() if done.complete_until else None
        log.info(
            "analytics.rollup_refreshed",
            skipped=done.skipped,
            days=done.days,
            rows=done.rows,
            estimates=done.estimates,
            estimates_kept=done.estimates_kept,
        )
        return RollupResult(done.skipped, until, done.days, done.rows)
