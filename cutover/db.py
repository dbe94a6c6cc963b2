"""Direct catalog and data reads over psycopg2, for decisions and evidence.

Decisions (which revision production is at, which tables exist, how many rows)
are read from the database itself, never parsed out of a tool's output.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg2
from psycopg2 import sql

from cutover.errors import ConnectionFailed


@dataclass(frozen=True)
class ConnInfo:
    host: str
    port: int
    user: str
    password: str | None = None
    connect_timeout: int = 10

    def libpq_env(self) -> dict[str, str]:
        """Connection for pg tools through the environment, never argv."""
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGCONNECT_TIMEOUT": str(self.connect_timeout),
            "PGAPPNAME": "pg-cutover",
        }
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def where(self) -> str:
        return f"{self.host}:{self.port}"


@contextmanager
def connect(conn: ConnInfo, dbname: str, *, autocommit: bool = True) -> Iterator[psycopg2.extensions.connection]:
    connection = psycopg2.connect(
        host=conn.host,
        port=conn.port,
        user=conn.user,
        password=conn.password or None,
        dbname=dbname,
        connect_timeout=conn.connect_timeout,
        application_name="pg-cutover",
    )
    connection.autocommit = autocommit
    try:
        yield connection
    finally:
        connection.close()


def probe(conn: ConnInfo, dbname: str) -> int:
    """Connect once and return server_version_num, or raise one clear sentence."""
    try:
        with connect(conn, dbname) as c, c.cursor() as cur:
            cur.execute("SHOW server_version_num")
            return int(cur.fetchone()[0])
    except psycopg2.OperationalError as exc:
        reason = " ".join(str(exc).split()) or exc.__class__.__name__
        raise ConnectionFailed(
            f"POSTGRES_DB={dbname!r} at POSTGRES_HOST/POSTGRES_PORT {conn.where()} could not be reached as "
            f"POSTGRES_USER {conn.user!r}: {reason}"
        ) from None


def database_exists(conn: ConnInfo, dbname: str) -> bool:
    with connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
        return cur.fetchone() is not None


def list_tables(conn: ConnInfo, dbname: str, *, include_alembic: bool = False) -> list[str]:
    """User tables as schema-qualified names, sorted."""
    with connect(conn, dbname) as c, c.cursor() as cur:
        cur.execute(
            """
            SELECT n.nspname, c.relname
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p')
              AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg_toast%%'
            ORDER BY 1, 2
            """
        )
        names = [f"{schema}.{table}" for schema, table in cur.fetchall()]
    if not include_alembic:
        names = [n for n in names if n.split(".", 1)[1] != "alembic_version"]
    return names


def _table_ident(qualified: str) -> sql.Composed:
    schema, table = qualified.split(".", 1)
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def row_counts(conn: ConnInfo, dbname: str, tables: list[str] | None = None) -> dict[str, int]:
    """Exact count(*) per table; writes are paused, so this is the truth to compare against."""
    tables = tables if tables is not None else list_tables(conn, dbname)
    counts: dict[str, int] = {}
    with connect(conn, dbname) as c, c.cursor() as cur:
        for table in tables:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(_table_ident(table)))
            counts[table] = int(cur.fetchone()[0])
    return counts


def table_checksums(conn: ConnInfo, dbname: str, tables: list[str] | None = None) -> dict[str, str]:
    """md5 over every row's text form in a stable order: equal means the same data."""
    tables = tables if tables is not None else list_tables(conn, dbname)
    sums: dict[str, str] = {}
    with connect(conn, dbname) as c, c.cursor() as cur:
        for table in tables:
            cur.execute(
                sql.SQL(
                    "SELECT coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), md5('')) FROM {} AS t"
                ).format(_table_ident(table))
            )
            sums[table] = cur.fetchone()[0]
    return sums


def alembic_revision(conn: ConnInfo, dbname: str) -> str | None:
    """The revision in alembic_version, or None for a database Alembic never touched."""
    with connect(conn, dbname) as c, c.cursor() as cur:
        cur.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL")
        if not cur.fetchone()[0]:
            return None
        cur.execute("SELECT version_num FROM public.alembic_version ORDER BY 1")
        rows = [r[0] for r in cur.fetchall()]
    if not rows:
        return None
    return ",".join(rows)
