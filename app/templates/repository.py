"""SQL for templates, their versions, shares, acceptances and the platform's review queue.
Visibility rules are expressed here as filters (app/templates/catalog.py says what they mean)."""

from __future__ import annotations

import uuid
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
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Execution, Template, TemplateSla, TemplateVersion, Tenant
from app.models.template import TemplateAcceptance, TemplateShare
from app.templates.search import SearchCursor, TemplateFilter


def shared_with(tenant_id: uuid.UUID | ColumnElement[uuid.UUID]) -> ColumnElement[bool]:
    return exists().where(
        TemplateShare.template_id == Template.id, TemplateShare.tenant_id == tenant_id
    )


def visible_to(tenant_id: uuid.UUID | ColumnElement[uuid.UUID]) -> ColumnElement[bool]:
    """Own templates (drafts too); the platform's once published; others' SHARED ones shared
    with the tenant once published; others' PUBLIC ones once the platform approved a version
    (public_version). A PUBLIC template is offered through the catalog only: a share does not
    show it to a tenant before the review, nor its unreviewed versions after it."""
    return or_(
        Template.tenant_id == tenant_id,
        and_(Template.tenant_id.is_(None), Template.latest_version > 0),
        and_(
            Template.visibility == "SHARED",
            Template.latest_version > 0,
            shared_with(tenant_id),
        ),
        and_(
            Template.tenant_id.is_not(None),
            Template.visibility == "PUBLIC",
            Template.public_version.is_not(None),
        ),
    )


def bare_name_rank(tenant_id: uuid.UUID) -> ColumnElement[int]:
    """The order a bare templateName resolves in: the tenant's own template (0), one shared
    with it that its admin accepted (1), the platform's (2), other shared ones (3). Another
    tenant's PUBLIC template never answers a bare name (NULL: filtered out). Accepted shares
    come before the platform's and other shares, so a tenant that shares a template of the
    same name unasked can neither shadow nor break a name the caller already uses."""
    accepted = exists().where(
        TemplateAcceptance.template_id == Template.id, TemplateAcceptance.tenant_id == tenant_id
    )
    return case(
        (Template.tenant_id == tenant_id, 0),
        (
            and_(
                Template.visibility == "SHARED",
                Template.latest_version > 0,
                shared_with(tenant_id),
            ),
            case((accepted, 1), else_=3),
        ),
        (and_(Template.tenant_id.is_(None), Template.latest_version > 0), 2),
        else_=None,
    )


def runs_since(since: datetime) -> Any:
    """Executions of each template row since a moment, by every tenant: a LATERAL count, so
    only the templates that pass the filters are counted (through ix_executions_template_id)."""
    return (
        select(func.count().label("runs"))
        .where(Execution.template_id == Template.id, Execution.created_at >= since)
        .lateral("popularity")
    )


class TemplateRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_visible(
        self, tenant_id: uuid.UUID, template_id: uuid.UUID, *, lock: bool = False
    ) -> Template | None:
        query = select(Template).where(Template.id == template_id, visible_to(tenant_id))
        if lock:
            query = query.with_for_update(of=Template)
        return await self.session.scalar(query)

    async def get_many_visible(
        self, tenant_id: uuid.UUID, ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, Template]:
        rows = await self.session.scalars(
            select(Template).where(Template.id.in_(ids), visible_to(tenant_id))
        )
        return {t.id: t for t in rows}

    async def by_bare_name(self, tenant_id: uuid.UUID, name: str) -> list[tuple[Template, int]]:
        """Templates a bare name may resolve to, with their bare_name_rank, best first (at
        most three: enough to tell a unique match from an ambiguous one)."""
        rank = bare_name_rank(tenant_id)
        rows = await self.session.execute(
            select(Template, rank)
            .where(Template.name == name, rank.is_not(None))
            .order_by(rank, Template.id)
            .limit(3)
        )
        return [(t, r) for t, r in rows.tuples()]

    async def by_owner_name(self, tenant_id: uuid.UUID | None, name: str) -> Template | None:
        owner = (
            Template.tenant_id.is_(None) if tenant_id is None else Template.tenant_id == tenant_id
        )
        return await self.session.scalar(select(Template).where(owner, Template.name == name))

    async def search(
        self,
        tenant_id: uuid.UUID,
        criteria: TemplateFilter,
        *,
        since: datetime,
        limit: int,
        after: SearchCursor | None,
    ) -> list[tuple[Template, Any, bool]]:
        """A page of visible templates with the value each one is sorted by and whether it
        is verified (the platform's)."""
        query = select(Template).where(visible_to(tenant_id))
        if criteria.tags:
            query = query.where(Template.tags.contains(criteria.tags))
        if criteria.category is not None:
            query = query.where(Template.category == criteria.category)
        if criteria.visibility is not None:
            query = query.where(Template.visibility == criteria.visibility)
        if criteria.search is not None:
            tsquery = func.websearch_to_tsquery("english", criteria.search)
            query = query.where(Template.search.bool_op("@@")(tsquery))
        key: Any
        if criteria.order == "RELEVANCE":
            # ts_rank is real; as double precision it survives the JSON cursor exactly.
            key = cast(func.ts_rank(Template.search, tsquery), Float)
        elif criteria.order == "POPULARITY":
            popularity = runs_since(since)
            query = query.join(popularity, true())
            key = popularity.c.runs
        elif criteria.order == "CREATED":
            key = Template.created_at
        else:
            key = Template.name
        ascending = criteria.order == "NAME"
        # Verified (platform) templates come first in every ordering: `unverified` ascends
        # (false first) with NAME, `verified` descends (true first) with the others.
        verified = Template.tenant_id.is_(None)
        first = verified.is_(False) if ascending else verified
        if after is not None:
            position = tuple_(first, key, Template.id)
            bound = (not after.verified if ascending else after.verified, after.key, after.id)
            query = query.where(position > bound if ascending else position < bound)
        order = (
            (first, key, Template.id)
            if ascending
            else (first.desc(), key.desc(), Template.id.desc())
        )
        rows = await self.session.execute(
            query.add_columns(key, verified).order_by(*order).limit(limit)
        )
        return [(row[0], row[1], row[2]) for row in rows]

    async def run_counts(
        self, template_ids: list[uuid.UUID], since: datetime
    ) -> dict[uuid.UUID, int]:
        rows = await self.session.execute(
            select(Execution.template_id, func.count())
            .where(Execution.template_id.in_(template_ids), Execution.created_at >= since)
            .group_by(Execution.template_id)
        )
        return {template_id: count for template_id, count in rows.tuples()}

    async def add(self, template: Template) -> Template:
        self.session.add(template)
        await self.session.flush()
        return template

    async def add_version(self, version: TemplateVersion) -> TemplateVersion:
        self.session.add(version)
        await self.session.flush()
        return version

    async def version(self, template_id: uuid.UUID, number: int) -> TemplateVersion | None:
        return await self.session.scalar(
            select(TemplateVersion).where(
                TemplateVersion.template_id == template_id, TemplateVersion.version == number
            )
        )

    async def versions_by_ids(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, TemplateVersion]:
        rows = await self.session.scalars(
            select(TemplateVersion).where(TemplateVersion.id.in_(ids))
        )
        return {v.id: v for v in rows}

    async def versions_of(
        self, template_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, list[TemplateVersion]]:
        """Every version of each template, oldest first."""
        rows = await self.session.scalars(
            select(TemplateVersion)
            .where(TemplateVersion.template_id.in_(template_ids))
            .order_by(TemplateVersion.template_id, TemplateVersion.version)
        )
        found: dict[uuid.UUID, list[TemplateVersion]] = {i: [] for i in template_ids}
        for v in rows:
            found[v.template_id].append(v)
        return found

    async def param_migrations(
        self, template_id: uuid.UUID, after: int, upto: int
    ) -> list[tuple[int, dict[str, Any] | None]]:
        """(version, spec.param_migration) of versions after..upto, oldest first."""
        rows = await self.session.execute(
            select(TemplateVersion.version, TemplateVersion.spec["param_migration"])
            .where(
                TemplateVersion.template_id == template_id,
                TemplateVersion.version > after,
                TemplateVersion.version <= upto,
            )
            .order_by(TemplateVersion.version)
        )
        return [(number, migration) for number, migration in rows.tuples()]

    async def latest_versions(
        self, template_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, TemplateVersion]:
        """Latest PUBLISHED (not deprecated) version of each template."""
        rows = await self.session.scalars(
            select(TemplateVersion)
            .where(
                TemplateVersion.template_id.in_(template_ids),
                TemplateVersion.status == "PUBLISHED",
            )
            .order_by(TemplateVersion.template_id, TemplateVersion.version.desc())
            .distinct(TemplateVersion.template_id)
        )
        return {v.template_id: v for v in rows}

    async def offered_versions(
        self, wanted: list[tuple[uuid.UUID, int | None]]
    ) -> dict[tuple[uuid.UUID, int | None], TemplateVersion]:
        """For each (template id, number): that version, or with None the latest PUBLISHED
        (not deprecated) one; one statement for the lot."""
        latest = [t for t, n in wanted if n is None]
        exact = [(t, n) for t, n in wanted if n is not None]
        conditions = []
        if latest:
            conditions.append(
                and_(
                    TemplateVersion.template_id.in_(latest),
                    TemplateVersion.status == "PUBLISHED",
                )
            )
        if exact:
            conditions.append(
                tuple_(TemplateVersion.template_id, TemplateVersion.version).in_(exact)
            )
        if not conditions:
            return {}
        rows = await self.session.scalars(
            select(TemplateVersion)
            .where(or_(*conditions))
            .order_by(TemplateVersion.template_id, TemplateVersion.version.desc())
            .distinct(TemplateVersion.template_id)
        )
        found = {v.template_id: v for v in rows}
        return {(t, n): found[t] for t, n in wanted if t in found}

    async def acceptance(
        self, tenant_id: uuid.UUID, template_id: uuid.UUID
    ) -> TemplateAcceptance | None:
        return await self.session.get(TemplateAcceptance, (tenant_id, template_id))

    async def accepted_versions(
        self, tenant_id: uuid.UUID, template_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, int]:
        rows = await self.session.execute(
            select(TemplateAcceptance.template_id, TemplateAcceptance.version).where(
                TemplateAcceptance.tenant_id == tenant_id,
                TemplateAcceptance.template_id.in_(template_ids),
            )
        )
        return {template_id: version for template_id, version in rows.tuples()}

    async def accept(
        self,
        tenant_id: uuid.UUID,
        template_id: uuid.UUID,
        version: int,
        key_id: uuid.UUID | None,
        actor: str,
    ) -> None:
        """Record (or move) the tenant's acceptance of the template to `version`; `actor` and
        `key_id` say who (app/models/template.py, "Who created")."""
        values = {
            "version": version,
            "accepted_at": func.now(),
            "accepted_by_key_id": key_id,
            "accepted_by": actor,
        }
        await self.session.execute(
            insert(TemplateAcceptance)
            .values(tenant_id=tenant_id, template_id=template_id, **values)
            .on_conflict_do_update(
                index_elements=[TemplateAcceptance.tenant_id, TemplateAcceptance.template_id],
                set_=values,
            )
        )

    async def pending_reviews(self, limit: int) -> list[tuple[TemplateVersion, Template, str]]:
        """Versions waiting for the platform's review, oldest first, with their template and
        publisher (tenant) name."""
        rows = await self.session.execute(
            select(TemplateVersion, Template, Tenant.name)
            .join(Template, Template.id == TemplateVersion.template_id)
            .join(Tenant, Tenant.id == Template.tenant_id)
            .where(TemplateVersion.review_status == "PENDING")
            .order_by(TemplateVersion.created_at, TemplateVersion.id)
            .limit(limit)
        )
        return [(v, t, name) for v, t, name in rows.tuples()]

    async def get_for_review(self, template_id: uuid.UUID) -> Template | None:
        """A tenant's template, locked (the platform operator reviews any tenant's)."""
        return await self.session.scalar(
            select(Template)
            .where(Template.id == template_id, Template.tenant_id.is_not(None))
            .with_for_update()
        )

    async def withdraw_reviews(self, template_id: uuid.UUID) -> None:
        """Pending review requests of a template that left the public catalog are void."""
        await self.session.execute(
            update(TemplateVersion)
            .where(
                TemplateVersion.template_id == template_id,
                TemplateVersion.review_status == "PENDING",
            )
            .values(review_status=None)
        )

    async def tenant(self, tenant_id: uuid.UUID) -> Tenant | None:
        return await self.session.get(Tenant, tenant_id)

    async def tenants_by_name(self, names: list[str]) -> dict[str, Tenant]:
        rows = await self.session.scalars(select(Tenant).where(Tenant.name.in_(names)))
        return {t.name: t for t in rows}

    async def grant(
        self,
        template_id: uuid.UUID,
        tenant_ids: list[uuid.UUID],
        key_id: uuid.UUID | None,
        actor: str,
    ) -> None:
        """Share with `tenant_ids`; a tenant it is already shared with keeps its first grant."""
        if not tenant_ids:
            return
        by = {"granted_by_key_id": key_id, "granted_by": actor}
        await self.session.execute(
            insert(TemplateShare)
            .values([{"template_id": template_id, "tenant_id": t, **by} for t in tenant_ids])
            .on_conflict_do_nothing()
        )

    async def revoke(self, template_id: uuid.UUID, tenant_ids: list[uuid.UUID] | None) -> None:
        """Revoke those tenants' grants; None revokes every grant."""
        query = delete(TemplateShare).where(TemplateShare.template_id == template_id)
        if tenant_ids is not None:
            query = query.where(TemplateShare.tenant_id.in_(tenant_ids))
        await self.session.execute(query)

    async def drop_unseen_sla_overrides(self, template_id: uuid.UUID) -> int:
        """Delete the SLA overrides (template_slas) of tenants that can no longer read the
        template (a revoked share, PRIVATE, withdrawn from the catalog): an override must not
        outlive the read access it was set under, nor count against the tenant's SLA cap."""
        seen = (
            select(Template.id)
            .where(
                Template.id == TemplateSla.template_id, visible_to(TemplateSla.tenant_id.expression)
            )
            .exists()
        )
        result = await self.session.execute(
            delete(TemplateSla).where(TemplateSla.template_id == template_id, ~seen)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def shared_tenant_names(
        self, template_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, list[str]]:
        rows = await self.session.execute(
            select(TemplateShare.template_id, Tenant.name)
            .join(Tenant, Tenant.id == TemplateShare.tenant_id)
            .where(TemplateShare.template_id.in_(template_ids))
            .order_by(Tenant.name)
        )
        found: dict[uuid.UUID, list[str]] = {i: [] for i in template_ids}
        for template_id, name in rows.tuples():
            found[template_id].append(name)
        return found
