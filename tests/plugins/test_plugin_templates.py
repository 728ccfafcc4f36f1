"""Template checks and plans with the example plugin loaded: its steps validate against their
input schemas, run on the plugin's queue within its timeout (compensations too), and a tenant
without the plugin gets a clear refusal for its steps and AI tasks."""

from __future__ import annotations

from typing import Any

import pytest

from app.errors import ValidationFailed
from app.plugins.registry import activate
from app.settings import Settings
from app.steps.base import LIVENESS_HEARTBEAT_SECONDS
from app.templates.schemas import validate_spec
from app.tenants.plugin_access import PluginAccess

SPEC: dict[str, Any] = {
    "name": "plugin-plan",
    "title": "Plugin plan",
    "steps": [
        {
            "id": "stats",
            "activity": "example.word_stats",
            "input": {"text": "a b a"},
            "compensate": {"activity": "example.misbehave", "input": {"mode": "ok"}},
        },
        {
            "id": "tone",
            "activity": "ai.example.tone",
            "input": {"text": "{{ params.text }}"},
            "needs": [],
        },
        {
            "id": "note",
            "activity": "data.transform",
            "input": {"data": [{"a": 1}], "ops": []},
            "enhancements": [{"task": "example.tone", "fallback": "plain"}],
        },
    ],
}
NO_PLUGINS = PluginAccess(default=False)


@pytest.fixture(scope="module", autouse=True)
def example_loaded() -> None:
    registry = activate(Settings(_env_file=None))  # type: ignore[call-arg]
    assert "example" in registry.loaded, registry.refused


def test_a_plugin_step_runs_on_its_queue_within_its_timeout() -> None:
    plans = {
        p.id: p
        for p in validate_spec(SPEC).plan(
            default_timeout=300, default_attempts=3, ai_task_queue="ai"
        )
    }
    stats = plans["stats"]
    # The plugin's timeout (30 s) and the grace for its worker to report a timed-out call.
    assert (stats.task_queue, stats.timeout_seconds) == ("plugin-example", 35)
    assert stats.heartbeat_seconds == LIVENESS_HEARTBEAT_SECONDS
    assert stats.compensate is not None and stats.compensate.task_queue == "plugin-example"
    # A plugin compensation keeps the plugin's timeout (example.misbehave: 20 s, + 5 s grace)
    # and heartbeats like a step: a hung plugin worker is noticed, not waited for 300 s.
    assert (stats.compensate.timeout_seconds, stats.compensate.heartbeat_seconds) == (
        25,
        LIVENESS_HEARTBEAT_SECONDS,
    )
    assert plans["tone"].task_queue == "ai"  # a plugin's AI task runs on the AI queue
    assert plans["note"].task_queue is None
    # The template's own timeout wins over the plugin's default.
    own = {**SPEC, "steps": [{**SPEC["steps"][0], "timeout_seconds": 5}]}
    assert validate_spec(own).plan(default_timeout=300, default_attempts=3)[0].timeout_seconds == 5


def test_plugin_step_input_is_checked_against_its_schema() -> None:
    bad = {**SPEC, "steps": [{"id": "s", "activity": "example.word_stats", "input": {"txt": 1}}]}
    with pytest.raises(ValidationFailed) as refused:
        validate_spec(bad)
    messages = [(d["path"], d["message"]) for d in refused.value.details]
    assert ("$.steps[0].input", "'text' is a required property") in messages
    assert ("$.steps[0].input", "Additional properties are not allowed ('txt' was unexpected)") in (
        messages
    )


def test_a_tenant_without_the_plugin_is_told_which_plugin_it_lacks() -> None:
    with pytest.raises(ValidationFailed) as refused:
        validate_spec(SPEC, plugins=NO_PLUGINS)
    problems = {d["path"]: d["message"] for d in refused.value.details}
    lacks = "comes from the plugin 'example', which is not enabled for your tenant"
    assert lacks in problems["$.steps[0].activity"]
    assert lacks in problems["$.steps[1].activity"]
    assert lacks in problems["$.steps[2].enhancements[0].task"]
    assert validate_spec(SPEC, plugins=PluginAccess(default=False, switches={"example": True}))
