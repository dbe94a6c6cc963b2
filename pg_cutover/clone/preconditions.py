"""What a clone needs from the server, read before anything changes.

`CREATE DATABASE ... TEMPLATE` copies the database's files: the role must be allowed to
create databases, nothing may be bound to the database by name that the copy would leave
behind (logical replication slots and subscriptions), and the copy needs as much room in
each tablespace as the database takes there. Each unmet precondition is one sentence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from pg_cutover.pg import db
from pg_cutover.pg.db import ConnInfo

MIN_SERVER_MAJOR = 13  # the oldest major whose CREATE DATABASE and catalogs the clone strategy was tested on
FILE_COPY_MAJOR = 15  # CREATE DATABASE ... STRATEGY exists from here on


@dataclass
class Tablespace:
    name: str
    location: str  # the directory on the server ('' when it could not be read)
    used_bytes: int  # what the database takes in it
    free_bytes: int | None = None  # None: the tool cannot see that directory
    unseen: str = ""  # why the free space is unknown


@dataclass
class CloneFacts:
    database: str
    server_major: int
    may_create: bool
    slots: list[str] = field(default_factory=list)
    subscriptions: list[str] = field(default_factory=list)
    tablespaces: list[Tablespace] = field(default_factory=list)

    def refusals(self) -> list[str]:
        """One sentence per unmet precondition; empty when the clone may go ahead."""
        out = []
        if self.server_major < MIN_SERVER_MAJOR:
            out.append(f"CUTOVER_STRATEGY=clone needs PostgreSQL {MIN_SERVER_MAJOR} or newer, and the server is "
                       f"{self.server_major}; use CUTOVER_STRATEGY=runbook.")
        if not self.may_create:
            out.append("CUTOVER_STRATEGY=clone needs a role that may create databases (CREATEDB), and "
                       "POSTGRES_USER has not got it; grant it or use CUTOVER_STRATEGY=runbook.")
        if self.slots:
            out.append(f"{self.database} has logical replication slots bound to it ({', '.join(self.slots)}), "
                       "which a clone would not carry; drop them or use CUTOVER_STRATEGY=runbook.")
        if self.subscriptions:
            out.append(f"{self.database} has subscriptions ({', '.join(self.subscriptions)}), which a clone would "
                       "copy as a second subscriber; drop them or use CUTOVER_STRATEGY=runbook.")
        for space in self.tablespaces:
            if space.free_bytes is not None and space.free_bytes < space.used_bytes:
                out.append(f"Tablespace {space.name} ({space.location}) has {_mb(space.free_bytes)} free and the "
                           f"clone of {self.database} needs {_mb(space.used_bytes)} there; free some space or use "
                           "CUTOVER_STRATEGY=runbook.")
        return out

    def unseen(self) -> list[str]:
        """Free space the tool could not check, with why: a warning, never a pass."""
        return [f"free space in tablespace {s.name} not checked: {s.unseen}" for s in self.tablespaces
                if s.free_bytes is None]


def read_facts(conn: ConnInfo, database: str) -> CloneFacts:
    """Read-only; the session on `database` (for its tablespaces) is closed before this returns."""
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute("SELECT current_setting('server_version_num')::int / 10000, "
                    "rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user")
        major, may_create = cur.fetchone()
        cur.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s AND slot_type = 'logical' "
                    "ORDER BY 1", (database,))
        slots = [r[0] for r in cur.fetchall()]
        subscriptions = _subscriptions(cur, database)
    tablespaces = _tablespaces(conn, database)
    local = _is_local(conn.host)
    for space in tablespaces:
        _free_space(space, local)
    return CloneFacts(database, major, bool(may_create), slots, subscriptions, tablespaces)


def _subscriptions(cur, database: str) -> list[str]:
    cur.execute("SELECT s.subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid "
                "WHERE d.datname = %s ORDER BY 1", (database,))
    return [r[0] for r in cur.fetchall()]


_SPACE_USE = """
SELECT t.spcname, pg_tablespace_location(t.oid), u.bytes
FROM (SELECT coalesce(nullif(c.reltablespace, 0), d.dattablespace) AS spc,
             sum(pg_relation_size(c.oid, 'main') + pg_relation_size(c.oid, 'fsm')
                 + pg_relation_size(c.oid, 'vm')) AS bytes
      FROM pg_class c, pg_database d
      WHERE d.datname = current_database() AND c.relpersistence <> 't'
      GROUP BY 1) u
JOIN pg_tablespace t ON t.oid = u.spc
ORDER BY 1
"""


def _tablespaces(conn: ConnInfo, database: str) -> list[Tablespace]:
    """Each tablespace holding part of the database, with the bytes its relations take there."""
    with db.connect(conn, database) as c, c.cursor() as cur:
        cur.execute(_SPACE_USE)
        rows = cur.fetchall()
        out = []
        for name, location, used in rows:
            if not location:  # pg_default: the data directory, readable by privileged roles only
                try:
                    cur.execute("SELECT current_setting('data_directory')")
                    location = cur.fetchone()[0]
                except Exception:
                    location = ""
            out.append(Tablespace(name, location, int(used or 0)))
    return out


def _free_space(space: Tablespace, local: bool) -> None:
    if not local:
        space.unseen = "the server is not on this machine"
    elif not space.location:
        space.unseen = "its directory could not be read (the role may not read data_directory)"
    elif not os.path.isdir(space.location):
        space.unseen = f"{space.location} is not visible from here"
    else:
        stat = os.statvfs(space.location)
        space.free_bytes = stat.f_bavail * stat.f_frsize


def _is_local(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("/")


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB"
