"""ai_usage.attempts: why a call ended as it did, one {provider, model, kind, message} per
candidate tried or skipped (app/ai/attempts.py), shown as aiUsage { attempts }.

A nullable column without a default: PostgreSQL adds it to the catalogue only (no table rewrite,
a brief ACCESS EXCLUSIVE lock to change the catalogue), so it is safe on a large ai_usage.
Older rows keep NULL (shown as no attempts).

Revision ID: 0020
Revises: 0018
"""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Wait at most 5 s for the lock (queued behind a long query, it would block every writer).
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column("ai_usage", sa.Column("attempts", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("ai_usage", "attempts")
