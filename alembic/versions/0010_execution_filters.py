"""indexes for filtered execution lists (executions(filter: ...)), measured in bench/execution_filters.py

- (tenant_id, template_id, created_at, id): a tenant's executions of one template, newest
  first. The old (template_id, created_at) index walks every tenant's runs of a platform
  template, so a small tenant filtering by a template a big tenant runs a lot read the big
  tenant's rows.
- GIN (params jsonb_path_ops): paramsContains (`params @> ...`). Without it a rare value is
  found by reading all of the tenant's rows (a million: ~40 ms a page, ~200 ms a count here).

Built CONCURRENTLY: the executions table takes writes while it is indexed (each index is its
own transaction). A failed build (a timeout, a cancel, a killed migration) leaves an INVALID
index under the name, which `if_not_exists` alone would keep for good: a rerun drops an invalid
one first (pg_index.indisvalid false), then builds it again.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def drop_if_invalid(name: str) -> None:
    """Drop index `name` if a failed concurrent build left it INVALID."""
    invalid = op.get_bind().scalar(
        sa.text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
        {"name": name},
    )
    if invalid:
        op.drop_index(name, table_name="executions", postgresql_concurrently=True, if_exists=True)


def upgrade() -> None:
    with op.get_context().autocommit_block():
        drop_if_invalid("ix_executions_tenant_template_created")
        op.create_index(
            "ix_executions_tenant_template_created",
            "executions",
            ["tenant_id", "template_id", "created_at", "id"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        drop_if_invalid("ix_executions_params")
        op.create_index(
            "ix_executions_params",
            "executions",
            ["params"],
            postgresql_using="gin",
            postgresql_ops={"params": "jsonb_path_ops"},
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_executions_params",
            table_name="executions",
            postgresql_concurrently=True,
            if_exists=True,
        )
        op.drop_index(
            "ix_executions_tenant_template_created",
            table_name="executions",
            postgresql_concurrently=True,
            if_exists=True,
        )
