"""What the analytics rollup workflow and its activity exchange (pure dataclasses, imported by
workflow code)."""

from __future__ import annotations

from dataclasses import dataclass

ROLLUP_WORKFLOW = "AnalyticsRollupWorkflow"
ROLLUP_ACTIVITY = "analytics.refresh_rollup"
ROLLUP_SCHEDULE_ID = "analytics-rollup"


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
