"""Baseline: the schema exactly as the legacy pilot's create_all built it.

Revision ID: 0001_baseline
Revises:
Create Date: 2024-01-01

Existing pilot databases are *stamped* at this revision, never upgraded to it;
it runs only on empty databases.  So it must match create_all of
beer_app/legacy_models.py object for object: unnamed constraints stay unnamed
so PostgreSQL gives them the same default names (breweries_pkey,
breweries_name_key, beers_brewery_id_fkey, ...), and integer primary keys
become SERIAL columns with their *_id_seq sequences, as create_all made them.
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0001_baseline"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "breweries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("city", sa.String(length=100), nullable=True),
        sa.Column("founded_year", sa.Integer(), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "beers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("brewery_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("style", sa.String(length=50), nullable=False),
        sa.Column("abv", sa.Numeric(precision=4, scale=2), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=True
        ),
        sa.ForeignKeyConstraint(["brewery_id"], ["breweries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("brewery_id", "name", name="uq_beers_brewery_name"),
    )
    op.create_index("ix_beers_style", "beers", ["style"], unique=False)
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("beer_id", sa.Integer(), nullable=False),
        sa.Column("reviewer", sa.String(length=100), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(["beer_id"], ["beers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reviews_beer_id", "reviews", ["beer_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_reviews_beer_id", table_name="reviews")
    op.drop_table("reviews")
    op.drop_index("ix_beers_style", table_name="beers")
    op.drop_table("beers")
    op.drop_table("breweries")
