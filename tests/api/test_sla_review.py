"""Regressions of the SLA review (docs/analytics.md, "SLAs"):
- slaReport shows only templates the caller can read now: a revoked share (or a template gone
  PRIVATE) takes the template, its versions' specs and the tenant's override away;
- the sweep never judges a run a recorder is ending (it locks the run's row first, SKIP
  LOCKED: the recorder's lock order), and nothing of an SLA fails a terminal event (a stored
  override that no longer validates is no target; a failing breach insert is rolled back alone
  and counted);
- one worker runs the round at a time (advisory try-lock), and a tenant's SLA targets are
  capped."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy import func, insert, select, text

from app.executions.recorder import Recorder
from app.executions.workflow_io import EventRecord
from app.models import Execution, Notification, SlaBreach, Template, TemplateSla
from app.sla.service import MAX_TARGETS_PER_TENANT, Notified, SlaMonitor
from app.tenants.service import TenantService
from tests.api.test_sla import REPORTED, q, seed, window
from tests.conftest import TenantKeys, make_tenant
from tests.support import GraphQLClient
from tests.templates.template_kit import create, make_spec, unique_name
from tests.templates.template_kit import publish as publish_draft
from tests.workers.test_template_graph import publish

NODE = """query($id: ID!) { node(id: $id) { id } }"""
REPORT = """query($from: DateTime!, $to: DateTime!) { slaReport(from: $from, to: $to) {
  templates { template { id name versions { version spec } } runs target { source } } } }"""
DURATION_ONLY = {**REPORTED, "sla": {"max_duration_seconds": 60}}


async def reported(who: GraphQLClient) -> dict[str, Any]:
    """Template id -> its report entry, over the last 24 hours."""
    data = await who.data(REPORT, window(24))
    return {t["template"]["id"]: t for t in data["slaReport"]["templates"]}


async def overrides_of(sessions: Any, tenant_id: uuid.UUID) -> int:
    async with sessions() as s:
        found = await s.scalar(
            select(func.count()).select_from(TemplateSla).where(TemplateSla.tenant_id == tenant_id)
        )
        return int(found or 0)


async def tenant_id_of(sessions: Any, tenant: TenantKeys) -> uuid.UUID:
    async with sessions() as s:
        return (await TenantService(s).get_by_name(tenant.name)).id


async def test_revoked_or_private_template_leaves_the_sla_report(
    client: GraphQLClient, server: str, tenant: TenantKeys, sessions: Any
) -> None:
    name = await publish(sessions, tenant, {**REPORTED, "description": "secret v1"})
    tid = (await q(client, "Template", {"name": name}))["template"]["id"]
    other = await make_tenant(sessions, "pro")
    b = GraphQLClient(server, other.admin)
    b_id = await tenant_id_of(sessions, other)
    await seed(sessions, other, name, [("COMPLETED", 600, 5), ("FAILED", 500, 5)])
    share = {"templateId": tid, "tenantNames": [other.name], "revoke": False}
    override = {"templateId": tid, "input": {"maxDurationSeconds": 60}}

    # Shared: B reads T, sets its own targets, and its report shows T.
    assert (await q(client, "ShareTemplate", {"input": share}))["shareTemplate"]["__typename"] == (
        "Template"
    )
    assert (await q(b, "SetTemplateSla", override))["setTemplateSla"]["__typename"] == "TemplateSla"
    seen = await reported(b)
    assert seen[tid]["runs"] == 2 and seen[tid]["target"]["source"] == "OVERRIDE"
    await q(client, "SetTemplateSla", {**override, "input": {"minSuccessRate": 0.5}})

    # Revoked: T is gone from B's report (with its versions' specs), and so is B's override;
    # A's own report and override are untouched.
    await q(client, "ShareTemplate", {"input": {**share, "revoke": True}})
    assert (await b.data(NODE, {"id": tid}))["node"] is None
    assert tid not in await reported(b)
    assert "secret v1" not in str(await b.data(REPORT, window(24)))
    assert await overrides_of(sessions, b_id) == 0
    mine = await reported(client)
    assert mine[tid]["target"]["source"] == "OVERRIDE" and mine[tid]["runs"] == 0

    # Shared again, then PRIVATE (which revokes every share): the same.
    await q(client, "ShareTemplate", {"input": share})
    assert (await q(b, "SetTemplateSla", override))["setTemplateSla"]["__typename"] == "TemplateSla"
    assert tid in await reported(b)
    visibility = {"input": {"templateId": tid, "visibility": "PRIVATE"}}
    answer = await q(client, "SetTemplateVisibility", visibility)
    assert answer["setTemplateVisibility"]["visibility"] == "PRIVATE"
    assert tid not in await reported(b)
    assert await overrides_of(sessions, b_id) == 0
    assert (await reported(client))[tid]["target"]["source"] == "OVERRIDE"


async def notifications(sessions: Any, execution_id: uuid.UUID) -> list[tuple[str, Any]]:
    async with sessions() as s:
        rows = await s.execute(
            select(Notification.type, Notification.data)
            .where(Notification.execution_id == execution_id)
            .order_by(Notification.seq)
        )
        return [(t, d) for t, d in rows]


async def end(sessions: Any, execution_id: uuid.UUID) -> str:
    async with sessions() as session:
        recorder = Recorder(session)
        await recorder.record(
            EventRecord(str(execution_id), "end", "COMPLETED", "COMPLETED", 100.0)
        )
        await recorder.commit()
        row = await session.get(Execution, execution_id, populate_existing=True)
        assert row is not None
        return row.status


def failures(where: str) -> float:
    return REGISTRY.get_sample_value("wfs_sla_failures_total", {"where": where}) or 0.0


async def test_sweep_skips_a_run_being_ended_and_sla_never_fails_a_terminal_event(
    tenant: TenantKeys, sessions: Any
) -> None:
    name = await publish(sessions, tenant, DURATION_ONLY)
    (racing,) = await seed(sessions, tenant, name, [("RUNNING", 3000, None)])
    tenant_id = await tenant_id_of(sessions, tenant)
    monitor = SlaMonitor(sessions, None)

    async def swept() -> list[Notified]:
        # The sweep reads every tenant's open runs: other tests' runs past their targets
        # in the same database are judged too (CI once saw 13); only this tenant's count.
        found = await monitor.sweep_open(datetime.now(UTC))
        return [n for n in found if n.tenant_id == tenant_id]

    # A recorder holds the run's row while it ends it: the sweep skips it (before: it
    # recorded a RUNNING breach, and in the reverse lock order the two could deadlock).
    async with sessions() as session:
        recorder = Recorder(session)
        await recorder.record(EventRecord(str(racing), "end", "COMPLETED", "COMPLETED", 100.0))
        assert await swept() == []
        assert racing not in await _breached(sessions)
        await recorder.commit()
    kinds = [(t, d.get("kind"), d.get("status")) for t, d in await notifications(sessions, racing)]
    assert kinds == [
        ("SLA_BREACH", "DURATION", "COMPLETED"),
        ("EXECUTION_COMPLETED", None, "COMPLETED"),
    ]
    assert racing in await _breached(sessions)
    assert await swept() == []  # ended: never again

    # A stored override that no longer validates (a window under today's minimum) is no
    # target: the run ends, nothing is judged (before: the terminal event failed).
    async with sessions() as s:
        template_id = await s.scalar(select(Template.id).where(Template.name == name))
        await s.execute(
            insert(TemplateSla).values(
                tenant_id=tenant_id,
                template_id=template_id,
                min_success_rate=0.5,
                window_seconds=10,
                min_runs=1,
                updated_at=func.now(),
            )
        )
        await s.commit()
    (overridden,) = await seed(sessions, tenant, name, [("RUNNING", 3000, None)])
    before = failures("recorder")
    assert await end(sessions, overridden) == "COMPLETED"
    assert [t for t, _ in await notifications(sessions, overridden)] == ["EXECUTION_COMPLETED"]
    assert overridden not in await _breached(sessions)
    assert failures("recorder") == before  # no target is not a failure

    # A breach insert that fails (here: a trigger refusing this run's row) is rolled back
    # alone: the run ends, with its notification, and the failure is counted.
    async with sessions() as s:
        await s.execute(
            text("DELETE FROM template_slas WHERE template_id = :t"), {"t": template_id}
        )
        await s.commit()
    (failing,) = await seed(sessions, tenant, name, [("RUNNING", 3000, None)])
    async with sessions() as s:
        await s.execute(
            text(
                "CREATE FUNCTION sla_review_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN IF NEW.execution_id = '{failing}' THEN RAISE EXCEPTION 'refused'; "
                "END IF; RETURN NEW; END $$"
            )
        )
        await s.execute(
            text(
                "CREATE TRIGGER sla_review_refuse BEFORE INSERT ON sla_breaches "
                "FOR EACH ROW EXECUTE FUNCTION sla_review_refuse()"
            )
        )
        await s.commit()
    try:
        assert await end(sessions, failing) == "COMPLETED"
    finally:
        async with sessions() as s:
            await s.execute(text("DROP TRIGGER sla_review_refuse ON sla_breaches"))
            await s.execute(text("DROP FUNCTION sla_review_refuse()"))
            await s.commit()
    assert failures("recorder") - before == 1
    assert "EXECUTION_COMPLETED" in [t for t, _ in await notifications(sessions, failing)]
    assert failing not in await _breached(sessions)


async def _breached(sessions: Any) -> list[uuid.UUID]:
    async with sessions() as s:
        return list(
            await s.scalars(select(SlaBreach.execution_id).where(SlaBreach.kind == "DURATION"))
        )


async def test_one_worker_runs_the_round_and_targets_are_capped(
    client: GraphQLClient, server: str, tenant: TenantKeys, sessions: Any
) -> None:
    name = await publish(sessions, tenant, DURATION_ONLY)
    (open_run,) = await seed(sessions, tenant, name, [("RUNNING", 3000, None)])
    monitor = SlaMonitor(sessions, None)

    # Another worker's round holds the lock: this one is skipped (and records nothing).
    async with sessions() as holder:
        await holder.execute(text("SELECT pg_advisory_xact_lock(hashtext('sla:round'))"))
        assert await monitor.run_round() == []
        assert open_run not in await _breached(sessions)
    await monitor.run_round(wait=True)  # this worker's (or the server's worker's) round
    assert open_run in await _breached(sessions)

    # The cap: MAX_TARGETS_PER_TENANT templates with targets the round evaluates.
    tid = (await q(client, "Template", {"name": name}))["template"]["id"]
    tenant_id = await tenant_id_of(sessions, tenant)
    filler = [uuid.uuid4() for _ in range(MAX_TARGETS_PER_TENANT)]
    async with sessions() as s:
        await s.execute(
            insert(Template).values(
                [
                    {
                        "id": t,
                        "tenant_id": tenant_id,
                        "name": f"cap-{t.hex[:10]}",
                        "title": "t",
                        "visibility": "PRIVATE",
                        "latest_version": 0,
                    }
                    for t in filler
                ]
            )
        )
        await s.execute(
            insert(TemplateSla).values(
                [
                    {
                        "tenant_id": tenant_id,
                        "template_id": t,
                        "min_success_rate": 0.5,
                        "window_seconds": 3600,
                        "min_runs": 1,
                        "updated_at": func.now(),
                    }
                    for t in filler
                ]
            )
        )
        await s.commit()
    target = {"templateId": tid, "input": {"minSuccessRate": 0.9}}
    refused = (await q(client, "SetTemplateSla", target))["setTemplateSla"]
    assert refused["code"] == "VALIDATION_FAILED"
    assert f"at most {MAX_TARGETS_PER_TENANT} templates" in refused["message"]
    # Publishing a version with a rate target is refused the same way; another tenant's
    # templates are not affected (its own count).
    draft = make_spec(unique_name("sla-capped"), sla={"min_success_rate": 0.5})
    created = await create(client, draft)
    answer = await publish_draft(client, created["id"])
    assert answer["__typename"] == "ValidationError", answer
    assert answer["problems"][0]["path"] == "$.sla"
    other = GraphQLClient(server, (await make_tenant(sessions, "pro")).admin)
    theirs = await create(
        other, make_spec(unique_name("sla-capped"), sla={"min_success_rate": 0.5})
    )
    assert (await publish_draft(other, theirs["id"]))["latestVersion"] == 1
    # One cleared: room for one more.
    async with sessions() as s:
        await s.execute(text("DELETE FROM template_slas WHERE template_id = :t"), {"t": filler[0]})
        await s.commit()
    allowed = (await q(client, "SetTemplateSla", target))["setTemplateSla"]
    assert allowed["__typename"] == "TemplateSla", allowed
