"""webhook deliveries: indexes for the tenant, the retention purge, redeliveries and the
dispatcher's per-tenant claim; webhook secrets encrypted at rest (app/webhooks/secret_box.py:
the key is WEBHOOK_SECRET_KEY, or the one in the state dir, as the API and workers read it)

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _reseal(seal: bool) -> None:
    """Encrypt the secrets stored in clear (upgrade), or decrypt them all (downgrade). The key
    is read only when there is a row to change: a fresh database needs none."""
    connection = op.get_bind()
    where = "secret LIKE 'whsec\\_%'" if seal else "secret NOT LIKE 'whsec\\_%'"
    rows = connection.execute(sa.text(f"SELECT id, secret FROM webhooks WHERE {where}")).all()
    if not rows:
        return
    from app.settings import Settings
    from app.webhooks.secret_box import SecretBox

    box = SecretBox(Settings())
    for row in rows:
        value = box.seal(row.secret) if seal else box.open(row.secret)
        connection.execute(
            sa.text("UPDATE webhooks SET secret = :value WHERE id = :id"),
            {"value": value, "id": row.id},
        )


def upgrade() -> None:
    op.alter_column(
        "webhooks", "secret", type_=sa.String(length=300), existing_type=sa.String(length=100)
    )
    _reseal(seal=True)
    # Deleting a tenant cascades here; without it, a scan of every tenant's deliveries.
    op.create_index("ix_webhook_deliveries_tenant_id", "webhook_deliveries", ["tenant_id"])
    # The retention purge: finished rows, oldest first.
    op.create_index(
        "ix_webhook_deliveries_finished",
        "webhook_deliveries",
        ["created_at"],
        postgresql_where=sa.text("status <> 'PENDING'"),
    )
    # The purge's "no redelivery points here" check, and ON DELETE SET NULL.
    op.create_index(
        "ix_webhook_deliveries_redelivery_of",
        "webhook_deliveries",
        ["redelivery_of"],
        postgresql_where=sa.text("redelivery_of IS NOT NULL"),
    )
    # The claim ranks unstarted rows per tenant; the sweep reads the PENDING ones.
    op.drop_index("ix_webhook_deliveries_unstarted", table_name="webhook_deliveries")
    op.create_index(
        "ix_webhook_deliveries_unstarted",
        "webhook_deliveries",
        ["tenant_id", "created_at", "id"],
        postgresql_where=sa.text("started_at IS NULL"),
    )
    op.create_index(
        "ix_webhook_deliveries_pending",
        "webhook_deliveries",
        ["created_at"],
        postgresql_where=sa.text("status = 'PENDING'"),
    )


def downgrade() -> None:
    _reseal(seal=False)
    op.alter_column(
        "webhooks", "secret", type_=sa.String(length=100), existing_type=sa.String(length=300)
    )
    op.drop_index("ix_webhook_deliveries_pending", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_unstarted", table_name="webhook_deliveries")
    op.create_index(
        "ix_webhook_deliveries_unstarted",
        "webhook_deliveries",
        ["created_at"],
        postgresql_where=sa.text("started_at IS NULL"),
    )
    op.drop_index("ix_webhook_deliveries_redelivery_of", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_finished", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_tenant_id", table_name="webhook_deliveries")
