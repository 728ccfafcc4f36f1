"""What the analytics rollup workflow and its activity exchange (pure dataclasses, imported by
workflow code)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

ROLLUP_WORKFLOW = "AnalyticsRollupWorkflow"
ROLLUP_ACTIVITY = "analytics.refresh_rollup"
ROLLUP_SCHEDULE_ID = "analytics-rollup"
# One refresh activity: chunks (each committed) until caught up or ROLLUP_BUDGET is used (the
# next scheduled refresh goes on from there), well under its start-to-close timeout so the
# chunk started last still ends in time; it heartbeats while it runs (a dead worker's refresh
# is retried after ROLLUP_HEARTBEAT_TIMEOUT, not the whole timeout).
ROLLUP_TIMEOUT = timedelta(minutes=30)
ROLLUP_BUDGET = timedelta(minutes=20)
ROLLUP_HEARTBEAT_TIMEOUT = timedelta(minutes=2)


def rollup_schedule_id(task_queue: str) -> str:
    """One schedule per worker task queue: a worker started on another queue (a test's, a
    second deployment's) neither moves nor removes the main queue's schedule; two of them
    refreshing take turns (the refresh holds an advisory lock)."""
    return f"{ROLLUP_SCHEDULE_ID}-{task_queue}"


@dataclass
class RollupInput:
    pass


@dataclass
class RollupResult:
    skipped: bool = False
    complete_until: str | None = None  # ISO date
    days: int = 0
    rows: int = 0
    chunks: int = 0  # transactions committed
    more: bool = False  # days still missing when the budget ran out
