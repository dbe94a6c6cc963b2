"""Direct catalog and data reads over psycopg2, for decisions and evidence.

Decisions (which revision production is at, which tables exist, how many rows)
are read from the database itself, never parsed out of a tool's output.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg2
from psycopg2 import sql

from pg_cutover.errors import ConnectionFailed

# Every session the tool opens itself (psycopg2 and the pg tools): others' sessions are told apart by it.
TOOL_APPLICATION = "pg-cutover"


@dataclass(frozen=True)
class ConnInfo:
    host: str
    port: int
    user: str
    password: str | None = field(default=None, repr=False)  # never in a repr, a log line or a traceback
    connect_timeout: int = 10

    def libpq_env(self) -> dict[str, str]:
        """Connection for pg tools through the environment, never argv."""
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGCONNECT_TIMEOUT": str(self.connect_timeout),
            "PGAPPNAME": TOOL_APPLICATION,
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
        application_name=TOOL_APPLICATION,
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
        return database_exists_cur(cur, dbname)


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


def terminate_sessions(conn: ConnInfo, dbname: str) -> int:
    with connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )
        return int(cur.fetchone()[0])


def rename_database(conn: ConnInfo, old: str, new: str) -> None:
    """Rename, first closing the door (ALLOW_CONNECTIONS false) so no session slips in between."""
    with connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(old)))
        try:
            for _ in range(50):
                cur.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    (old,),
                )
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (old,))
                if cur.fetchone()[0] == 0:
                    break
                time.sleep(0.1)
            cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))
        finally:
            name = new if database_exists_cur(cur, new) else old
            cur.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(name)))


def drop_databases_like(conn: ConnInfo, prefix: str) -> None:
    """Drop every database whose name starts with prefix (tests and benchmarks clean up with it)."""
    with connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,))
        for (name,) in cur.fetchall():
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def database_exists_cur(cur, dbname: str) -> bool:
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
    return cur.fetchone() is not None


def _lock_key(name: str) -> int:
    # A stable signed 64-bit key per database name, in a namespace of this tool's own.
    return int.from_bytes(hashlib.sha256(f"pg-cutover:{name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def advisory_lock(conn: ConnInfo, name: str, *, wait_seconds: float) -> Iterator[bool]:
    """A session-level advisory lock on the maintenance database, held for the block.

    Yields False when it could not be had within wait_seconds. Held on its own
    connection, so it survives renames of the database it protects and is freed
    by the server if this process dies.
    """
    key = _lock_key(name)
    with connect(conn, "postgres") as c, c.cursor() as cur:
        deadline = time.monotonic() + wait_seconds
        while True:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
            if cur.fetchone()[0]:
                break
            if time.monotonic() >= deadline:
                yield False
                return
            time.sleep(0.5)
        try:
            yield True
        finally:
            cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
