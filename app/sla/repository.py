"""All SQL of SLA targets and breaches (app/sla). The report's SQL is analytics'
(app/analytics/sla_repository.py).

Which targets apply: a tenant's override (template_slas) replaces the `sla` block of the version
a run ran whole; `max_duration_in_force` is that rule in SQL, shared with the report."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    and_,
    case,
    cast,
    delete,
    exists,
    func,
    null,
    or_,
    select,
    text,
    union,
)
from sqlalchemy import update as sql_update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Execution, SlaBreach, Template, TemplateSla, TemplateVersion
from app.models.states import OPEN, Status
from app.sla_limits import MAX_DURATION_LIMIT, MAX_MIN_RUNS, MAX_WINDOW_SECONDS, MIN_WINDOW_SECONDS

# states.holds_slot as SQL, qualified (joined tables have a `status` too) and with literals, so
# PostgreSQL proves the partial index ix_executions_started usable in every plan.
_OPEN_SQL = ", ".join(f"'{s.value}'" for s in sorted(OPEN))
OPEN_RUN = text(
    f"(executions.status IN ({_OPEN_SQL}) OR "
    f"(executions.status = '{Status.PENDING.value}' AND executions.run_id IS NOT NULL))"
)


def _between(column: Any, low: float, high: float) -> ColumnElement[bool]:
    return and_(column >= low, column <= high)


def override_valid() -> ColumnElement[bool]:
    """The outer-joined TemplateSla still passes SlaSpec's bounds (override_spec in
    app/sla/service.py): one that no longer does counts as no target at all, in SQL as in
    Python (it still replaces the version's block, as the admin asked)."""
    o = TemplateSla
    return and_(
        or_(
            o.max_duration_seconds.is_(None),
            and_(o.max_duration_seconds > 0, o.max_duration_seconds <= MAX_DURATION_LIMIT),
        ),
        or_(o.min_success_rate.is_(None), _between(o.min_success_rate, 0, 1)),
        _between(o.window_seconds, MIN_WINDOW_SECONDS, MAX_WINDOW_SECONDS),
        _between(o.min_runs, 1, MAX_MIN_RUNS),
        or_(o.max_duration_seconds.is_not(None), o.min_success_rate.is_not(None)),
    )


def max_duration_in_force() -> ColumnElement[Any]:
    """A run's duration target in seconds (NULL: none): its tenant's override for the template
    when there is one (outer-joined as TemplateSla; NULL when it no longer validates), else
    its version's `sla` block (joined as TemplateVersion)."""
    return case(
        (
            TemplateSla.tenant_id.is_not(None),
            case((override_valid(), TemplateSla.max_duration_seconds), else_=null()),
        ),
        else_=cast(TemplateVersion.sla["max_duration_seconds"].astext, Float),
    )


def join_targets(query: Any) -> Any:
    """`query` over Execution with the version and the tenant's override joined."""
    return query.join(
        TemplateVersion, TemplateVersion.id == Execution.template_version_id
    ).outerjoin(
        TemplateSla,
        and_(
            TemplateSla.tenant_id == Execution.tenant_id,
            TemplateSla.template_id == Execution.template_id,
        ),
    )


@dataclass(frozen=True)
class OpenPastTarget:
    execution_id: uuid.UUID
    tenant_id: uuid.UUID
    template_id: uuid.UUID
    created_at: datetime
    target: float
    overridden: bool


class SlaRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- targets ---------------------------------------------------------------------------

    async def targets_of_run(
        self, tenant_id: uuid.UUID, template_id: uuid.UUID, version_id: uuid.UUID
    ) -> tuple[TemplateSla | None, dict[str, Any] | None]:
        """The tenant's override of the template and the version's `sla` block; one query."""
        query = (
            select(TemplateSla, TemplateVersion.sla)
            .select_from(TemplateVersion)
            .outerjoin(
                TemplateSla,
                and_(TemplateSla.tenant_id == tenant_id, TemplateSla.template_id == template_id),
            )
            .where(TemplateVersion.id == version_id)
        )
        row = (await self.session.execute(query)).first()
        return (row[0], row[1]) if row is not None else (None, None)

    async def latest_version_slas(
        self, template_ids: list[uuid.UUID] | None = None
    ) -> dict[uuid.UUID, dict[str, Any]]:
        """template id -> the `sla` block of its latest version, for templates that have one
        (all of them, or those of `template_ids`); found through ix_template_versions_sla."""
        query = (
            select(TemplateVersion.template_id, TemplateVersion.sla)
            .join(Template, Template.id == TemplateVersion.template_id)
            .where(
                TemplateVersion.sla.is_not(None),
                TemplateVersion.version == Template.latest_version,
            )
        )
        if template_ids is not None:
            query = query.where(TemplateVersion.template_id.in_(template_ids))
        return {tid: sla for tid, sla in await self.session.execute(query)}

    async def override(self, tenant_id: uuid.UUID, template_id: uuid.UUID) -> TemplateSla | None:
        return await self.session.get(TemplateSla, (tenant_id, template_id))

    async def overrides(self, tenant_id: uuid.UUID | None = None) -> list[TemplateSla]:
        """Every tenant's overrides (the SLA round), or one tenant's."""
        query = select(TemplateSla)
        if tenant_id is not None:
            query = query.where(TemplateSla.tenant_id == tenant_id)
        return list(await self.session.scalars(query))

    async def put_override(self, values: dict[str, Any]) -> TemplateSla:
        statement = (
            insert(TemplateSla)
            .values(**values)
            .on_conflict_do_update(
                index_elements=["tenant_id", "template_id"],
                set_={k: v for k, v in values.items() if k not in ("tenant_id", "template_id")},
            )
            .returning(TemplateSla)
        )
        row = await self.session.scalar(statement, execution_options={"populate_existing": True})
        assert row is not None
        return row

    async def delete_override(self, tenant_id: uuid.UUID, template_id: uuid.UUID) -> bool:
        result = await self.session.execute(
            delete(TemplateSla).where(
                TemplateSla.tenant_id == tenant_id, TemplateSla.template_id == template_id
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # --- breaches ----------------------------------------------------------------------------

    async def add_breach(self, **values: Any) -> int | None:
        """Insert a breach unless its twin exists (the same execution's DURATION, or the open
        SUCCESS_RATE of the tenant and template): its id, or None when nothing was inserted."""
        statement = (
            insert(SlaBreach).values(**values).on_conflict_do_nothing().returning(SlaBreach.id)
        )
        return await self.session.scalar(statement)

    async def open_rate_breaches(self) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """(tenant, template) of every open SUCCESS_RATE breach."""
        query = select(SlaBreach.tenant_id, SlaBreach.template_id).where(
            SlaBreach.kind == "SUCCESS_RATE", SlaBreach.ended_at.is_(None)
        )
        return [(t, p) for t, p in await self.session.execute(query)]

    async def close_rate_breach(
        self, tenant_id: uuid.UUID, template_id: uuid.UUID, at: datetime
    ) -> bool:
        result = await self.session.execute(
            sql_update(SlaBreach)
            .where(
                SlaBreach.tenant_id == tenant_id,
                SlaBreach.template_id == template_id,
                SlaBreach.kind == "SUCCESS_RATE",
                SlaBreach.ended_at.is_(None),
            )
            .values(ended_at=at)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def rate_breaches(
        self,
        tenant_id: uuid.UUID,
        template_id: uuid.UUID,
        since: datetime,
        until: datetime,
        limit: int,
    ) -> list[SlaBreach]:
        """SUCCESS_RATE breaches of the tenant and template that overlap [since, until),
        newest first."""
        query = (
            select(SlaBreach)
            .where(
                SlaBreach.tenant_id == tenant_id,
                SlaBreach.template_id == template_id,
                SlaBreach.kind == "SUCCESS_RATE",
                SlaBreach.started_at < until,
                (SlaBreach.ended_at.is_(None)) | (SlaBreach.ended_at >= since),
            )
            .order_by(SlaBreach.started_at.desc())
            .limit(limit)
        )
        return list(await self.session.scalars(query))

    # --- what the evaluation reads ------------------------------------------------------------

    async def outcomes(
        self, targets: list[tuple[uuid.UUID, uuid.UUID | None, datetime]]
    ) -> list[tuple[uuid.UUID, uuid.UUID, int, int]]:
        """(template, tenant, completed, failed) of the runs of each target's template created
        since its `since` (of its tenant only when one is given), per template and tenant: one
        query, an OR of ranges of ix_executions_template_created. A template appears once in
        `targets` (the caller groups version targets and overrides apart)."""
        if not targets:
            return []
        arms = [
            and_(
                Execution.template_id == template_id,
                Execution.created_at >= since,
                *([Execution.tenant_id == tenant_id] if tenant_id is not None else []),
            )
            for template_id, tenant_id, since in targets
        ]
        completed = func.count().filter(Execution.status == Status.COMPLETED.value)
        failed = func.count().filter(Execution.status == Status.FAILED.value)
        query = (
            select(Execution.template_id, Execution.tenant_id, completed, failed)
            .where(or_(*arms))
            .group_by(Execution.template_id, Execution.tenant_id)
        )
        return [(p, t, int(c), int(f)) for p, t, c, f in await self.session.execute(query)]

    async def take_round_lock(self, *, wait: bool) -> bool:
        """The SLA round's advisory lock, until this transaction ends: False when another
        session holds it (try-lock), unless `wait`."""
        if wait:
            await self.session.execute(text("SELECT pg_advisory_xact_lock(hashtext('sla:round'))"))
            return True
        got = await self.session.scalar(
            text("SELECT pg_try_advisory_xact_lock(hashtext('sla:round'))")
        )
        return bool(got)

    async def lock_open_run(self, execution_id: uuid.UUID) -> bool:
        """Lock a run's row (FOR NO KEY UPDATE, as the recorder does) if it is still open and
        no one holds it (SKIP LOCKED: a recorder ending it judges its duration itself)."""
        found = await self.session.scalar(
            select(Execution.id)
            .where(Execution.id == execution_id, OPEN_RUN)
            .with_for_update(key_share=True, skip_locked=True)
        )
        return found is not None

    async def targets_of_tenant(self, tenant_id: uuid.UUID, *, excluding: uuid.UUID) -> int:
        """Templates (other than `excluding`) the tenant has SLA targets on that the round
        evaluates: its own whose latest version has a success-rate target, and its
        overrides. Takes the tenant's SLA-targets lock until the transaction ends first, so
        two concurrent additions cannot both pass the cap."""
        await self.session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
            {"key": f"sla-targets:{tenant_id}"},
        )
        own = (
            select(TemplateVersion.template_id)
            .join(Template, Template.id == TemplateVersion.template_id)
            .where(
                Template.tenant_id == tenant_id,
                TemplateVersion.version == Template.latest_version,
                TemplateVersion.sla["min_success_rate"].astext.is_not(None),
                TemplateVersion.template_id != excluding,
            )
        )
        overridden = select(TemplateSla.template_id).where(
            TemplateSla.tenant_id == tenant_id, TemplateSla.template_id != excluding
        )
        both = union(own, overridden).subquery()
        return int(await self.session.scalar(select(func.count()).select_from(both)) or 0)

    async def open_past_target(self, now: datetime, limit: int) -> list[OpenPastTarget]:
        """Runs still open (holding a slot) longer than their duration target and not yet
        recorded as breaching, oldest first: the partial index ix_executions_started."""
        target = max_duration_in_force()
        already = exists().where(
            SlaBreach.execution_id == Execution.id, SlaBreach.kind == "DURATION"
        )
        query = join_targets(
            select(
                Execution.id,
                Execution.tenant_id,
                Execution.template_id,
                Execution.created_at,
                target.label("target"),
                TemplateSla.tenant_id.is_not(None).label("overridden"),
            )
        ).where(
            OPEN_RUN,
            target.is_not(None),
            Execution.created_at < now - func.make_interval(0, 0, 0, 0, 0, 0, target),
            ~already,
        )
        query = query.order_by(Execution.created_at).limit(limit)
        return [OpenPastTarget(*row) for row in await self.session.execute(query)]
