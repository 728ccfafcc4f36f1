"""The `sla` block of a template spec and of a tenant's override: one pydantic model, so a
version's targets and an admin's override are bounded and defaulted the same way."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# A run longer than this is not a service level any more, it is a batch job.
MAX_DURATION_LIMIT = 30 * 86400.0
# Windows between 5 minutes and 31 days: a shorter one judges a handful of runs, a longer one
# makes the evaluation's count scan months of executions every round.
MIN_WINDOW_SECONDS = 300
MAX_WINDOW_SECONDS = 31 * 86400
DEFAULT_WINDOW_SECONDS = 86400
DEFAULT_MIN_RUNS = 10
MAX_MIN_RUNS = 100_000


class SlaSpec(BaseModel):
    """Targets for a template's runs: a run takes at most `max_duration_seconds` from creation
    to its end (queued time counts: the caller waits through it), and of the runs created in
    the last `window_seconds` that finished COMPLETED or FAILED at least `min_success_rate`
    completed, judged once `min_runs` of them finished. At least one target."""

    model_config = ConfigDict(extra="forbid")

    max_duration_seconds: float | None = Field(None, gt=0, le=MAX_DURATION_LIMIT)
    min_success_rate: float | None = Field(None, ge=0, le=1)
    window_seconds: int = Field(
        DEFAULT_WINDOW_SECONDS, ge=MIN_WINDOW_SECONDS, le=MAX_WINDOW_SECONDS
    )
    min_runs: int = Field(DEFAULT_MIN_RUNS, ge=1, le=MAX_MIN_RUNS)

    @model_validator(mode="after")
    def _has_a_target(self) -> Self:
        if self.max_duration_seconds is None and self.min_success_rate is None:
            raise ValueError("an sla needs max_duration_seconds or min_success_rate (or both)")
        return self

    @classmethod
    def stored(cls, data: Any) -> SlaSpec | None:
        """The block as a published version stored it: None when absent, and None (no
        target) when it no longer passes, should a later release tighten the bounds. The
        recorder reads it while ending a run, which must never fail for an SLA's sake."""
        if not data:
            return None
        try:
            return cls.model_validate(data)
        except ValidationError:
            return None
