"""Items get a status: the first revision, written against tables create_all had made."""
from alembic import op
import sqlalchemy as sa

revision = "0001_item_status"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("item", sa.Column("status", sa.String(10), nullable=False, server_default="new"))
    op.create_check_constraint("item_status_check", "item", "status IN ('new', 'sold')")


def downgrade():
    op.drop_constraint("item_status_check", "item", type_="check")
    op.drop_column("item", "status")
