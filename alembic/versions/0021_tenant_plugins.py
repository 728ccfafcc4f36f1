"""tenant_plugins: which plugin the platform operator enabled or disabled for which tenant
(app/models/tenant_plugin.py). A new, empty table: no lock on anything that exists.

Revision ID: 0021
Revises: 0018
"""

import sqlalchemy as sa

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_plugins",
        sa.Column(
            "tenant_id",
            sa.Uuid(),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("plugin", sa.String(40), primary_key=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(120), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("tenant_plugins")
