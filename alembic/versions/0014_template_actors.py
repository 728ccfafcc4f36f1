"""template actors: created_by, published_by, granted_by, accepted_by name the caller as
Principal.actor does (`key:<API key id>` or `sub:<token subject>`), so what an identity
provider's user did is attributed too; existing rows are filled from their key ids. The
`*_by_key_id` columns stay (foreign keys, existing readers) and are still written.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# table -> (actor column, key id column beside it)
COLUMNS = {
    "templates": ("created_by", "created_by_key_id"),
    "template_versions": ("published_by", "published_by_key_id"),
    "template_shares": ("granted_by", "granted_by_key_id"),
    "template_acceptances": ("accepted_by", "accepted_by_key_id"),
}


def upgrade() -> None:
    for table, (actor, key_id) in COLUMNS.items():
        op.add_column(table, sa.Column(actor, sa.String(length=120), nullable=True))
        op.execute(
            f"UPDATE {table} SET {actor} = 'key:' || {key_id}::text WHERE {key_id} IS NOT NULL"
        )


def downgrade() -> None:
    for table, (actor, _) in COLUMNS.items():
        op.drop_column(table, actor)
