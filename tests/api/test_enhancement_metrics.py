"""wfs_enhancement_points_total: Recorder.record counts each STEP_ENHANCED event it stores
by the point's task, decision and reason ("?" for a missing one), and not its idempotent
replays (a retried record_event activity)."""

from __future__ import annotations

import uuid
from typing import Any

from prometheus_client import REGISTRY

from app.executions.recorder import Recorder
from app.executions.workflow_io import EventRecord
from app.models import Execution
from app.templates.service import TemplateService
from app.tenants.service import TenantService
from tests.conftest import make_tenant


async def new_execution(sessions: Any) -> uuid.UUID:
    """A RUNNING execution row of user-onboarding, without a workflow behind it."""
    keys = await make_tenant(sessions, "premium")
    async with sessions() as session:
        tenant = await TenantService(session).get_by_name(keys.name)
        templates = TemplateService(session)
        template = await templates.resolve(tenant.id, template_id=None, name="user-onboarding")
        version, _ = await templates.latest_version(template)
        execution = Execution(
            tenant_id=tenant.id,
            template_id=template.id,
            template_version_id=version.id,
            params={},
            status="RUNNING",
            workflow_id=f"metrics-{uuid.uuid4()}",
        )
        session.add(execution)
        await session.commit()
        return execution.id


async def record(sessions: Any, rec: EventRecord) -> None:
    async with sessions() as session:
        recorder = Recorder(session)
        await recorder.record(rec)
        await recorder.commit()


def points(task: str, decision: str, reason: str) -> float:
    labels = {"task": task, "decision": decision, "reason": reason}
    return REGISTRY.get_sample_value("wfs_enhancement_points_total", labels) or 0.0


async def test_step_enhanced_events_are_counted_once_by_task_decision_and_reason(
    sessions: Any,
) -> None:
    execution_id = str(await new_execution(sessions))
    task = f"task-{uuid.uuid4().hex[:8]}"  # a label value only this test uses
    decided = EventRecord(
        execution_id,
        "step:welcome:enhancement:0",
        "STEP_ENHANCED",
        "RUNNING",
        0.5,
        step_id="welcome",
        payload={"enhancement": {"task": task, "decision": "BASELINE", "reason": "TIER"}},
    )
    await record(sessions, decided)
    await record(sessions, decided)  # the same key again: an idempotent replay
    assert points(task, "BASELINE", "TIER") == 1

    partial = EventRecord(
        execution_id,
        "step:welcome:enhancement:1",
        "STEP_ENHANCED",
        "RUNNING",
        0.5,
        step_id="welcome",
        payload={"enhancement": {"task": task}},
    )
    await record(sessions, partial)
    assert points(task, "?", "?") == 1
