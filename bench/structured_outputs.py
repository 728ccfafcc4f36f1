"""Invalid-output rate with JSON mode and with structured outputs, on the task fixtures.

Each input of tests/ai/test_tasks.py SAMPLES (every task's paths) is answered by a model that
drifts the way free-form JSON replies do: the right answer, and the same answer with a key
renamed, a number sent as a string, an enum value in other words (categories, entity types),
the answer wrapped in another object, prose around it, a text past the task's limit, and a
reply cut off mid-JSON. The providers run through the real SDKs against the fake LLM server:
with OPENAI_OUTPUT_MODE=json_object (JSON mode: the reply arrives as written) and with
json_schema (the fake decodes under the task's reply schema, as a structured-output model does:
fake_llm.sample.constrain). Each reply goes through the task's own validation; a reply that
fails is what the gateway would retry and then answer with the baseline (INVALID_OUTPUT).

What this measures is which of those drifts the schema takes away, not a real model's drift
rate (which no offline run can know): schema-expressible ones (names, types, enums, shape) go,
the task's other rules (length, sentences, entities that occur in the text, send times in the
window) stay.

    .venv/bin/python -m bench.structured_outputs
"""

from __future__ import annotations

import asyncio
import json
import platform
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

from app.ai.contracts import InvalidOutput, ProviderError
from app.ai.fake_llm import FakeLLM, FakeLLMServer, LLMRequest
from app.ai.providers import AnthropicProvider, OpenAIProvider
from app.ai.tasks import TASK_SPECS
from app.ai_catalog import default_catalog
from tests.ai.test_tasks import SAMPLES

SYNONYMS = {"category": "label", "summary": "abstract", "text": "content", "entities": "items"}


def _rename(answer: dict[str, Any]) -> Any:
    key = next(iter(answer))
    return {SYNONYMS.get(key, key + "_value"): answer[key], **dict(list(answer.items())[1:])}


def _stringify_numbers(answer: dict[str, Any]) -> Any:
    return {k: str(v) if isinstance(v, int | float) else v for k, v in answer.items()}


def _reword_enums(answer: dict[str, Any]) -> Any:
    changed = dict(answer)
    if isinstance(changed.get("category"), str):
        changed["category"] = changed["category"] + " issue"
    if isinstance(changed.get("entities"), list):
        changed["entities"] = [
            {**e, "type": str(e.get("type", "")) + "s"} for e in changed["entities"]
        ]
    return changed


def _too_long(answer: dict[str, Any]) -> Any:
    return {k: v * 40 if isinstance(v, str) else v for k, v in answer.items()}


# name -> how the model's reply text differs from the right answer
DRIFTS: dict[str, Callable[[dict[str, Any]], str]] = {
    "none": json.dumps,
    "renamed key": lambda a: json.dumps(_rename(a)),
    "number as string": lambda a: json.dumps(_stringify_numbers(a)),
    "enum reworded": lambda a: json.dumps(_reword_enums(a)),
    "wrapped": lambda a: json.dumps({"result": a}),
    "prose around": lambda a: f"Here you go:\n```json\n{json.dumps(a)}\n```",
    "too long": lambda a: json.dumps(_too_long(a)),
    "cut off": lambda a: json.dumps(a)[: max(1, len(json.dumps(a)) // 2)],
}


def right_answer(task: str, data: dict[str, Any]) -> dict[str, Any]:
    answer = TASK_SPECS[task].baseline(data)
    if task == "classify_content":
        answer = {"category": answer["category"], "confidence": 0.9}
    return answer


class DriftingModel:
    """The fake's responder: the right answer for the current sample, drifted."""

    def __init__(self) -> None:
        self.reply = ""

    def __call__(self, request: LLMRequest) -> str:
        return self.reply


async def measure(provider_name: str, mode: str) -> tuple[int, Counter[str], Counter[str]]:
    """(replies, invalid ones by drift, invalid ones by task) for one provider and mode."""
    model = DriftingModel()
    with FakeLLMServer(FakeLLM(responder=model)) as server:
        provider: OpenAIProvider | AnthropicProvider
        if provider_name == "openai":
            provider = OpenAIProvider(
                "k",
                server.openai_base_url,
                max_retries=0,
                output_mode="json_schema" if mode == "schema" else "json_object",
                catalog=default_catalog(),
            )
            name = "gpt-6-luna"
        else:
            provider = AnthropicProvider(
                "k",
                server.anthropic_base_url,
                max_retries=0,
                output_mode="json_schema" if mode == "schema" else "text",
            )
            name = "claude-haiku-5-5"
        replies, by_drift, by_task = 0, Counter[str](), Counter[str]()
        for task, data in SAMPLES:
            spec = TASK_SPECS[task]
            for drift, write in DRIFTS.items():
                model.reply = write(right_answer(task, data))
                replies += 1
                try:
                    result = await provider.complete(name, spec, data, timeout=10)
                    spec.validate(data, result.output)
                except (InvalidOutput, ProviderError):
                    by_drift[drift] += 1
                    by_task[task] += 1
        await provider.aclose()
    return replies, by_drift, by_task


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f}%"


async def main() -> int:
    print(f"# structured outputs, {platform.node()}, Python {sys.version.split()[0]}")
    print(f"# {len(SAMPLES)} task fixtures x {len(DRIFTS)} replies each ({', '.join(DRIFTS)})")
    rows = {}
    for provider in ("openai", "anthropic"):
        for mode in ("json", "schema"):
            rows[(provider, mode)] = await measure(provider, mode)
    print()
    print(f"{'provider':<10} {'mode':<24} {'replies':>8} {'invalid':>8} {'rate':>7}")
    for (provider, mode), (replies, by_drift, _) in rows.items():
        label = {"json": "JSON mode", "schema": "structured (json_schema)"}[mode]
        invalid = sum(by_drift.values())
        print(f"{provider:<10} {label:<24} {replies:>8} {invalid:>8} {pct(invalid, replies):>7}")
    print()
    print(f"{'drift':<18} " + " ".join(f"{p + '/' + m:>18}" for p, m in rows))
    per_drift = len(SAMPLES)
    for drift in DRIFTS:
        cells = " ".join(f"{pct(r[1][drift], per_drift):>18}" for r in rows.values())
        print(f"{drift:<18} {cells}")
    print()
    tasks = sorted({t for t, _ in SAMPLES})
    print(f"{'task':<20} " + " ".join(f"{p + '/' + m:>18}" for p, m in rows))
    for task in tasks:
        count = sum(1 for t, _ in SAMPLES if t == task) * len(DRIFTS)
        cells = " ".join(f"{pct(r[2][task], count):>18}" for r in rows.values())
        print(f"{task:<20} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
