"""SLAs (app/sla): template_slas (a tenant's override of a template's targets), sla_breaches
(what missed them, and the dedupe of their notifications), template_versions.sla (the spec's
`sla` block as a generated column, indexed where present) and SLA_BREACH notifications.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

OLD_TYPES = (
    "EXECUTION_COMPLETED",
    "EXECUTION_FAILED",
    "EXECUTION_CANCELLED",
    "BUDGET_THRESHOLD",
    "BUDGET_EXHAUSTED",
    "PUBLISHED",
)
NEW_TYPES = (*OLD_TYPES, "SLA_BREACH")


def _notification_types(types: tuple[str, ...]) -> None:
    op.drop_constraint(op.f("ck_notifications_type"), "notifications", type_="check")
    op.create_check_constraint(op.f("ck_notifications_type"), "notifications", f"type IN {types}")


def upgrade() -> None:
    op.add_column(
        "template_versions",
        sa.Column(
            "sla",
            postgresql.JSONB(astext_type=sa.Text()),
            sa.Computed("NULLIF(spec -> 'sla', 'null'::jsonb)", persisted=True),
            nullable=True,
        ),
    )
    op.create_index(
        "ix_template_versions_sla",
        "template_versions",
        ["template_id"],
        postgresql_where=sa.text("sla IS NOT NULL"),
    )
    op.create_table(
        "template_slas",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("template_id", sa.Uuid(), nullable=False),
        sa.Column("max_duration_seconds", sa.Float(), nullable=True),
        sa.Column("min_success_rate", sa.Float(), nullable=True),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.Column("min_runs", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=120), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_template_slas_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name=op.f("fk_template_slas_template_id_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "template_id", name=op.f("pk_template_slas")),
    )
    op.create_index("ix_template_slas_template_id", "template_slas", ["template_id"])
    op.create_table(
        "sla_breaches",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("template_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("execution_id", sa.Uuid(), nullable=True),
        sa.Column("observed", sa.Float(), nullable=False),
        sa.Column("target", sa.Float(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=True),
        sa.Column("window_seconds", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('DURATION', 'SUCCESS_RATE')", name=op.f("ck_sla_breaches_kind")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_sla_breaches_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name=op.f("fk_sla_breaches_template_id_templates"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["executions.id"],
            name=op.f("fk_sla_breaches_execution_id_executions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sla_breaches")),
    )
    op.create_index(
        "ux_sla_breaches_execution",
        "sla_breaches",
        ["execution_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'DURATION'"),
    )
    op.create_index(
        "ux_sla_breaches_open_rate",
        "sla_breaches",
        ["tenant_id", "template_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'SUCCESS_RATE' AND ended_at IS NULL"),
    )
    op.create_index(
        "ix_sla_breaches_tenant_template_started",
        "sla_breaches",
        ["tenant_id", "template_id", "started_at"],
    )
    _notification_types(NEW_TYPES)


def downgrade() -> None:
    op.execute("DELETE FROM notifications WHERE type = 'SLA_BREACH'")
    _notification_types(OLD_TYPES)
    op.drop_table("sla_breaches")
    op.drop_table("template_slas")
    op.drop_index("ix_template_versions_sla", table_name="template_versions")
    op.drop_column("template_versions", "sla")
