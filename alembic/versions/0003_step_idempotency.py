"""step idempotency records (email.send and other steps with outside effects)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 07:00:00.000000
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('step_idempotency',
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('result', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_step_idempotency_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_step_idempotency'))
    )
    op.create_index(op.f('ix_step_idempotency_created_at'), 'step_idempotency', ['created_at'], unique=False)
    op.create_index(op.f('ix_step_idempotency_tenant_id'), 'step_idempotency', ['tenant_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_step_idempotency_tenant_id'), table_name='step_idempotency')
    op.drop_index(op.f('ix_step_idempotency_created_at'), table_name='step_idempotency')
    op.drop_table('step_idempotency')
