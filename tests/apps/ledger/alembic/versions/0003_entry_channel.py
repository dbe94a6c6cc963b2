"""Where an entry came from: another varchar IN check and an index on an expression, in batch mode."""
from alembic import op
import sqlalchemy as sa

revision = "0003_entry_channel"
down_revision = "0002_archived_accounts"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("entry") as batch:
        batch.add_column(sa.Column("channel", sa.String(12), nullable=False, server_default="web"))
        batch.create_check_constraint("ck_entry_channel", "channel IN ('web', 'api', 'import')")
    op.create_index("ix_entry_upper_channel", "entry", [sa.text("upper(channel)")],
                    postgresql_where=sa.text("channel IN ('api', 'import')"))


def downgrade():
    op.drop_index("ix_entry_upper_channel", table_name="entry")
    with op.batch_alter_table("entry") as batch:
        batch.drop_constraint("ck_entry_channel", type_="check")
        batch.drop_column("channel")
