"""Build the ledger's legacy pilot: create_all of legacy_models, then rows (a pure function of n)."""

from __future__ import annotations

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from ledger_app.legacy_models import Base

ROWS = """
INSERT INTO account (name, lifecycle_stage, kind)
SELECT 'account ' || i, CASE WHEN i % 5 = 0 THEN 'deleted' ELSE 'active' END,
       CASE WHEN i % 3 = 0 THEN 'company' ELSE 'person' END
FROM generate_series(1, :n) AS i;
INSERT INTO entry (account_id, status, quantity, unit_price, note)
SELECT 1 + (i % :n), (ARRAY['open', 'paid', 'void']::entry_status[])[1 + i % 3], 1 + i % 7, (i % 100) / 4.0,
       CASE WHEN i % 2 = 0 THEN 'note ' || i END
FROM generate_series(1, :n * 3) AS i;
"""


def build(url: str, accounts: int = 40) -> None:
    """create_all on the empty database at `url`, then rows."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        Base.metadata.create_all(engine)
        with engine.begin() as conn:
            for statement in ROWS.split(";"):
                if statement.strip():
                    conn.execute(text(statement), {"n": accounts})
    finally:
        engine.dispose()
