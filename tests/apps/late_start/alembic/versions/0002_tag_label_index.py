"""Tags are looked up without regard to case."""
from alembic import op
import sqlalchemy as sa

revision = "0002_tag_label_index"
down_revision = "0001_item_status"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_tag_lower_label", "tag", [sa.text("lower(label)")])


def downgrade():
    op.drop_index("ix_tag_lower_label", table_name="tag")
