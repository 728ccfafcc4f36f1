"""the public template catalog: platform review of public versions, tenants' acceptances

template_versions gets review_status (NULL: never submitted; PENDING, APPROVED, REJECTED),
review_note and reviewed_at; templates gets public_version, the approved version other tenants
see and run. template_acceptances records which version of another publisher's template a
tenant's admin accepted (executions run it pinned).

Upgrading: tenants' PUBLIC templates published before this revision were never reviewed, so
none of them stays in the public catalog. Each one's latest version becomes PENDING and its
public_version stays NULL: it is visible to its owner only until the platform operator
approves it (`wfs template reviews`, `wfs template approve`). Platform templates need no review.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("templates", sa.Column("public_version", sa.Integer(), nullable=True))
    op.add_column(
        "template_versions", sa.Column("review_status", sa.String(length=10), nullable=True)
    )
    op.add_column("template_versions", sa.Column("review_note", sa.Text(), nullable=True))
    op.add_column(
        "template_versions",
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_check_constraint(
        op.f("ck_template_versions_review_status"),
        "template_versions",
        "review_status IN ('PENDING', 'APPROVED', 'REJECTED')",
    )
    op.create_index(
        "ix_template_versions_pending",
        "template_versions",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("review_status = 'PENDING'"),
    )
    op.create_table(
        "template_acceptances",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("template_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_by_key_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["accepted_by_key_id"],
            ["api_keys.id"],
            name=op.f("fk_template_acceptances_accepted_by_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name=op.f("fk_template_acceptances_template_id_templates"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_template_acceptances_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "template_id", name=op.f("pk_template_acceptances")),
    )
    op.create_index(
        op.f("ix_template_acceptances_template_id"),
        "template_acceptances",
        ["template_id"],
        unique=False,
    )
    # Unreviewed public templates leave the catalog: their latest version waits for review.
    op.execute(
        """
        UPDATE template_versions AS v SET review_status = 'PENDING'
        FROM templates AS t
        WHERE v.template_id = t.id AND v.version = t.latest_version
          AND t.tenant_id IS NOT NULL AND t.visibility = 'PUBLIC'
        """
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_template_acceptances_template_id"), table_name="template_acceptances")
    op.drop_table("template_acceptances")
    op.drop_index("ix_template_versions_pending", table_name="template_versions")
    op.drop_constraint(
        op.f("ck_template_versions_review_status"), "template_versions", type_="check"
    )
    op.drop_column("template_versions", "reviewed_at")
    op.drop_column("template_versions", "review_note")
    op.drop_column("template_versions", "review_status")
    op.drop_column("templates", "public_version")
