"""index for the executions feed

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_executions_tenant_updated", "executions", ["tenant_id", "updated_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_executions_tenant_updated", table_name="executions")
