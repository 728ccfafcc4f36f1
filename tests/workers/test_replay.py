"""Recorded histories of the standard templates replay against today's workflow code, so a
change that breaks determinism fails the build. Changes to workflow logic go behind
`workflow.patched(...)`; see docs/templates.md. Re-record with `WFS_RECORD_HISTORIES=1`
after deleting tests/histories/*.json (only for changes that are compatible by design)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from app.templates.standard import STANDARD_TEMPLATES
from workers.main import PASSTHROUGH
from workers.workflows import ForEachBatchWorkflow, TemplateWorkflow

HISTORIES = Path(__file__).resolve().parents[1] / "histories"


def test_every_standard_template_has_a_recorded_history() -> None:
    """`<template>.json` from the standard-template tests (free tenant, an earlier version of
    several templates: still replayed, as running executions would be); `<template>.free` and
    `<template>.premium` from the enhancement tests (every point BASELINE, every point AI)."""
    stems = {p.stem for p in HISTORIES.glob("*.json")}
    names = {t["name"] for t in STANDARD_TEMPLATES}
    assert {s.split(".")[0] for s in stems} == names
    assert names <= stems
    enhanced = names - {"order-summary"}
    assert {f"{n}.{tier}" for n in enhanced for tier in ("free", "premium")} <= stems
    # `<template>.local`: recorded after transitions moved to local activities (local-records).
    assert {f"{n}.local" for n in names} <= stems


def test_the_other_workflow_paths_have_recorded_histories() -> None:
    """custom/: paths no standard template takes with its example params: a fan-out in child
    workflows (with progress events), steps refusing AI output (single and per item), a
    fan-out that fails with its points recorded, and a failure run back by compensations
    (recorded before compensations had a heartbeat timeout)."""
    assert {p.stem for p in (HISTORIES / "custom").glob("*.json")} >= {
        "fan-out-children",
        "refused-ai-single",
        "refused-ai-for-each",
        "fan-out-failed",
        "saga-compensated",
    }


@pytest.mark.parametrize(
    "path",
    sorted(HISTORIES.rglob("*.json")),
    ids=lambda p: str(p.relative_to(HISTORIES).with_suffix("")),
)
async def test_history_replays(path: Path) -> None:
    await assert_replays(path.read_text())  # noqa: ASYNC240


async def assert_replays(text: str) -> None:
    """Replay a recorded history (JSON) with today's workflow code; fail on non-determinism."""
    # The workflow id as recorded (child workflow ids derive from it): exec-<execution id>,
    # from the RunInput the execution started with.
    started = WorkflowHistory.from_json("", text).events[0]
    payload = started.workflow_execution_started_event_attributes.input.payloads[0]
    history = WorkflowHistory.from_json(f"exec-{json.loads(payload.data)['execution_id']}", text)
    replayer = Replayer(
        workflows=[TemplateWorkflow, ForEachBatchWorkflow],
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
        ),
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
