"""Helpers shared by the step activity tests."""

from __future__ import annotations

from typing import Any

from app.steps import STEP_ACTIVITIES, StepContext


async def run_step(name: str, input: dict[str, Any], ctx: StepContext) -> Any:
    """Run a registered activity the way the worker does: through its `run`."""
    run = STEP_ACTIVITIES[name].run
    assert run is not None, f"{name} is workflow-native"
    return await run(input, ctx)
