"""The daily model (app/analytics/forecasting.py) backtested on synthetic histories with known
answers: a linear ramp times a weekday pattern plus seeded noise, fitted on the first part and
scored on the sum of the days after. Hundreds of seeds per case, so the bounds speak of the
method, not of one lucky draw; pure Python, no database (the end-to-end path through
PostgreSQL is tests/analytics/test_forecast_backtest.py).

Stated bounds (measured: see docs/analytics.md, "How good the forecast is"):
- with 8 weeks of history, 20 days ahead, 8% noise: median error under 4%, 95th percentile
  under 10%, and the 95% interval covers the true sum at least 88% of the time;
- the interval of every method covers at least 88%.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from datetime import date, timedelta

import pytest

from app.analytics.forecasting import ForecastMethod, fit, method_for, t_quantile_975

WEEK = (1.15, 1.2, 1.15, 1.1, 1.0, 0.7, 0.7)  # Monday first: busy weekdays, quiet weekends
SEEDS = 300


@dataclass(frozen=True)
class Case:
    history: int
    ahead: int = 20
    base: float = 20.0
    slope: float = 0.4  # per day: the ramp
    noise: float = 0.08  # relative to the day's expected value
    relative_noise: bool = True
    week: tuple[float, ...] = WEEK


def synthetic(case: Case, seed: int) -> tuple[date, list[float], list[float]]:
    """(first day, observed totals, expected totals) for history + ahead days."""
    rng = random.Random(seed)
    start = date(2025, 1, 6) + timedelta(days=rng.randrange(7))
    mean_week = sum(case.week) / 7
    observed, expected = [], []
    for t in range(case.history + case.ahead):
        mu = (case.base + case.slope * t) * case.week[(start + timedelta(days=t)).weekday()]
        mu /= mean_week
        sd = case.noise * (mu if case.relative_noise else case.base)
        expected.append(mu)
        observed.append(max(0.0, mu + rng.gauss(0, sd)))
    return start, observed, expected


def backtest(case: Case) -> tuple[ForecastMethod, list[float], float]:
    """(method, relative errors of the forecast sum, share of intervals covering the truth)."""
    errors, covered, method = [], 0, None
    for seed in range(SEEDS):
        start, observed, _ = synthetic(case, seed)
        model = fit(start, observed[: case.history])
        assert model is not None
        method = model.method
        days = [(start + timedelta(days=case.history + j), 1.0) for j in range(case.ahead)]
        forecast = model.total(days)
        truth = sum(observed[case.history :])
        errors.append(abs(forecast.expected - truth) / truth)
        covered += forecast.low <= truth <= forecast.high
    assert method is not None
    return method, sorted(errors), covered / SEEDS


@pytest.mark.parametrize(
    ("case", "method", "median_bound", "p95_bound"),
    [
        (Case(history=56), ForecastMethod.TREND_WEEKDAY, 0.04, 0.10),
        (Case(history=56, relative_noise=False), ForecastMethod.TREND_WEEKDAY, 0.03, 0.06),
        (Case(history=30, ahead=28), ForecastMethod.TREND_WEEKDAY, 0.05, 0.14),
        (Case(history=56, slope=0.0), ForecastMethod.TREND_WEEKDAY, 0.04, 0.10),
        # A weekday-only tenant: nothing at weekends (factor 0).
        (Case(history=56, week=(1, 1, 1, 1, 1, 0, 0)), ForecastMethod.TREND_WEEKDAY, 0.04, 0.10),
        # Too few days for weekday factors: the pattern stays in the error, the interval wide.
        (Case(history=20), ForecastMethod.TREND, 0.12, 0.30),
        (Case(history=8, slope=0.0), ForecastMethod.DAILY_MEAN, 0.06, 0.15),
    ],
    ids=[
        "ramp-weekday",
        "additive-noise",
        "short-month",
        "flat",
        "weekdays-only",
        "trend-only",
        "mean-only",
    ],
)
def test_backtest_error_and_coverage(
    case: Case, method: ForecastMethod, median_bound: float, p95_bound: float
) -> None:
    found, errors, coverage = backtest(case)
    assert found is method
    median, p95 = statistics.median(errors), errors[int(0.95 * len(errors))]
    assert median < median_bound and p95 < p95_bound, (median, p95)
    assert coverage >= 0.88, coverage


def test_noise_free_history_is_recovered_exactly() -> None:
    start, _, expected = synthetic(Case(history=35, noise=0.0), seed=1)
    model = fit(start, expected[:35])
    assert model is not None and model.method is ForecastMethod.TREND_WEEKDAY
    for t in range(35, 55):
        assert model.expected(start + timedelta(days=t)) == pytest.approx(expected[t], rel=1e-6)
    ahead = model.total([(start + timedelta(days=t), 1.0) for t in range(35, 55)])
    assert ahead.expected == pytest.approx(sum(expected[35:55]), rel=1e-6)
    assert ahead.high - ahead.low == pytest.approx(0, abs=1e-6)


def test_partial_days_and_method_by_history_length() -> None:
    start = date(2025, 3, 3)
    model = fit(start, [10.0] * 7)
    assert model is not None and model.method is ForecastMethod.DAILY_MEAN
    half = model.total([(start + timedelta(days=7), 0.5), (start + timedelta(days=8), 1.0)])
    assert half.expected == pytest.approx(15.0)
    assert fit(start, [1.0, 2.0]) is None
    lengths = {0: "TOO_LITTLE_HISTORY", 3: "DAILY_MEAN", 14: "TREND", 28: "TREND_WEEKDAY"}
    assert {n: method_for(n).value for n in lengths} == lengths
    # A tenant that stopped: the trend falls below zero, the forecast is zero.
    stopped = fit(start, [5.0, 4.0, 3.0, 2.0, 1.0] + [0.0] * 25)
    assert stopped is not None
    ahead = stopped.total([(start + timedelta(days=30 + i), 1.0) for i in range(10)])
    assert ahead.expected == 0.0 and ahead.low == 0.0
    # An all-zero history (a tenant whose AI is off) forecasts zero, with no interval.
    zero = fit(start, [0.0] * 40)
    assert zero is not None
    nothing = zero.total([(start + timedelta(days=40 + i), 1.0) for i in range(10)])
    assert (nothing.expected, nothing.low, nothing.high) == (0.0, 0.0, 0.0)


def test_t_quantiles() -> None:
    # Student's t 97.5% quantiles from tables.
    for df, exact in [(1, 12.706), (5, 2.571), (10, 2.228), (20, 2.086), (48, 2.011)]:
        assert t_quantile_975(df) == pytest.approx(exact, abs=2e-3)
