"""platform-wide time indexes for the operator's planning views (tenantComparison, capacityPlan)

Every other index on executions and ai_usage leads with a tenant or a template; the operator's
views read every tenant's rows of a time window, which without these took a scan of the whole
table. Both carry the columns those queries read (INCLUDE), so they are answered from the
index alone where the visibility map allows:
- executions (created_at) INCLUDE (tenant_id, status, started_at, finished_at)
- ai_usage (at) INCLUDE (tenant_id, cost_usd)
- executions (finished_at) WHERE finished: completions per hour (capacityPlan's peak), exact
  whenever the run was created (at 1M executions: ~100 ms here, against ~180 ms reading 35
  days by creation time and only runs created up to a week before the window)

Built CONCURRENTLY, and a failed build's INVALID index dropped first, as in 0010.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

FINISHED_SQL = "status IN ('COMPLETED', 'FAILED', 'CANCELLED')"
# name -> (table, columns, INCLUDE columns, partial index predicate)
INDEXES: dict[str, tuple[str, list[str], list[str], str | None]] = {
    "ix_executions_created": (
        "executions",
        ["created_at"],
        ["tenant_id", "status", "started_at", "finished_at"],
        None,
    ),
    "ix_ai_usage_at": ("ai_usage", ["at"], ["tenant_id", "cost_usd"], None),
    "ix_executions_finished": ("executions", ["finished_at"], [], FINISHED_SQL),
}


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name, (table, columns, include, where) in INDEXES.items():
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
                postgresql_include=include,
                postgresql_where=sa.text(where) if where else None,
                postgresql_concurrently=True,
                if_not_exists=True,
            )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, (table, *_) in INDEXES.items():
            op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
