"""Review constraints: rating must be 1..5; index reviews by creation time.

Revision ID: 0003_review_constraints
Revises: 0002_brewery_slug
Create Date: 2024-03-01

The check constraint validates every existing row (the legacy app only
checked ratings in Python); a pilot with a bad rating fails here, inside the
migration transaction, rather than after the cutover.
"""
from __future__ import annotations

from typing import Sequence, Union

from alembic import op

revision: str = "0003_review_constraints"
down_revision: Union[str, Sequence[str], None] = "0002_brewery_slug"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_check_constraint("ck_reviews_rating_range", "reviews", "rating BETWEEN 1 AND 5")
    op.create_index("ix_reviews_created_at", "reviews", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_reviews_created_at", table_name="reviews")
    op.drop_constraint("ck_reviews_rating_range", "reviews", type_="check")
