"""Data migration: add breweries.slug and backfill it from the name.

Revision ID: 0002_brewery_slug
Revises: 0001_baseline
Create Date: 2024-02-01

The backfill is the SQL twin of beer_app.slug.slugify / expected_slugs (the
tests compare them row by row), and it runs entirely on the server so it
stays one statement per pass however many breweries there are:
  * only ASCII A-Z are lowercased (translate, not lower(): lower() follows
    the database's ctype, Python's str.lower() follows Unicode);
  * every run of characters outside [a-z0-9] becomes one '-', and leading
    or trailing '-' are trimmed; an empty result becomes 'brewery';
  * among rows sharing a slug, all but the smallest id get '-<id>' appended,
    repeated until no two rows share one (a suffixed slug can hit another
    row's plain slug, e.g. 'brewery' + '-12' vs a brewery named "Brewery 12").
The loop is a DO block rather than Python so that offline (--sql) output
contains the whole migration.
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0002_brewery_slug"
down_revision: Union[str, Sequence[str], None] = "0001_baseline"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

BACKFILL_BASE = """
UPDATE breweries
   SET slug = coalesce(
         nullif(
           btrim(
             regexp_replace(
               translate(name, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'),
               '[^a-z0-9]+', '-', 'g'),
             '-'),
           ''),
         'brewery')
"""

DEDUPLICATE = """
DO $$
DECLARE
    changed bigint;
BEGIN
    LOOP
        UPDATE breweries AS b
           SET slug = b.slug || '-' || b.id
          FROM (SELECT id, row_number() OVER (PARTITION BY slug ORDER BY id) AS rank
                  FROM breweries) AS d
         WHERE d.id = b.id AND d.rank > 1;
        GET DIAGNOSTICS changed = ROW_COUNT;
        EXIT WHEN changed = 0;
    END LOOP;
END
$$
"""


def upgrade() -> None:
    op.add_column("breweries", sa.Column("slug", sa.String(length=220), nullable=True))
    op.execute(BACKFILL_BASE)
    op.execute(DEDUPLICATE)
    op.alter_column("breweries", "slug", existing_type=sa.String(length=220), nullable=False)
    op.create_unique_constraint("uq_breweries_slug", "breweries", ["slug"])


def downgrade() -> None:
    op.drop_constraint("uq_breweries_slug", "breweries", type_="unique")
    op.drop_column("breweries", "slug")
