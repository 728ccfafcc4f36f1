"""SLAs (app/sla): template_slas (a tenant's override of a template's targets), sla_breaches
(what missed them, and the dedupe of their notifications), template_versions.sla (the spec's
`sla` block as a generated column, indexed where present) and SLA_BREACH notifications.

Locks, as the busy tables take writes while this runs (steps safe to run again):
1. One transaction with lock_timeout 5 s (a lock queued behind a long transaction would stall
   every writer queued behind it; the step fails instead: run it again):
   - template_versions.sla as a STORED generated column: adding it rewrites template_versions
     under ACCESS EXCLUSIVE. Accepted on purpose: the table holds one row per published
     version (small: thousands of rows, well under a second), and the column can then never
     disagree with the spec (no publish path or backfill to keep in step).
   - the new tables (empty).
   - ck_notifications_type replaced NOT VALID: a brief ACCESS EXCLUSIVE lock, no scan.
2. Outside a transaction (autocommit): VALIDATE CONSTRAINT scans notifications under SHARE
   UPDATE EXCLUSIVE (reads and writes go on); the indexes built CONCURRENTLY, a failed build's
   INVALID index dropped first, as 0010, 0015 and 0017 do: ix_template_versions_sla and
   ix_sla_breaches_execution_id (a plain index for the executions FK's cascades: the unique
   DURATION one is partial, which a cascade's `WHERE execution_id = $1` cannot use).

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


# name -> (table, columns, partial index predicate), built CONCURRENTLY in step 2
INDEXES: dict[str, tuple[str, list[str], str | None]] = {
    "ix_template_versions_sla": ("template_versions", ["template_id"], "sla IS NOT NULL"),
    "ix_sla_breaches_execution_id": ("sla_breaches", ["execution_id"], None),
}


def _notification_types(types: tuple[str, ...]) -> None:
    """Replace the check NOT VALID (one ALTER: a brief lock, no scan of notifications); the
    rows are validated by _validate_notification_types, outside the transaction."""
    op.execute(
        "ALTER TABLE notifications DROP CONSTRAINT IF EXISTS ck_notifications_type, "
        f"ADD CONSTRAINT ck_notifications_type CHECK (type IN {types}) NOT VALID"
    )


def _validate_notification_types() -> None:
    op.execute("ALTER TABLE notifications VALIDATE CONSTRAINT ck_notifications_type")


def _build_indexes() -> None:
    for name, (table, columns, where) in INDEXES.items():
        invalid = op.get_bind().scalar(
            sa.text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:n)"),
            {"n": name},
        )
        if invalid:
            op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
        op.create_index(
            name,
            table,
            columns,
            postgresql_where=sa.text(where) if where else None,
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def upgrade() -> None:
    # 1. One transaction, never queued long behind another one's lock.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(
        "ALTER TABLE template_versions ADD COLUMN IF NOT EXISTS sla JSONB "
        "GENERATED ALWAYS AS (NULLIF(spec -> 'sla', 'null'::jsonb)) STORED"
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
        if_not_exists=True,
    )
    op.create_index(
        "ix_template_slas_template_id", "template_slas", ["template_id"], if_not_exists=True
    )
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
        if_not_exists=True,
    )
    op.create_index(
        "ux_sla_breaches_execution",
        "sla_breaches",
        ["execution_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'DURATION'"),
        if_not_exists=True,
    )
    op.create_index(
        "ux_sla_breaches_open_rate",
        "sla_breaches",
        ["tenant_id", "template_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'SUCCESS_RATE' AND ended_at IS NULL"),
        if_not_exists=True,
    )
    op.create_index(
        "ix_sla_breaches_tenant_template_started",
        "sla_breaches",
        ["tenant_id", "template_id", "started_at"],
        if_not_exists=True,
    )
    _notification_types(NEW_TYPES)
    # 2. This commits step 1; each statement then runs on its own.
    with op.get_context().autocommit_block():
        _validate_notification_types()
        _build_indexes()


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("DELETE FROM notifications WHERE type = 'SLA_BREACH'")
    _notification_types(OLD_TYPES)
    with op.get_context().autocommit_block():
        _validate_notification_types()
        for name, (table, *_) in INDEXES.items():
            op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
    op.drop_table("sla_breaches", if_exists=True)
    op.drop_table("template_slas", if_exists=True)
    op.execute("ALTER TABLE template_versions DROP COLUMN IF EXISTS sla")
