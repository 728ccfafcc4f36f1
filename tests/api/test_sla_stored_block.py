"""A version's stored `sla` block that fails today's bounds (stored before a release tightened
them) is no target in SQL, as in Python (SlaSpec.stored): template_versions.sla is NULL for it
(migration 0026), so the open-run sweep records no breach, the recorder none at the run's end,
slaReport shows no target, and the SLA rollup's rows judged against the old target are
rebuilt by the refresh, and the cap on templates with targets does not count it
(docs/analytics.md, "SLAs")."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, text

from app.analytics.sla import SlaReportService
from app.analytics.sla_rollup_repository import SlaRollupRepository
from app.models import SlaBreach, SlaRollupTarget, Template, TemplateVersion
from app.settings import Settings
from app.sla.repository import SlaRepository
from app.sla.service import Notified, SlaMonitor
from app.sla.spec import SlaSpec
from app.sla_limits import MAX_DURATION_LIMIT, MAX_MIN_RUNS, MAX_WINDOW_SECONDS
from app.tenants.service import TenantService
from tests.api.test_sla import q, seed, window
from tests.api.test_sla_review import DURATION_ONLY, end, reported, tenant_id_of
from tests.api.test_sla_rollup import TARGETED, agree, hold_every_slot, rolled_up
from tests.api.test_sla_rollup import seed as seed_days
from tests.conftest import TenantKeys
from tests.support import GraphQLClient
from tests.workers.test_template_graph import pk, publish

# As a publish stores it (model_dump: every key), with a window under today's 300 s minimum.
STALE_BLOCK = {
    "max_duration_seconds": 60.0,
    "min_success_rate": None,
    "window_seconds": 10,
    "min_runs": 10,
}
DUMPED = json.dumps({**STALE_BLOCK, "window_seconds": 86400})
above = json.dumps(math.nextafter(MAX_DURATION_LIMIT, math.inf))
# JSON text of `sla` blocks (None: a spec without one), each bound just in and just out.
BLOCKS: list[str | None] = [
    None,
    "null",
    "{}",
    "5",
    '"x"',
    "[]",
    "[60]",
    DUMPED,
    '{"max_duration_seconds": 60}',
    '{"min_success_rate": 0.5}',
    '{"max_duration_seconds": null, "min_success_rate": null}',
    '{"window_seconds": 300, "min_runs": 1}',
    '{"max_duration_seconds": 60, "max_queue_seconds": 5}',
    f'{{"max_duration_seconds": {MAX_DURATION_LIMIT!r}}}',
    f'{{"max_duration_seconds": {above}}}',
    '{"max_duration_seconds": 0}',
    '{"max_duration_seconds": -1}',
    '{"max_duration_seconds": 1e-9}',
    '{"max_duration_seconds": 5e-324}',
    '{"max_duration_seconds": 1e-400}',
    '{"max_duration_seconds": 1e400}',
    '{"min_success_rate": 0}',
    '{"min_success_rate": 1}',
    f'{{"min_success_rate": {json.dumps(math.nextafter(1, 2))}}}',
    '{"min_success_rate": -1e-9}',
    '{"max_duration_seconds": 60, "window_seconds": 300}',
    '{"max_duration_seconds": 60, "window_seconds": 299}',
    f'{{"max_duration_seconds": 60, "window_seconds": {MAX_WINDOW_SECONDS}}}',
    f'{{"max_duration_seconds": 60, "window_seconds": {MAX_WINDOW_SECONDS + 1}}}',
    '{"max_duration_seconds": 60, "window_seconds": 300.0}',
    '{"max_duration_seconds": 60, "window_seconds": 300.5}',
    '{"max_duration_seconds": 60, "window_seconds": null}',
    '{"max_duration_seconds": 60, "min_runs": 1}',
    '{"max_duration_seconds": 60, "min_runs": 0}',
    f'{{"max_duration_seconds": 60, "min_runs": {MAX_MIN_RUNS}}}',
    f'{{"max_duration_seconds": 60, "min_runs": {MAX_MIN_RUNS + 1}}}',
    '{"max_duration_seconds": 60, "min_runs": 2.0}',
    '{"max_duration_seconds": 60, "min_runs": 1.5}',
    '{"max_duration_seconds": 60, "min_runs": null}',
    '{"max_duration_seconds": 60, "min_success_rate": 0.9, "window_seconds": 3600, "min_runs": 5}',
    '{"max_duration_seconds": {"value": 60}}',
]
# Not numbers: NULL in SQL. Python may coerce some ("60" and true to numbers), but a published
# block is a model_dump, which never holds a string or boolean there.
NOT_NUMBERS = [
    '{"max_duration_seconds": "60"}',
    '{"max_duration_seconds": true}',
    '{"min_success_rate": "0.5"}',
    '{"max_duration_seconds": 60, "window_seconds": "300"}',
    '{"max_duration_seconds": 60, "min_runs": true}',
    "true",
]


async def test_sql_finds_a_block_exactly_where_python_does(
    tenant: TenantKeys, sessions: Any
) -> None:
    """Every block written by SQL: template_versions.sla is the block when SlaSpec.stored
    (reading the spec as the application does) finds targets in it, else NULL."""
    async with sessions() as s:
        tenant_id = (await TenantService(s).get_by_name(tenant.name)).id
        template_id, version_id = uuid.uuid4(), uuid.uuid4()
        await s.execute(
            insert(Template).values(
                id=template_id,
                tenant_id=tenant_id,
                name=f"sla-blocks-{template_id.hex[:8]}",
                title="t",
                visibility="PRIVATE",
                latest_version=1,
            )
        )
        await s.execute(
            insert(TemplateVersion).values(
                id=version_id, template_id=template_id, version=1, spec={}
            )
        )

        async def stored(block: str | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
            spec = "{}" if block is None else f'{{"sla": {block}}}'
            await s.execute(
                text("UPDATE template_versions SET spec = CAST(:spec AS jsonb) WHERE id = :id"),
                {"spec": spec, "id": version_id},
            )
            row = (
                await s.execute(
                    select(TemplateVersion.spec, TemplateVersion.sla)
                    .where(TemplateVersion.id == version_id)
                    .execution_options(populate_existing=True)
                )
            ).one()
            return row[0], row[1]

        targets = 0
        for block in BLOCKS:
            spec, sla = await stored(block)
            python = SlaSpec.stored(spec.get("sla"))
            assert (sla is None) == (python is None), (block, sla, python)
            if sla is not None:
                assert sla == spec["sla"], block
                targets += 1
        assert targets == 15  # and 26 blocks without targets, both ways
        for block in NOT_NUMBERS:
            assert (await stored(block))[1] is None, block
        await s.rollback()


async def test_a_block_failing_todays_bounds_is_no_target_for_sweep_recorder_and_report(
    client: GraphQLClient, tenant: TenantKeys, sessions: Any
) -> None:
    """Before 0026, SQL read the block whatever else it held: the sweep recorded the open run
    as breaching (RUNNING) and slaReport judged runs against 60 s, while the recorder found
    no target."""
    name = await publish(sessions, tenant, DURATION_ONLY)
    tid = (await q(client, "Template", {"name": name}))["template"]["id"]
    async with sessions() as s:
        await s.execute(
            text(
                "UPDATE template_versions SET spec = jsonb_set(spec, '{sla}', "
                "CAST(:block AS jsonb)) WHERE template_id = :t"
            ),
            {"block": json.dumps(STALE_BLOCK), "t": uuid.UUID(pk(tid))},
        )
        await s.commit()
    _, ending = await seed(
        sessions, tenant, name, [("RUNNING", 3000, None), ("RUNNING", 3000, None)]
    )
    await seed(sessions, tenant, name, [("COMPLETED", 600, 500)])
    tenant_id = await tenant_id_of(sessions, tenant)

    # The sweep reads every tenant's open runs: only this tenant's breaches count here. The
    # server's own worker sweeps too, so the breaches table is checked as well.
    swept: list[Notified] = await SlaMonitor(sessions, None).sweep_open(datetime.now(UTC))
    assert [n for n in swept if n.tenant_id == tenant_id] == []
    assert await end(sessions, ending) == "COMPLETED"
    async with sessions() as s:
        found = await s.scalars(
            select(SlaBreach.execution_id).where(SlaBreach.tenant_id == tenant_id)
        )
        assert list(found) == []

    # slaReport: no target for it; asked for, it lists the runs and measures none.
    (entry,) = (await q(client, "SlaReport", {**window(2), "templateId": tid}))["slaReport"][
        "templates"
    ]
    assert entry["target"] is None
    assert (entry["runs"], entry["durationMeasured"], entry["durationBreached"]) == (3, 0, 0)
    assert entry["attainment"] is None and entry["breaches"]["edges"] == []
    assert tid not in await reported(client)  # no template with a target in force


async def test_the_rollup_rebuilds_rows_judged_against_a_block_no_longer_valid(
    tenant: TenantKeys, sessions: Any, settings: Settings
) -> None:
    """Rows rolled up while the block was read as a 60 s target become stale once it is no
    target (the recorded target differs from the one in force, NULL): read from the rows at
    once, rebuilt by the next refresh with no target."""
    name = await publish(sessions, tenant, TARGETED)
    async with sessions() as s:
        tenant_id = (await TenantService(s).get_by_name(tenant.name)).id
        template_id = await s.scalar(select(Template.id).where(Template.name == name))
    assert template_id is not None
    await hold_every_slot(sessions, tenant_id, name, settings)  # its queued runs stay queued
    await seed_days(sessions, tenant_id, name, range(1, 4))
    await rolled_up(sessions)
    now = datetime.now(UTC)
    since = now - timedelta(days=5)

    async def recorded() -> list[float | None]:
        async with sessions() as s:
            found = await s.scalars(
                select(SlaRollupTarget.target).where(SlaRollupTarget.template_id == template_id)
            )
            return list(found)

    async def stale() -> bool:
        async with sessions() as s:
            return (tenant_id, template_id) in await SlaRollupRepository(s).stale()

    assert await recorded() == [60] and not await stale()
    assert await agree(sessions, tenant_id, template_id, since, now) == 3

    async with sessions() as s:
        await s.execute(
            text(
                "UPDATE template_versions SET spec = jsonb_set(spec, '{sla,window_seconds}', "
                "'10') WHERE template_id = :t"
            ),
            {"t": template_id},
        )
        await s.commit()
    assert await stale()
    assert await agree(sessions, tenant_id, template_id, since, now) == 0  # all from the rows
    await rolled_up(sessions)
    assert await recorded() == [None] and not await stale()
    assert await agree(sessions, tenant_id, template_id, since, now) == 3
    async with sessions() as s:
        (found,) = await SlaReportService(s).report(tenant_id, since, now, template_id)
    assert found.target is None
    assert (found.stats.measured, found.stats.breached) == (0, 0) and found.stats.runs > 0


async def test_the_targets_cap_counts_no_block_failing_todays_bounds(
    tenant: TenantKeys, sessions: Any
) -> None:
    """The cap on templates with targets counts the tenant's templates whose latest version
    has a success-rate target: one the round does not evaluate (an invalid block) is not."""
    name = await publish(sessions, tenant, TARGETED)
    async with sessions() as s:
        tenant_id = (await TenantService(s).get_by_name(tenant.name)).id
        template_id = await s.scalar(select(Template.id).where(Template.name == name))

    async def counted() -> int:
        async with sessions() as s:
            return await SlaRepository(s).targets_of_tenant(tenant_id, excluding=uuid.uuid4())

    assert await counted() == 1
    async with sessions() as s:
        await s.execute(
            text(
                "UPDATE template_versions SET spec = jsonb_set(spec, '{sla,window_seconds}', "
                "'10') WHERE template_id = :t"
            ),
            {"t": template_id},
        )
        await s.commit()
    assert await counted() == 0
