"""template lifecycle: drafts, categories, full-text search, version audit, shares

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 06:01:41.275180
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# array_to_string is STABLE (element output functions may depend on settings); for varchar
# elements it is not, so this wrapper may be IMMUTABLE and used by the generated search column.
# Frozen copy of app.models.template.SEARCH_VECTOR_SQL as of this revision.
SEARCH_VECTOR_SQL = (
    "setweight(to_tsvector('english'::regconfig, name), 'A') || "
    "setweight(to_tsvector('english'::regconfig, title), 'A') || "
    "setweight(to_tsvector('english'::regconfig, wfs_tags_text(tags)), 'B') || "
    "setweight(to_tsvector('english'::regconfig, description), 'C')"
)
TAGS_TEXT_FUNCTION = """
CREATE FUNCTION wfs_tags_text(tags varchar[]) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN coalesce(array_to_string(tags, ' '), '')
"""


def upgrade() -> None:
    op.execute(TAGS_TEXT_FUNCTION)
    op.create_table('template_shares',
    sa.Column('template_id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('granted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('granted_by_key_id', sa.Uuid(), nullable=True),
    sa.ForeignKeyConstraint(['granted_by_key_id'], ['api_keys.id'], name=op.f('fk_template_shares_granted_by_key_id_api_keys'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['template_id'], ['templates.id'], name=op.f('fk_template_shares_template_id_templates'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_template_shares_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('template_id', 'tenant_id', name=op.f('pk_template_shares'))
    )
    op.create_index(op.f('ix_template_shares_tenant_id'), 'template_shares', ['tenant_id'], unique=False)

    op.add_column('template_versions', sa.Column('published_by_key_id', sa.Uuid(), nullable=True))
    op.add_column('template_versions', sa.Column('deprecated_at', sa.DateTime(timezone=True), nullable=True))
    op.create_foreign_key(op.f('fk_template_versions_published_by_key_id_api_keys'), 'template_versions', 'api_keys', ['published_by_key_id'], ['id'], ondelete='SET NULL')

    op.add_column('templates', sa.Column('category', sa.String(length=50), nullable=True))
    op.add_column('templates', sa.Column('draft_spec', postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column('templates', sa.Column('created_by_key_id', sa.Uuid(), nullable=True))
    op.add_column('templates', sa.Column('search', postgresql.TSVECTOR(), sa.Computed(SEARCH_VECTOR_SQL, persisted=True), nullable=True))
    op.create_index(op.f('ix_templates_category'), 'templates', ['category'], unique=False)
    op.create_index('ix_templates_search', 'templates', ['search'], unique=False, postgresql_using='gin')
    op.create_index('ix_templates_tags', 'templates', ['tags'], unique=False, postgresql_using='gin')
    op.create_foreign_key(op.f('fk_templates_created_by_key_id_api_keys'), 'templates', 'api_keys', ['created_by_key_id'], ['id'], ondelete='SET NULL')

    # Existing templates: the category comes from the latest version; a tenant's template gets
    # that version as its draft (the starting point of the next edit). Platform ones get none.
    op.execute(
        """
        UPDATE templates AS t
        SET category = left(v.spec ->> 'category', 50),
            draft_spec = CASE WHEN t.tenant_id IS NOT NULL THEN v.spec END
        FROM template_versions AS v
        WHERE v.template_id = t.id AND v.version = t.latest_version
        """
    )


def downgrade() -> None:
    op.drop_constraint(op.f('fk_templates_created_by_key_id_api_keys'), 'templates', type_='foreignkey')
    op.drop_index('ix_templates_tags', table_name='templates', postgresql_using='gin')
    op.drop_index('ix_templates_search', table_name='templates', postgresql_using='gin')
    op.drop_index(op.f('ix_templates_category'), table_name='templates')
    op.drop_column('templates', 'search')
    op.drop_column('templates', 'created_by_key_id')
    op.drop_column('templates', 'draft_spec')
    op.drop_column('templates', 'category')
    op.drop_constraint(op.f('fk_template_versions_published_by_key_id_api_keys'), 'template_versions', type_='foreignkey')
    op.drop_column('template_versions', 'deprecated_at')
    op.drop_column('template_versions', 'published_by_key_id')
    op.drop_index(op.f('ix_template_shares_tenant_id'), table_name='template_shares')
    op.drop_table('template_shares')
    op.execute('DROP FUNCTION wfs_tags_text(varchar[])')
