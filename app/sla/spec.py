"""The `sla` block of a template spec and of a tenant's override: one pydantic model, so a
version's targets and an admin's override are bounded and defaulted the same way."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# The bounds live in a leaf module (app.models builds template_versions.sla's SQL from them).
# Changing one needs a migration that regenerates template_versions.sla, like 0026: the
# stored column keeps the verdict of the bounds it was computed with (app/sla_limits.py).
from app.sla_limits import (
    DEFAULT_MIN_RUNS,
    DEFAULT_WINDOW_SECONDS,
    MAX_DURATION_LIMIT,
    MAX_MIN_RUNS,
    MAX_WINDOW_SECONDS,
    MIN_WINDOW_SECONDS,
)


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
