"""Test apps shaped like real ones, beside the example app (which has none of their hard parts)."""

from __future__ import annotations

import sys
from pathlib import Path

from psycopg2 import sql

from pg_cutover.pg import db
from pg_cutover.pg.db import ConnInfo

LEDGER_DIR = Path(__file__).resolve().parent / "ledger"
LEDGER_BASELINE = "0001_baseline"
LEDGER_HEAD = "0003_entry_channel"

LATE_DIR = Path(__file__).resolve().parent / "late_start"
LATE_BASELINE = "0001_item_status"
LATE_HEAD = "0002_tag_label_index"
# What an operator sets CUTOVER_BASELINE_BOOTSTRAP to for that app: its first schema, by create_all.
LATE_BOOTSTRAP = f"{sys.executable} -m late_app.bootstrap"


def ledger_url(conn: ConnInfo, dbname: str) -> str:
    from sqlalchemy.engine import URL

    return URL.create("postgresql+psycopg2", username=conn.user, password=conn.password, host=conn.host,
                      port=conn.port, database=dbname).render_as_string(hide_password=False)


def build_ledger_pilot(conn: ConnInfo, dbname: str, accounts: int = 40) -> None:
    """The ledger's legacy pilot: create_all of its legacy models on a new database, then rows."""
    if str(LEDGER_DIR) not in sys.path:
        sys.path.insert(0, str(LEDGER_DIR))
    from ledger_app import seed

    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    seed.build(ledger_url(conn, dbname), accounts)


def build_late_pilot(conn: ConnInfo, dbname: str, env: dict[str, str]) -> None:
    """The late starter's legacy pilot: its first schema, 0001's change made by hand (no alembic_version), rows."""
    import subprocess

    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    run_env = {**env, "POSTGRES_DB": dbname}
    subprocess.run([sys.executable, "-m", "late_app.bootstrap"], cwd=LATE_DIR, env=run_env, check=True,
                   capture_output=True, timeout=120)
    with db.connect(conn, dbname) as c, c.cursor() as cur:
        cur.execute("ALTER TABLE item ADD COLUMN status VARCHAR(10) DEFAULT 'new' NOT NULL")
        cur.execute("ALTER TABLE item ADD CONSTRAINT item_status_check CHECK (status IN ('new', 'sold'))")
        cur.execute("INSERT INTO item (name, status) SELECT 'item ' || i, CASE WHEN i % 4 = 0 THEN 'sold' ELSE 'new' END "
                    "FROM generate_series(1, 25) AS i")
        cur.execute("INSERT INTO tag (item_id, label) SELECT 1 + i % 25, 'Label ' || (i % 6) FROM generate_series(1, 60) AS i")
