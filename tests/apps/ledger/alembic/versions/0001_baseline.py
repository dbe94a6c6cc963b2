"""The legacy schema, written as a revision: what create_all of legacy_models built."""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.execute("CREATE DOMAIN posint AS INTEGER CONSTRAINT posint_positive CHECK (VALUE > 0)")
    op.execute("CREATE SEQUENCE order_no_seq START WITH 1000")
    op.create_table(
        "account",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("uid", postgresql.UUID(as_uuid=True), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("lifecycle_stage", sa.String(20), nullable=False, server_default="active"),
        sa.Column("kind", sa.String(10), nullable=False, server_default="person"),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("settings", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_account"),
        sa.UniqueConstraint("uid", name="uq_account_uid"),
        sa.CheckConstraint("lifecycle_stage IN ('active', 'deleted')", name="ck_account_lifecycle"),
        sa.CheckConstraint("kind IN ('person', 'company')", name="ck_account_kind"),
    )
    op.create_index("ix_account_lower_name", "account", [sa.text("lower(name)")])
    op.create_table(
        "entry",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("order_no", sa.BigInteger(), server_default=sa.text("nextval('order_no_seq')"), nullable=False),
        sa.Column("status", postgresql.ENUM("open", "paid", "void", name="entry_status"), nullable=False,
                  server_default="open"),
        sa.Column("quantity", postgresql.DOMAIN("posint", sa.Integer(), create_type=False), nullable=False,
                  server_default="1"),
        sa.Column("unit_price", sa.Numeric(12, 2), nullable=False, server_default=sa.text("0")),
        sa.Column("total", sa.Numeric(14, 2), sa.Computed("quantity * unit_price", persisted=True)),
        sa.Column("note", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_entry"),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"], name="fk_entry_account_id_account",
                                ondelete="CASCADE", onupdate="CASCADE"),
    )
    op.create_index("ix_entry_open", "entry", ["account_id"], postgresql_where=sa.text("status = 'open'"))
    op.execute("CREATE VIEW active_account AS SELECT id, name, kind FROM account "
               "WHERE lifecycle_stage IN ('active') AND kind = 'person'")


def downgrade():
    op.execute("DROP VIEW active_account")
    op.drop_table("entry")
    op.drop_table("account")
    op.execute("DROP TYPE entry_status")
    op.execute("DROP SEQUENCE order_no_seq")
    op.execute("DROP DOMAIN posint")
