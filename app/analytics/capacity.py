"""Capacity planning for the platform operator: executions/day forecast against the capacity
the deployment has shown, and the day it runs out.

Measured capacity, defined: the most executions (every tenant's) that finished within one
clock hour (UTC) in the last PEAK_DAYS, with the workers polling the workflow task queue now.
That is demonstrated throughput, not a limit found by load: if the busiest hour was not
saturated, the real capacity is higher and the answer errs early (the safe side). Load is not
spread evenly over a day, so the hourly figure becomes a daily one through the share of a
day's executions that its busiest hour takes (the median of that share over the days of the
same PEAK_DAYS with at least SHARE_MIN_EXECUTIONS executions, all days if none has):
dailyCapacity = peakHourlyCompletions / peakHourShare, the daily total at which the busiest
hour would need more than was ever completed in an hour.

The executions/day forecast uses the same model as the cost forecast
(app/analytics/forecasting.py) on executions created per UTC day over the last HISTORY_DAYS:
28 days, the least that gives weekday factors, because every day read is every tenant's
executions of that day (at 1M executions over 90 days, 56 days took ~300 ms to read here,
28 days ~70 ms).
`runsOutOn` is the first day within the horizon whose expected executions pass dailyCapacity;
null when the forecast stays below it (or nothing is measured yet). Worker counts at the time
of the peak are not recorded, so adding workers does not move the figure until a busier hour
has been seen: `workers` is reported beside it to read it by.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.forecast import day_start, history_series
from app.analytics.forecasting import ForecastMethod, fit, method_for
from app.analytics.planning_repository import PeakHour, PlanningRepository
from app.errors import ValidationFailed
from app.tenants.service import PlatformPrincipal

HISTORY_DAYS = 28  # = PEAK_DAYS: one month of every tenant's rows per request
PEAK_DAYS = 28
SHARE_MIN_EXECUTIONS = 24
MAX_HORIZON_DAYS = 365


@dataclass(frozen=True)
class DayForecast:
    day: date
    expected: float
    low: float
    high: float


@dataclass(frozen=True)
class CapacityReport:
    as_of: datetime
    workers: int | None
    peak: PeakHour | None
    peak_hour_share: float | None
    daily_capacity: float | None
    method: ForecastMethod
    history_days: int
    forecast: list[DayForecast]
    runs_out_on: date | None


def checked_horizon(days: int) -> int:
    if not 1 <= days <= MAX_HORIZON_DAYS:
        raise ValidationFailed(
            f"horizonDays must be 1-{MAX_HORIZON_DAYS}, not {days}",
            details=[{"path": "$.horizonDays", "message": f"not in 1-{MAX_HORIZON_DAYS}"}],
        )
    return days


class CapacityService:
    def __init__(self, session: AsyncSession) -> None:
        self.repo = PlanningRepository(session)

    async def plan(
        self, _: PlatformPrincipal, as_of: datetime, workers: int | None, horizon_days: int
    ) -> CapacityReport:
        """The plan at `as_of`, with the current worker count (None: Temporal not asked)."""
        horizon_days = checked_horizon(horizon_days)
        as_of = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
        today = as_of.date()
        days = await self.repo.execution_days(
            day_start(today - timedelta(days=HISTORY_DAYS)), day_start(today)
        )
        recent = [d for d in days if d.day >= today - timedelta(days=PEAK_DAYS)]
        busy = [d for d in recent if d.executions >= SHARE_MIN_EXECUTIONS] or recent
        share = statistics.median(d.busiest_hour / d.executions for d in busy) if busy else None
        peak = await self.repo.peak_completion_hour(as_of - timedelta(days=PEAK_DAYS), as_of)
        capacity = peak.completions / share if peak is not None and share else None

        first = days[0].day if days else today
        history = history_series({d.day: d.executions for d in days}, first, today)
        model = fit(first, history)
        forecast: list[DayForecast] = []
        runs_out_on = None
        if model is not None:
            for i in range(horizon_days):
                day = today + timedelta(days=i)
                one = model.total([(day, 1.0)])
                forecast.append(DayForecast(day, one.expected, one.low, one.high))
                if runs_out_on is None and capacity is not None and one.expected > capacity:
                    runs_out_on = day
        return CapacityReport(
            as_of=as_of,
            workers=workers,
            peak=peak,
            peak_hour_share=share,
            daily_capacity=capacity,
            method=method_for(len(history)) if model is None else model.method,
            history_days=len(history),
            forecast=forecast,
            runs_out_on=runs_out_on,
        )
