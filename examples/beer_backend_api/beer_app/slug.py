"""Brewery slugs: the Python twin of the SQL backfill in migration 0002.

Only ASCII letters are lowercased.  PostgreSQL's lower() depends on the
database's ctype while str.lower() follows Unicode, and a few non-ASCII
letters lowercase to ASCII ones (KELVIN SIGN -> 'k'); restricting to ASCII
keeps Python and SQL identical on every server.  Every other non-[a-z0-9]
character becomes a separator anyway, so nothing visible is lost.
"""

from __future__ import annotations

import re
import string
from collections import defaultdict

FALLBACK = "brewery"
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_SEPARATORS = re.compile(r"[^a-z0-9]+")


def slugify(name: str) -> str:
    """Lowercase ASCII, collapse every run of other characters to '-', trim '-'."""
    slug = _SEPARATORS.sub("-", name.translate(_ASCII_LOWER)).strip("-")
    return slug or FALLBACK


def expected_slugs(rows: list[tuple[int, str]]) -> dict[int, str]:
    """Final slug per brewery id, as migration 0002 assigns them.

    Rows sharing a slug keep it only for the smallest id; the others get
    ``-<id>`` appended.  A suffixed slug can land on another row's slug
    (``'brewery' + '-12'`` vs a brewery named "Brewery 12"), so the rule is
    repeated until the slugs are unique.  Each pass updates all losers from
    the same snapshot, exactly like the single UPDATE per pass in SQL.
    It terminates: a row only changes when it equals a smaller id's slug, and
    every change makes it longer.
    """
    slugs = {row_id: slugify(name) for row_id, name in rows}
    while True:
        groups: dict[str, list[int]] = defaultdict(list)
        for row_id, slug in slugs.items():
            groups[slug].append(row_id)
        losers = [i for ids in groups.values() if len(ids) > 1 for i in sorted(ids)[1:]]
        if not losers:
            return slugs
        for row_id in losers:
            slugs[row_id] = f"{slugs[row_id]}-{row_id}"
