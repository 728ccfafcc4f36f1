"""Liveness heartbeats for activities.

Every step activity heartbeats at least every `LIVENESS_HEARTBEAT_SECONDS` (10 s) while it
runs, and the workflow schedules it with a heartbeat timeout of three times its interval, so
when a worker dies mid-step Temporal retries the step on another worker within ~30 s instead of
after the step's whole start-to-close timeout (300 s by default). Temporal's SDK sends
heartbeats at most every 0.8 x the timeout (24 s), so a worker's event loop may stall for ~6 s
without a live step timing out; CPU-bound steps run in a thread so it does not. A step that
heartbeats with progress details of its own keeps them: the liveness beat repeats the latest
details.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import structlog
from temporalio import activity

from app.steps.base import LIVENESS_HEARTBEAT_SECONDS

T = TypeVar("T")
log = structlog.get_logger(__name__)
CANCEL_GRACE_SECONDS = 5.0  # how long a cancelled step may take to unwind before we return


def beat_every(info: activity.Info, default: float = LIVENESS_HEARTBEAT_SECONDS) -> float:
    """The pace for this attempt: a third of the heartbeat timeout it was scheduled with
    (executions planned with another interval keep theirs), else the liveness default."""
    timeout = info.heartbeat_timeout
    return timeout.total_seconds() / 3 if timeout else default


class Beats:
    """The activity's heartbeat function for step code, remembering the latest details."""

    def __init__(self) -> None:
        self.details: tuple[Any, ...] = ()

    def __call__(self, *details: Any) -> None:
        self.details = details
        activity.heartbeat(*details)


async def heartbeating(work: Awaitable[T], every: float, beats: Beats | None = None) -> T:
    """Await `work`, heartbeating every `every` seconds until it is done; cancelling the
    activity cancels `work` too."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result()
            activity.heartbeat(*(beats.details if beats else ()))
    finally:
        if not task.done():  # the activity was cancelled: let the step code unwind first
            task.cancel()
            await asyncio.wait({task}, timeout=CANCEL_GRACE_SECONDS)
            if not task.done():
                log.warning(
                    "activity.step_ignores_cancellation", grace_seconds=CANCEL_GRACE_SECONDS
                )
            elif not task.cancelled() and task.exception() is not None:
                log.info("activity.step_failed_while_cancelled", error=str(task.exception()))
