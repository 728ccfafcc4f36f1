"""Forecasting daily totals: a linear trend with weekday factors, fitted in pure Python.

Both the month-end AI spend (`costForecast`) and the executions/day of capacity planning
(`capacityPlan`) are sums of daily totals that ramp and dip at weekends, so one model serves
both: expected(day) = (level + slope * t) * factor[weekday], t counting days from the first day
of history, the seven factors averaging 1. Fitted by alternating least squares: the trend by
ordinary least squares on the totals divided by their weekday factor, then each factor as the
ratio of that weekday's totals to its trend (a ratio of sums, so a day near zero cannot blow a
factor up), a few rounds until the factors settle. No numpy: seven factors and two
coefficients over at most a few hundred days are cheap in plain floats, and statsmodels' ETS
would bring scipy and pandas (tens of MB) for the same answer on this shape of data.

How much history decides the method (`ForecastMethod`): at least 28 days (four of each
weekday) for TREND_WEEKDAY; 14 for TREND (no weekday factors); 3 for DAILY_MEAN (flat); fewer
and there is no forecast. History is whole UTC days only; the caller decides where it starts.

The interval: a day's spread is read from the residuals twice, as an absolute spread (noise
that does not grow with the level) and as a spread relative to the fitted value (noise that
does); each future day takes the wider of the two, so a ramping series gets a wider interval
ahead than its quieter past, and a flat one is not penalised. The uncertainty of the fitted
trend itself is added (the usual OLS prediction variance, summed over the days with their
covariance), and the half-width is Student's t (df = days - parameters) at 95%. Days are
treated as independent; tests/analytics/test_forecasting.py measures the coverage this gives
on synthetic histories.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

MIN_WEEKDAY_DAYS = 28
MIN_TREND_DAYS = 14
MIN_MEAN_DAYS = 3
ROUNDS = 25
Z_975 = 1.959963984540054
_T_975_SMALL = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776}


class ForecastMethod(enum.Enum):
    TREND_WEEKDAY = "TREND_WEEKDAY"
    TREND = "TREND"
    DAILY_MEAN = "DAILY_MEAN"
    TOO_LITTLE_HISTORY = "TOO_LITTLE_HISTORY"


def method_for(days: int) -> ForecastMethod:
    if days >= MIN_WEEKDAY_DAYS:
        return ForecastMethod.TREND_WEEKDAY
    if days >= MIN_TREND_DAYS:
        return ForecastMethod.TREND
    if days >= MIN_MEAN_DAYS:
        return ForecastMethod.DAILY_MEAN
    return ForecastMethod.TOO_LITTLE_HISTORY


def t_quantile_975(df: int) -> float:
    """Student's t 97.5% quantile: a table for df <= 4, else the Cornish-Fisher expansion
    around the normal quantile (within 0.001 of the exact value from df 5 on)."""
    if df < 1:
        return math.inf
    if df in _T_975_SMALL:
        return _T_975_SMALL[df]
    z, v = Z_975, float(df)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
        + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * v**4)
    )


@dataclass(frozen=True)
class SumForecast:
    """A forecast sum of future days: expected value and a 95% interval (low >= 0)."""

    expected: float
    low: float
    high: float


@dataclass(frozen=True)
class DailyModel:
    """A fitted daily model; `expected(day)` for any day, `total(days)` for a sum of days."""

    method: ForecastMethod
    start: date  # day t = 0
    days: int  # history length
    level: float
    slope: float
    factors: tuple[float, ...]  # by date.weekday(), mean 1
    sigma_abs: float  # residual spread of a day, absolute
    sigma_rel: float  # residual spread relative to the fitted value
    t_mean: float
    sxx: float
    params: int

    def _t(self, day: date) -> int:
        return (day - self.start).days

    def expected(self, day: date) -> float:
        return max(0.0, (self.level + self.slope * self._t(day)) * self.factors[day.weekday()])

    def total(self, days: Sequence[tuple[date, float]]) -> SumForecast:
        """The sum over `days`, each (day, share of the day still to come, 0-1)."""
        expected = noise = spread_w = spread_tw = 0.0
        by_weekday = [0.0] * 7
        for day, share in days:
            value = self.expected(day) * share
            expected += value
            by_weekday[day.weekday()] += value
            day_sigma = max(self.sigma_abs, self.sigma_rel * self.expected(day))
            noise += day_sigma**2 * share
            weight = share * self.factors[day.weekday()]
            spread_w += weight
            spread_tw += weight * (self._t(day) - self.t_mean)
        fit = spread_w**2 / self.days
        if self.sxx > 0:
            fit += spread_tw**2 / self.sxx
        # A weekday factor is a mean over days/7 days: its relative error is shared by every
        # future day of that weekday.
        factor = 0.0
        if self.method is ForecastMethod.TREND_WEEKDAY:
            factor = sum(v**2 for v in by_weekday) * self.sigma_rel**2 / (self.days / 7)
        sd = math.sqrt(noise + self.sigma_abs**2 * fit + factor)
        half = t_quantile_975(self.days - self.params) * sd
        return SumForecast(expected, max(0.0, expected - half), expected + half)


def _ols(ts: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    n = len(ts)
    t_mean, y_mean = sum(ts) / n, sum(ys) / n
    sxx = sum((t - t_mean) ** 2 for t in ts)
    if sxx == 0:
        return y_mean, 0.0
    slope = sum((t - t_mean) * (y - y_mean) for t, y in zip(ts, ys, strict=True)) / sxx
    return y_mean - slope * t_mean, slope


def _weekday_factors(
    start: date, ys: Sequence[float], trend: Sequence[float]
) -> tuple[float, ...] | None:
    sums, bases = [0.0] * 7, [0.0] * 7
    for t, (y, base) in enumerate(zip(ys, trend, strict=True)):
        weekday = (start + timedelta(days=t)).weekday()
        sums[weekday] += y
        bases[weekday] += base
    if any(b <= 0 for b in bases):
        return None  # a trend at or below zero on a weekday: no meaningful ratio
    raw = [s / b for s, b in zip(sums, bases, strict=True)]
    mean = sum(raw) / 7
    if mean <= 0:
        return None
    return tuple(r / mean for r in raw)


def fit(start: date, totals: Sequence[float]) -> DailyModel | None:
    """The model of the daily `totals` from `start` on (whole days, oldest first), or None
    with fewer than MIN_MEAN_DAYS days."""
    method = method_for(len(totals))
    if method is ForecastMethod.TOO_LITTLE_HISTORY:
        return None
    n = len(totals)
    ts = [float(t) for t in range(n)]
    factors: tuple[float, ...] = (1.0,) * 7
    if method is ForecastMethod.DAILY_MEAN:
        level, slope, params = sum(totals) / n, 0.0, 1
    else:
        level, slope = _ols(ts, totals)
        params = 2
    if method is ForecastMethod.TREND_WEEKDAY:
        params = 8
        for _ in range(ROUNDS):
            fitted = [level + slope * t for t in ts]
            found = _weekday_factors(start, totals, fitted)
            if found is None:  # fall back to the plain trend
                method, factors, params = ForecastMethod.TREND, (1.0,) * 7, 2
                level, slope = _ols(ts, totals)
                break
            settled = max(abs(a - b) for a, b in zip(found, factors, strict=True)) < 1e-9
            factors = found
            # A weekday without any usage (weekends of a weekday-only tenant) has factor 0:
            # its days say nothing about the trend's level, so they are left out of its fit.
            used = [
                (t, y / f)
                for t, y in zip(ts, totals, strict=True)
                if (f := factors[(start + timedelta(days=int(t))).weekday()]) > 0
            ]
            level, slope = _ols([t for t, _ in used], [y for _, y in used])
            if settled:
                break
    fitted = [
        max(0.0, (level + slope * t) * factors[(start + timedelta(days=int(t))).weekday()])
        for t in ts
    ]
    residuals = [y - f for y, f in zip(totals, fitted, strict=True)]
    dof = max(1, n - params)
    sigma_abs = math.sqrt(sum(r * r for r in residuals) / dof)
    relative = [r / f for r, f in zip(residuals, fitted, strict=True) if f > 0]
    sigma_rel = math.sqrt(sum(r * r for r in relative) / max(1, len(relative) - params))
    t_mean = sum(ts) / n
    return DailyModel(
        method=method,
        start=start,
        days=n,
        level=level,
        slope=slope,
        factors=factors,
        sigma_abs=sigma_abs,
        sigma_rel=sigma_rel if relative else 0.0,
        t_mean=t_mean,
        sxx=sum((t - t_mean) ** 2 for t in ts) if params > 1 else 0.0,
        params=params,
    )
