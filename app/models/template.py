"""Templates (named, owned by a tenant or by the platform), their immutable versions, the
tenants a SHARED template is shared with, and the tenants that accepted another publisher's
template (docs/templates.md, "Publishing and running others' templates")."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Computed,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlalchemy.orm import Mapped, deferred, mapped_column

from app.models.base import Base, Timestamps, UUIDPk, utcnow
from app.sla_limits import MAX_DURATION_LIMIT, MAX_MIN_RUNS, MAX_WINDOW_SECONDS, MIN_WINDOW_SECONDS

VISIBILITIES = ("PRIVATE", "SHARED", "PUBLIC")
VERSION_STATUSES = ("PUBLISHED", "DEPRECATED")
# The platform operator's review of a version offered to the public catalog; NULL: never
# submitted (a PRIVATE or SHARED template's versions, the platform's own).
REVIEW_STATUSES = ("PENDING", "APPROVED", "REJECTED")
# Who created, published, shared or accepted is recorded twice: `*_by` names the caller as
# Principal.actor does (`key:<API key id>`, `sub:<token subject>`), for keys and tokens alike;
# `*_by_key_id` is the key (NULL for a token caller, or once the key's row is gone).
# The publisher name of the platform's own templates (tenant_id NULL); no tenant may take it.
PLATFORM_PUBLISHER_NAME = "workflow-service"

# The search document: name and title weigh most, then tags, then the description.
# A generated column, so every writer (API, seed, a hand-written UPDATE) keeps it right.
# `wfs_tags_text` (migration 0002) is array_to_string declared IMMUTABLE: the built-in is only
# STABLE because some element types print differently per session settings; varchar does not.
SEARCH_VECTOR_SQL = (
    "setweight(to_tsvector('english'::regconfig, name), 'A') || "
    "setweight(to_tsvector('english'::regconfig, title), 'A') || "
    "setweight(to_tsvector('english'::regconfig, wfs_tags_text(tags)), 'B') || "
    "setweight(to_tsvector('english'::regconfig, description), 'C')"
)


# template_versions.sla: the spec's `sla` block while it passes SlaSpec's bounds
# (app/sla_limits.py), else NULL (jsonb null, a spec dumped without an sla, included), so that
# every SQL reader (the sweep, slaReport, the SLA rollup, the targets cap) finds no target
# exactly where Python's SlaSpec.stored does. A generated column's expression must be
# IMMUTABLE, and must never fail (a failing one refuses the row's INSERT or UPDATE): each value
# is cast only under a CASE that found it a JSON number, and to numeric, which holds any JSON
# number (float8 fails on 1e400).
#
# Where Python and SQL may still differ, on blocks no publish stores (model_dump writes every
# key, numbers as floats and ints that read back exactly):
# - a string or boolean value is invalid here; pydantic coerces "60" and true to numbers;
# - SQL compares the exact decimal, Python its nearest float: a number written with more
#   digits than a float holds, within a float's rounding of a bound, can land on either side;
# - a duration must be at least 5e-324 (the smallest positive float; the readers' float8
#   cast of a smaller one would fail): Python reads one well below it as 0.0 (invalid), but
#   one within a float's rounding of it (from about 2.5e-324) as 5e-324 (valid).
# Changing a bound needs a migration that regenerates the column (app/sla_limits.py).
_SLA_KEYS = ("max_duration_seconds", "min_success_rate", "window_seconds", "min_runs")
_SLA = "(spec -> 'sla')"
_SMALLEST_POSITIVE_FLOAT = "5e-324"


def _sla_number(key: str, check: str, *, nullable: bool) -> str:
    """SQL: the block's `key` is a JSON number passing `check` (over `{n}`, its numeric value),
    or absent (JSON null too when `nullable`: the two targets are Optional, the window and
    min_runs only defaulted)."""
    n = f"({_SLA} ->> '{key}')::numeric"
    missing = "'null'" if nullable else "'absent'"
    return (
        f"CASE COALESCE(jsonb_typeof({_SLA} -> '{key}'), {missing}) "
        f"WHEN 'number' THEN ({check.format(n=n)}) WHEN {missing} THEN true ELSE false END"
    )


def _sla_valid() -> str:
    """SQL: the block (a JSON object) passes SlaSpec: no key but the four (extra="forbid"),
    each bounded as its Field, and at least one target."""
    keys = ", ".join(f"'{k}'" for k in _SLA_KEYS)
    integral = "{{n}} = trunc({{n}}) AND {{n}} BETWEEN {} AND {}"
    return " AND ".join(
        [
            f"{_SLA} - ARRAY[{keys}] = '{{}}'::jsonb",
            _sla_number(
                "max_duration_seconds",
                f"{{n}} BETWEEN {_SMALLEST_POSITIVE_FLOAT} AND {MAX_DURATION_LIMIT!r}",
                nullable=True,
            ),
            _sla_number("min_success_rate", "{n} BETWEEN 0 AND 1", nullable=True),
            _sla_number(
                "window_seconds",
                integral.format(MIN_WINDOW_SECONDS, MAX_WINDOW_SECONDS),
                nullable=False,
            ),
            _sla_number("min_runs", integral.format(1, MAX_MIN_RUNS), nullable=False),
            f"(jsonb_typeof({_SLA} -> 'max_duration_seconds') = 'number' "
            f"OR jsonb_typeof({_SLA} -> 'min_success_rate') = 'number')",
        ]
    )


# The outer CASE first: `jsonb - text[]` fails on a scalar, and AND's operands may be
# evaluated in any order; CASE's are not.
SLA_SQL = (
    f"CASE WHEN jsonb_typeof({_SLA}) = 'object' THEN CASE WHEN {_sla_valid()} THEN {_SLA} END END"
)


class Template(UUIDPk, Timestamps, Base):
    __tablename__ = "templates"
    __table_args__ = (
        # tenant_id NULL is the platform (the public catalog); names are unique per owner.
        UniqueConstraint("tenant_id", "name", postgresql_nulls_not_distinct=True),
        CheckConstraint(f"visibility IN {VISIBILITIES}", name="visibility"),
        Index("ix_templates_search", "search", postgresql_using="gin"),
        Index("ix_templates_tags", "tags", postgresql_using="gin"),
    )

    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    # title, description, tags and category are the catalog entry: those of the latest
    # published version, or of `public_version` while the template is PUBLIC with an approved
    # version (of the draft until the first publish).
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(50)), default=list)
    category: Mapped[str | None] = mapped_column(String(50), index=True)
    visibility: Mapped[str] = mapped_column(String(10), default="PRIVATE")
    latest_version: Mapped[int] = mapped_column(default=0)
    # The version other tenants see and run in the public catalog: the newest one the platform
    # operator approved while the template is PUBLIC. NULL until then, and again once the
    # owner makes the template PRIVATE or SHARED (withdrawn). Unused for platform templates.
    public_version: Mapped[int | None]
    # The spec being edited: the next version when published. NULL for platform templates.
    draft_spec: Mapped[dict[str, Any] | None]
    created_by_key_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    created_by: Mapped[str | None] = mapped_column(String(120))  # see "Who created" above
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    search: Mapped[Any] = deferred(
        mapped_column(TSVECTOR, Computed(SEARCH_VECTOR_SQL, persisted=True))
    )


class TemplateVersion(UUIDPk, Timestamps, Base):
    """created_at is when the version was published."""

    __tablename__ = "template_versions"
    __table_args__ = (
        UniqueConstraint("template_id", "version"),
        CheckConstraint(f"status IN {VERSION_STATUSES}", name="status"),
        CheckConstraint(f"review_status IN {REVIEW_STATUSES}", name="review_status"),
        # The SLA round reads only versions with targets (app/sla).
        Index("ix_template_versions_sla", "template_id", postgresql_where=text("sla IS NOT NULL")),
        # The operator's queue (`wfs template reviews`) reads only pending versions.
        Index(
            "ix_template_versions_pending",
            "created_at",
            postgresql_where=text("review_status = 'PENDING'"),
        ),
    )

    template_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"))
    version: Mapped[int]
    status: Mapped[str] = mapped_column(String(12), default="PUBLISHED")
    spec: Mapped[dict[str, Any]]
    published_by_key_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    published_by: Mapped[str | None] = mapped_column(String(120))  # see "Who created" above
    deprecated_at: Mapped[datetime | None]
    review_status: Mapped[str | None] = mapped_column(String(10))
    # The operator's reason for a rejection, shown to the owner only.
    review_note: Mapped[str | None] = mapped_column(Text)
    reviewed_at: Mapped[datetime | None]
    # The spec's `sla` block (NULL without one), kept by PostgreSQL (0016): SLA queries find
    # the versions with targets by index and read them without detoasting whole specs.
    sla: Mapped[dict[str, Any] | None] = deferred(
        mapped_column(JSONB, Computed(SLA_SQL, persisted=True))
    )


class TemplateShare(Base):
    """A tenant that may read and run a SHARED template it does not own."""

    __tablename__ = "template_shares"

    template_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("templates.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)
    granted_by_key_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    granted_by: Mapped[str | None] = mapped_column(String(120))  # see "Who created" above


class TemplateAcceptance(Base):
    """A tenant's consent to run one version of another publisher's template: its admin saw
    what that version does (capabilities) and accepted it. Executions of that tenant run the
    accepted version, pinned, until an admin accepts another."""

    __tablename__ = "template_acceptances"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    template_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("templates.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    version: Mapped[int]
    accepted_at: Mapped[datetime] = mapped_column(default=utcnow)
    accepted_by_key_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    accepted_by: Mapped[str | None] = mapped_column(String(120))  # see "Who created" above
