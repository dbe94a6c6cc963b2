"""Build a legacy pilot database the way the pilot was built.

That is: ``legacy_models.Base.metadata.create_all()`` on an empty database
(so no alembic_version table), then rows.  Rows are generated on the server
with ``INSERT ... SELECT ... FROM generate_series`` so a gigabyte takes
seconds, and every value (ids and created_at included) is a pure function
of the row number, so two builds with the same N hold identical data.

    python -m beer_app.seed --db beer_pilot --reviews 20000
    python -m beer_app.seed --db beer_pilot --size-mb 1024 --drop-existing
"""

from __future__ import annotations

import argparse
import json
import re
import sys

import psycopg2.errors
from psycopg2 import sql
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from beer_app import legacy_models
from beer_app.settings import database_url

MAINTENANCE_DB = "postgres"
_DBNAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

# Measured on this machine (PostgreSQL 15, 8 kB pages, after ANALYZE):
# pg_database_size was 116_908_547 bytes at N=100_000, 1_096_965_479 at
# 1_000_000 and 2_185_936_231 at 2_000_000 reviews, a straight line
# size = EMPTY + N * PER_REVIEW.  PER_REVIEW covers a review row (~1 kB of
# comment), its two indexes, and its share of beers (N/8) and breweries (N/40).
# EMPTY is a fresh database from template1 plus the empty schema, so targets
# below about 8 MiB cannot be met.
BYTES_PER_REVIEW = 1089
EMPTY_DATABASE_BYTES = 8_012_000
MIB = 1024 * 1024


def validate_dbname(dbname: str) -> str:
    """Return ``dbname`` if it is a plain identifier; refuse anything else."""
    if not isinstance(dbname, str) or not _DBNAME.fullmatch(dbname):
        raise ValueError(
            f"refusing database name {dbname!r}: use [A-Za-z_][A-Za-z0-9_]{{0,62}}"
        )
    return dbname


def _admin(statement: sql.Composable) -> None:
    """Run one statement on the maintenance database, outside a transaction."""
    engine = create_engine(database_url(MAINTENANCE_DB), poolclass=NullPool)
    try:
        raw = engine.raw_connection()
        try:
            conn = raw.driver_connection
            conn.autocommit = True  # CREATE/DROP DATABASE refuse to run in a transaction
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            raw.close()
    finally:
        engine.dispose()


def create_database(dbname: str, *, drop_existing: bool = False) -> None:
    """Create an empty database; with ``drop_existing`` replace one of that name."""
    name = sql.Identifier(validate_dbname(dbname))
    if drop_existing:
        drop_database(dbname)
    try:
        _admin(sql.SQL("CREATE DATABASE {}").format(name))
    except psycopg2.errors.DuplicateDatabase:
        raise FileExistsError(
            f"database {dbname!r} already exists (pass drop_existing=True / --drop-existing)"
        ) from None


def drop_database(dbname: str) -> None:
    """Drop ``dbname`` if it exists, disconnecting its sessions first."""
    name = sql.Identifier(validate_dbname(dbname))
    _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


def reviews_for_size(size_mb: float) -> int:
    """Review count whose pilot database weighs about ``size_mb`` MiB."""
    return max(1, int((size_mb * MIB - EMPTY_DATABASE_BYTES) / BYTES_PER_REVIEW))


def row_counts(reviews: int) -> dict[str, int]:
    """Rows per table for N reviews: reviews are the bulk, as in the real pilot."""
    return {
        "breweries": max(1, reviews // 40),
        "beers": max(1, reviews // 8),
        "reviews": reviews,
    }


# Names are chosen to exercise the slug backfill of migration 0002 with
# k = i / 8: rows 8k, 8k+1, 8k+2 all slugify to 'brew-co-<k>' (a collision
# group with punctuation and uppercase); 8k+4 has no ASCII letters at all,
# so it falls back to 'brewery' (one big group whose losers become
# 'brewery-<id>'); 8k+5 is named 'Brewery <id of that row>', so its own slug
# collides with a suffixed one and needs the second pass; the rest carry
# spaces, '&', apostrophes, parentheses and non-ASCII letters.
INSERT_BREWERIES = """
INSERT INTO breweries (id, name, city, founded_year, is_active, created_at)
SELECT i,
       CASE i % 8
         WHEN 0 THEN 'Brew Co. #' || (i / 8)
         WHEN 1 THEN 'brew-co-' || (i / 8)
         WHEN 2 THEN 'BREW CO ' || (i / 8) || '!'
         WHEN 3 THEN 'The ' || upper(substr(md5(i::text), 1, 6)) || ' Hop & Malt Works ' || i
         WHEN 4 THEN translate(i::text, '0123456789', 'αβγδεζηθικ') || ' Ζυθοποιία'
         WHEN 5 THEN 'Brewery ' || (i - 1)
         WHEN 6 THEN '  Ölbräu ' || i || '  '
         ELSE 'Brasserie d''' || upper(substr(md5(i::text), 1, 4)) || ' (' || i || ')'
       END,
       CASE WHEN i % 7 = 0 THEN NULL
            ELSE (ARRAY['Portland', 'München', 'Bruxelles', 'Denver', 'Praha', 'Asheville'])[1 + i % 6]
       END,
       CASE WHEN i % 9 = 0 THEN NULL ELSE 1800 + (i * 37) % 224 END,
       i % 11 <> 0,
       timestamptz '2015-01-01 00:00:00+00' + i * interval '1 hour'
  FROM generate_series(1, :breweries) AS i
"""

INSERT_BEERS = """
INSERT INTO beers (id, brewery_id, name, style, abv, created_at)
SELECT j,
       1 + (j - 1) % :breweries,
       (ARRAY['Hazy', 'Golden', 'Midnight', 'Hoppy', 'Old', 'Wild', 'Little', 'Imperial'])[1 + j % 8]
         || ' ' || (ARRAY['Fox', 'Anchor', 'Harvest', 'Owl', 'River', 'Lantern', 'Thistle'])[1 + j % 7]
         || ' No. ' || j,
       (ARRAY['IPA', 'Stout', 'Pilsner', 'Saison', 'Porter', 'Lager', 'Sour', 'Wheat',
              'Pale Ale', 'Barleywine'])[1 + (j * 3) % 10],
       CASE WHEN j % 13 = 0 THEN NULL ELSE round(3.5 + ((j * 7) % 90) / 10.0, 2) END,
       timestamptz '2016-01-01 00:00:00+00' + j * interval '10 minutes'
  FROM generate_series(1, :beers) AS j
"""

# Review text: an md5 of the review number (so every comment is distinct)
# followed by a 300..1699 byte window of TASTING_NOTES (NULL for every 10th
# review).  Long enough that a gigabyte is about a million rows, short enough
# that rows stay under PostgreSQL's ~2 kB TOAST threshold, so the size is
# linear in N; prose so that compressed dumps shrink like real data would.
# The window is cut from bytea: substr() on text in a UTF8 database walks
# characters and made generation five times slower.
_NOTE_SENTENCES = (
    "Hazy golden pour with a dense white head that lingers.",
    "Aroma of citrus peel, pine resin and ripe mango over bready malt.",
    "Medium body, soft carbonation, a crisp bitter finish that invites another sip.",
    "Roasted coffee and dark chocolate up front, a little smoke at the end.",
    "Tart cherry and oak, funky but balanced; pairs well with a sharp cheese.",
    "Clean lager character, grainy sweetness, noble hop spice, very drinkable.",
    "Would order again at the taproom; the can version tasted a bit flat.",
    "Banana and clove esters, wheat softness, a squeeze of lemon is optional.",
    "Boozy warmth, toffee and dried fruit; one to share on a cold evening.",
)
TASTING_NOTES = " ".join(_NOTE_SENTENCES * 5)
assert TASTING_NOTES.isascii() and len(TASTING_NOTES) >= 211 + 1699

INSERT_REVIEWS = """
INSERT INTO reviews (id, beer_id, reviewer, rating, comment, created_at)
SELECT r,
       1 + (r::bigint * 7919) % :beers,
       'user_' || (r % 4999),
       (ARRAY[1, 2, 3, 3, 4, 4, 4, 5, 5, 5])[1 + (r::bigint * 104729 / 7) % 10],
       CASE WHEN r % 10 = 0 THEN NULL
            ELSE md5(r::text) || ' ' || convert_from(
                   substr(convert_to(:notes, 'UTF8'), 1 + (r * 7) % 211, 300 + (r * 13) % 1400),
                   'UTF8')
       END,
       timestamptz '2018-01-01 00:00:00+00' + r * interval '7 seconds'
  FROM generate_series(1, :reviews) AS r
"""


def _load_reviews(conn: Connection, params: dict[str, object]) -> None:
    """Bulk-insert the reviews with their foreign key and beer_id index set aside.

    Per-row foreign-key triggers and random-order index inserts were over
    half of the load time.  Both are re-created verbatim from the catalog's
    own definitions (pg_get_constraintdef / pg_get_indexdef), under the names
    create_all gave them, so pg_dump cannot tell; re-adding the foreign key
    validates every row in one pass, so the data is still checked.
    """
    fk_name, fk_def = conn.execute(
        text(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'reviews'::regclass AND contype = 'f'"
        )
    ).one()
    index_def = conn.execute(
        text("SELECT pg_get_indexdef('ix_reviews_beer_id'::regclass)")
    ).scalar_one()
    conn.execute(text(f'ALTER TABLE reviews DROP CONSTRAINT "{fk_name}"'))
    conn.execute(text("DROP INDEX ix_reviews_beer_id"))
    conn.execute(text(INSERT_REVIEWS), params)
    conn.execute(text(index_def))
    conn.execute(text(f'ALTER TABLE reviews ADD CONSTRAINT "{fk_name}" {fk_def}'))


def build_legacy_pilot(
    dbname: str,
    reviews: int = 2000,
    *,
    drop_existing: bool = False,
    size_mb: float | None = None,
) -> dict[str, int]:
    """Create ``dbname`` as the legacy pilot and fill it; return rows per table.

    ``size_mb`` (MiB), when given, overrides ``reviews`` with the count that
    makes the database about that big.
    """
    n = reviews_for_size(size_mb) if size_mb is not None else int(reviews)
    if n < 1:
        raise ValueError("reviews must be at least 1")
    counts = row_counts(n)
    create_database(dbname, drop_existing=drop_existing)

    try:
        return _fill(dbname, counts)
    except BaseException:
        # A half-built pilot would pass for a real one later: remove it.
        drop_database(dbname)
        raise


def _fill(dbname: str, counts: dict[str, int]) -> dict[str, int]:
    """create_all plus rows, in one transaction; then ANALYZE and count."""
    engine = create_engine(database_url(dbname), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            legacy_models.Base.metadata.create_all(conn)
            conn.execute(text(INSERT_BREWERIES), counts)
            conn.execute(text(INSERT_BEERS), counts)
            _load_reviews(conn, {**counts, "notes": TASTING_NOTES})
            # Explicit ids bypassed the sequences; leave them where the app expects.
            for table in counts:
                conn.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}")
                )
        with engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
            return {
                table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in counts
            }
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m beer_app.seed",
        description="Build a legacy (create_all, no Alembic) beer pilot database. "
        "The server comes from POSTGRES_HOST/PORT/USER/PASSWORD.",
    )
    parser.add_argument("--db", required=True, help="name of the database to create")
    volume = parser.add_mutually_exclusive_group()
    volume.add_argument("--reviews", type=int, default=2000, help="review rows (default 2000)")
    volume.add_argument("--size-mb", type=float, help="target database size in MiB")
    parser.add_argument("--drop-existing", action="store_true", help="replace the database if it exists")
    args = parser.parse_args(argv)
    try:
        counts = build_legacy_pilot(
            args.db, args.reviews, drop_existing=args.drop_existing, size_mb=args.size_mb
        )
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
