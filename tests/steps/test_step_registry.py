"""The registry contract the worker and template publishing rely on."""

from __future__ import annotations

import dataclasses

import pytest
from jsonschema import Draft202012Validator

from app.steps import STEP_ACTIVITIES, WORKFLOW_NATIVE, StepActivity, StepInputError
from app.steps import data as data_module
from tests.steps.conftest import MakeContext
from tests.steps.step_support import run_step

EXPECTED = {
    "data.transform", "data.aggregate", "data.parse", "data.map", "data.filter", "data.diff",
    "files.write", "files.read", "files.copy", "files.list", "files.delete", "files.archive",
    "http.request", "email.send", "wait.timer", "wait.event",
}  # fmt: skip


def test_every_standard_activity_is_registered_under_its_name() -> None:
    assert EXPECTED <= set(STEP_ACTIVITIES)
    assert WORKFLOW_NATIVE == frozenset({"wait.timer", "wait.event"})
    for name, activity in STEP_ACTIVITIES.items():
        assert isinstance(activity, StepActivity) and activity.name == name
        assert activity.description
        Draft202012Validator.check_schema(activity.input_schema)
        # Workflow-native steps and the AI steps (served by the AI queue's worker) have no run.
        assert (activity.run is None) == (name in WORKFLOW_NATIVE or name.startswith("ai."))
    assert STEP_ACTIVITIES["files.copy"].heartbeat_seconds
    assert STEP_ACTIVITIES["files.archive"].heartbeat_seconds


def test_step_activity_is_frozen_and_input_error_still_lives_in_data() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        STEP_ACTIVITIES["data.map"].name = "x"  # type: ignore[misc]
    assert data_module.StepInputError is StepInputError


async def test_run_reports_every_schema_problem_with_its_path(make_ctx: MakeContext) -> None:
    with pytest.raises(StepInputError) as info:
        await run_step(
            "data.filter",
            {"data": [{"a": 1}, 2], "where": [{"field": "a", "op": "between"}], "x": 1},
            make_ctx(),
        )
    message = str(info.value)
    assert message.startswith("invalid input for data.filter: ")
    for part in (
        "$: Additional properties are not allowed ('x' was unexpected)",
        "$.data[1]: 2 is not of type 'object'",
        "$.where[0].op: 'between' is not one of",
        "$.where[0]: 'value' is a required property",
    ):
        assert part in message


def test_native_inputs_are_described_for_template_checks() -> None:
    timer = Draft202012Validator(STEP_ACTIVITIES["wait.timer"].input_schema)
    assert timer.is_valid({"seconds": 2.5}) and not timer.is_valid({"seconds": -1})
    event = Draft202012Validator(STEP_ACTIVITIES["wait.event"].input_schema)
    assert event.is_valid({"event": "approved", "timeout_seconds": 60, "on_timeout": "continue"})
    assert not event.is_valid({"event": "approved", "timeout_seconds": 60, "on_timeout": "skip"})
