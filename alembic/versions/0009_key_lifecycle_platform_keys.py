"""API key lifecycle and the platform operator's credentials

api_keys gets expires_at (NULL: until revoked) and created_by (who made it: "key:<prefix>",
"cli", "platform:<name>"); tenants gets suspended_at (a suspended tenant's credentials stop
authenticating). platform_keys holds the operator's `wfsp_` credentials, hashed like tenant
keys. Existing keys keep no expiry and existing tenants stay active.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("api_keys", sa.Column("created_by", sa.String(length=120), nullable=True))
    op.add_column("tenants", sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "platform_keys",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=20), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_platform_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_platform_keys_key_hash")),
    )


def downgrade() -> None:
    op.drop_table("platform_keys")
    op.drop_column("tenants", "suspended_at")
    op.drop_column("api_keys", "created_by")
    op.drop_column("api_keys", "expires_at")
