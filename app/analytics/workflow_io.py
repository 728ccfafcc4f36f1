"""What the analytics rollup workflow and its activity exchange (pure dataclasses, imported by
workflow code)."""

from __future__ import annotations

from dataclasses import dataclass

ROLLUP_WORKFLOW = "AnalyticsRollupWorkflow"
ROLLUP_ACTIVITY = "analytics.refresh_rollup"
ROLLUP_SCHEDULE_ID = "analytics-rollup"


@dataclass
class RollupInput:
    pass


@dataclass
class RollupResult:
    skipped: bool = False
    complete_until: str | None = None  # ISO date
    days: int = 0
    rows: int = 0
