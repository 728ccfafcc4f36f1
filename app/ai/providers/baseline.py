"""The baseline provider: the task's deterministic non-AI result, free and always healthy."""

from __future__ import annotations

import time
from typing import Any

from app.ai.contracts import ProviderResult, TaskSpec


class BaselineProvider:
    """contracts.Provider that answers with `task.baseline(input)` and no tokens."""

    name = "baseline"
    model = "baseline"

    async def complete(
        self, model: str, task: TaskSpec, input: dict[str, Any], *, timeout: float
    ) -> ProviderResult:
        started = time.monotonic()
        output = task.baseline(input)
        return ProviderResult(
            output=output,
            input_tokens=0,
            output_tokens=0,
            latency_ms=int((time.monotonic() - started) * 1000),
        )

    async def probe(self, model: str, *, timeout: float) -> bool:
        return True

    async def list_models(self, *, timeout: float) -> set[str]:
        return {self.model}
