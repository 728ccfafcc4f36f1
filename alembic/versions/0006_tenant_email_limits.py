"""verified email senders per tenant; daily email counters

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "tenants",
        sa.Column(
            "verified_senders",
            postgresql.ARRAY(sa.String(length=320)),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
    )
    op.create_table(
        "tenant_email_days",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_tenant_email_days_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "day", name=op.f("pk_tenant_email_days")),
    )
    op.create_table(
        "tenant_email_charges",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_tenant_email_charges_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_tenant_email_charges")),
    )
    op.create_index(
        op.f("ix_tenant_email_charges_tenant_id"), "tenant_email_charges", ["tenant_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_tenant_email_charges_tenant_id"), table_name="tenant_email_charges")
    op.drop_table("tenant_email_charges")
    op.drop_table("tenant_email_days")
    op.drop_column("tenants", "verified_senders")
