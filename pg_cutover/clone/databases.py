"""The clone, the swap and the swap back, on the maintenance database.

Databases are followed by OID, which a rename keeps: wherever a crash left the names,
the swap back finds the original and the clone by what they are, not by what they are
called now.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from psycopg2 import errors as pg_errors
from psycopg2 import sql

from pg_cutover.checks.writes import CounterReading, changes_since
from pg_cutover.clone.preconditions import FILE_COPY_MAJOR
from pg_cutover.errors import StepFailed
from pg_cutover.pg import db
from pg_cutover.pg.db import ConnInfo

_SESSIONS = """
SELECT pid, usename, application_name, coalesce(host(client_addr), 'local') AS client, state
FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() ORDER BY pid
"""


def sessions_on(conn: ConnInfo, database: str) -> list[dict]:
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute(_SESSIONS, (database,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


def describe_sessions(sessions: list[dict]) -> str:
    return "; ".join(f"pid {s['pid']} {s['usename']} ({s['application_name'] or 'no name'}) from {s['client']}"
                     for s in sessions)


def oid_of(conn: ConnInfo, database: str) -> int | None:
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute("SELECT oid FROM pg_database WHERE datname = %s", (database,))
        row = cur.fetchone()
    return int(row[0]) if row else None


def name_of(conn: ConnInfo, oid: int) -> str | None:
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE oid = %s", (oid,))
        row = cur.fetchone()
    return row[0] if row else None


@dataclass
class Clone:
    name: str
    oid: int
    seconds: float
    strategy: str  # FILE_COPY, or the server's default below PostgreSQL 15


def create_clone(conn: ConnInfo, source: str, clone: str, server_major: int) -> Clone:
    """`CREATE DATABASE clone TEMPLATE source`, refused in one sentence while anyone else is connected.

    Nobody's session is ended to make room: a connected session is somebody's, and the
    operator decides. A failed copy leaves nothing behind (PostgreSQL removes its files).
    """
    others = sessions_on(conn, source)
    if others:
        raise StepFailed(f"{source} has other sessions connected ({describe_sessions(others)}), and a clone needs "
                         f"none; stop them (CUTOVER_WRITE_FREEZE=stop-service stops the backend) and run again. "
                         "Nothing was changed.")
    copy = "FILE_COPY" if server_major >= FILE_COPY_MAJOR else "default"
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(clone), sql.Identifier(source))
    if copy == "FILE_COPY":
        statement += sql.SQL(" STRATEGY FILE_COPY")
    started = time.monotonic()
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        try:
            cur.execute(statement)
        except pg_errors.ObjectInUse:
            others = sessions_on(conn, source)
            raise StepFailed(f"{source} gained a session while it was being cloned "
                             f"({describe_sessions(others) or 'it has left since'}); nothing was changed.") from None
        except pg_errors.DiskFull as exc:
            raise StepFailed(f"Cloning {source} into {clone} failed: the disk is full ({_first_line(exc)}); "
                             f"PostgreSQL removed the partial copy, {source} is untouched.") from None
        except Exception as exc:
            raise StepFailed(f"Cloning {source} into {clone} failed: {_first_line(exc)}; {source} is untouched.") \
                from None
        seconds = time.monotonic() - started
        cur.execute("SELECT oid FROM pg_database WHERE datname = %s", (clone,))
        oid = int(cur.fetchone()[0])
    return Clone(clone, oid, seconds, copy)


def swap(conn: ConnInfo, database: str, clone: str, before: str, since: CounterReading | None = None) -> None:
    """`database` aside to `before`, then `clone` into its place; the first rename undone if anything fails.

    `since`: the writes-paused reading. The first rename ends every session on the original
    (their counters are flushed as they exit), so counting again there proves that nothing was
    written after the clone was taken: a write would otherwise stay behind in `before`.
    """
    db.rename_database(conn, database, before)
    try:
        if since is not None:
            changed, writers = changes_since(conn, replace(since, database=before))
            if changed or writers:
                raise StepFailed(f"{changed} rows were written to {database} after its clone was taken"
                                 f"{' (' + describe_writers(writers) + ')' if writers else ''}; they are not in "
                                 "the clone")
        db.rename_database(conn, clone, database)
    except Exception as exc:
        try:
            db.rename_database(conn, before, database)
        except Exception:
            raise StepFailed(f"The swap failed ({_first_line(exc)}), and renaming {before} back failed too: the "
                             f"original is intact under {before}; rename it back by hand.") from None
        raise StepFailed(f"The swap failed ({_first_line(exc).rstrip('.')}); the original has its name back, with "
                         "every row it had.") from None


def describe_writers(writers: list[dict]) -> str:
    return "; ".join(f"pid {w['pid']} {w['user']} ({w['application'] or 'no name'})" for w in writers)


@dataclass
class Where:
    """Where the swap left each database, read by OID."""

    original: str | None  # the original's name now (None: it no longer exists)
    clone: str | None
    holder: int | None  # the OID holding the production name now

    def swapped_back(self, database: str) -> bool:
        return self.original == database


def where(conn: ConnInfo, database: str, original_oid: int, clone_oid: int | None) -> Where:
    holder = oid_of(conn, database)
    return Where(name_of(conn, original_oid), name_of(conn, clone_oid) if clone_oid else None, holder)


def swap_back(conn: ConnInfo, database: str, original_oid: int, clone_oid: int | None, aside: str) -> Where:
    """Give the original its name back, from wherever a swap (or a crash inside one) left the names.

    The upgraded clone, when it holds the name, goes to `aside` (kept, never dropped: it
    may hold rows written after the swap). Anything else holding the name is not touched.
    """
    now = where(conn, database, original_oid, clone_oid)
    if now.original is None:
        raise StepFailed(f"The original {database} (OID {original_oid}) no longer exists; a human is needed.")
    if now.swapped_back(database):
        return now
    if now.holder is not None:
        if now.holder != clone_oid:
            raise StepFailed(f"{database} is held by a database that is neither the original nor the clone (OID "
                             f"{now.holder}); the original is intact under {now.original}. A human is needed.")
        db.rename_database(conn, database, aside)
    try:
        db.rename_database(conn, now.original, database)
    except Exception as exc:
        raise StepFailed(f"Renaming the original {now.original} back to {database} failed ({_first_line(exc)}); it "
                         f"is intact under {now.original}.") from None
    after = where(conn, database, original_oid, clone_oid)
    if after.clone is not None:
        # A cutover killed inside a rename may have left the clone closed to connections.
        with db.connect(conn, "postgres") as c, c.cursor() as cur:
            cur.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(after.clone)))
    return after


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or exc.__class__.__name__
