"""Accounts can be archived: a third lifecycle value, in batch mode, and a data migration.

The data migration reads rows to decide what to write, so it cannot be rendered
as offline SQL (`alembic upgrade --sql`), as many real data migrations cannot.
"""
from alembic import op
import sqlalchemy as sa

revision = "0002_archived_accounts"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("account") as batch:
        batch.add_column(sa.Column("archived_at", sa.DateTime(timezone=True)))
        batch.drop_constraint("ck_account_lifecycle", type_="check")
        batch.create_check_constraint("ck_account_lifecycle", "lifecycle_stage IN ('active', 'deleted', 'archived')")
    conn = op.get_bind()
    deleted = conn.execute(sa.text("SELECT id FROM account WHERE lifecycle_stage = 'deleted' ORDER BY id")).fetchall()
    for (account_id,) in deleted[: len(deleted) // 2]:
        conn.execute(sa.text("UPDATE account SET lifecycle_stage = 'archived', archived_at = created_at "
                             "WHERE id = :id"), {"id": account_id})


def downgrade():
    op.execute("UPDATE account SET lifecycle_stage = 'deleted' WHERE lifecycle_stage = 'archived'")
    with op.batch_alter_table("account") as batch:
        batch.drop_constraint("ck_account_lifecycle", type_="check")
        batch.create_check_constraint("ck_account_lifecycle", "lifecycle_stage IN ('active', 'deleted')")
        batch.drop_column("archived_at")
