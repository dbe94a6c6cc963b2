"""Has production changed since the cutover let go of it?

A rollback restores the pre-cutover backup; any row written to production after
the cutover ended would then survive only in the database renamed aside. So the
cutover records, at the moment it lets go of production, every user table's
cumulative tuple counters (`pg_stat_user_tables`: inserted, updated, deleted,
counted whether or not the row count moves) and its file node (which TRUNCATE,
VACUUM FULL, CLUSTER and table rewrites change, and which the counters do not
see). Later the rollback reads them again: any counter that moved, any table
rewritten, created or dropped, is a change.

The counters are statistics, not a ledger: a reset, a crash (PostgreSQL drops
them in crash recovery) or a replaced database loses them. Such cases are
reported as "cannot tell", never as "unchanged". Backends flush their counters
within about a second of a commit (writes.FLUSH_BEAT); the reading waits for
that beat.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pydantic import BaseModel, Field

from pg_cutover.checks.writes import FLUSH_BEAT, writers_holding_xids
from pg_cutover.pg.db import ConnInfo, connect

_TABLES = r"""
SELECT n.nspname || '.' || c.relname, c.relfilenode, coalesce(s.n_tup_ins, 0), coalesce(s.n_tup_upd, 0),
       coalesce(s.n_tup_del, 0)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND (n.nspname NOT IN ('pg_catalog', 'information_schema') OR %(catalogs)s)
  AND n.nspname NOT LIKE 'pg\_toast%%' AND n.nspname NOT LIKE 'pg\_temp\_%%'
"""
_DATABASE = """
SELECT d.oid, s.stats_reset FROM pg_database d LEFT JOIN pg_stat_database s ON s.datid = d.oid
WHERE d.datname = current_database()
"""


class TableActivity(BaseModel):
    filenode: int
    inserted: int
    updated: int
    deleted: int


class ProductionState(BaseModel):
    """Production's tables when the cutover (or a rollback) let go of it."""

    database: str
    taken_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    moment: str  # which step it followed, in words
    database_oid: int
    stats_reset: str | None = None
    tables: dict[str, TableActivity] = Field(default_factory=dict)


def snapshot(conn: ConnInfo, dbname: str, moment: str, *, wait_flush: bool = False,
             catalogs: bool = False) -> ProductionState:
    """dbname's counters now; `wait_flush` first waits the beat in which other backends flush theirs.

    `catalogs`: the system catalogs' counters too, which any DDL moves, committed or not.
    """
    if wait_flush:
        time.sleep(FLUSH_BEAT)
    with connect(conn, dbname) as c, c.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")  # never a cached statistics snapshot
        cur.execute(_DATABASE)
        oid, reset = cur.fetchone()
        cur.execute(_TABLES, {"catalogs": catalogs})
        tables = {name: TableActivity(filenode=node, inserted=ins, updated=upd, deleted=dele)
                  for name, node, ins, upd, dele in cur.fetchall()}
    return ProductionState(database=dbname, moment=moment, database_oid=int(oid),
                           stats_reset=reset.isoformat() if reset else None, tables=tables)


_SESSIONS_OF = """
SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = ANY(%s) AND pid <> pg_backend_pid()
"""


def settled_snapshot(conn: ConnInfo, dbname: str, moment: str, *, applications: tuple[str, ...],
                     timeout: float = 15.0, catalogs: bool = False) -> ProductionState:
    """The counters once the tool's own sessions on dbname (by application name) have ended.

    A backend flushes its counters when it exits, so none of the tool's own writes (a stamp, an
    upgrade, a restore) can land after this reading and later pass for somebody else's.
    """
    deadline = time.monotonic() + timeout
    with connect(conn, "postgres") as c, c.cursor() as cur:
        while True:
            cur.execute(_SESSIONS_OF, (dbname, list(applications)))
            if cur.fetchone()[0] == 0:
                break
            if time.monotonic() > deadline:  # still there: its last commit is flushed within the beat
                time.sleep(FLUSH_BEAT)
                break
            time.sleep(0.05)
    return snapshot(conn, dbname, moment, catalogs=catalogs)


@dataclass
class TableChange:
    table: str
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    note: str | None = None  # created, dropped, rewritten

    def sentence(self) -> str:
        parts = [f"{n} rows {verb}" for n, verb in ((self.inserted, "added"), (self.updated, "updated"),
                                                     (self.deleted, "deleted")) if n]
        return f"{self.table}: {', '.join(parts + ([self.note] if self.note else []))}."


@dataclass
class Since:
    """What changed in production after a recorded state; `unknown` says why the evidence cannot tell."""

    state: ProductionState
    changes: list[TableChange] = field(default_factory=list)
    writers: list[dict] = field(default_factory=list)  # sessions holding a transaction id right now
    unknown: str | None = None

    @property
    def clean(self) -> bool:
        return not self.changes and not self.writers and self.unknown is None

    def sentences(self) -> list[str]:
        lines = [change.sentence() for change in self.changes]
        lines += [f"session pid {w['pid']} ({w['application'] or w['user']}) is writing right now." for w in self.writers]
        if self.unknown:
            lines.append(f"Cannot tell what changed: {self.unknown}.")
        return lines


def since(conn: ConnInfo, state: ProductionState) -> Since:
    """Production (state.database) now against `state`, after the flush beat."""
    now = snapshot(conn, state.database, "now", wait_flush=True)
    with connect(conn, "postgres") as c, c.cursor() as cur:
        writers = writers_holding_xids(cur, state.database)
    result = compare(state, now)
    result.writers = writers
    return result


def compare(state: ProductionState, now: ProductionState) -> Since:
    """What moved from `state` to `now`, table by table; `unknown` when the counters cannot tell."""
    result = Since(state)
    if now.database_oid != state.database_oid:
        result.unknown = (f"{state.database} is no longer the database the cutover left (it was replaced "
                          "since), so its counters say nothing about the rows it held")
        return result
    if now.stats_reset != state.stats_reset:
        result.unknown = f"the statistics of {state.database} were reset at {now.stats_reset} since {state.taken_at}"
        return result
    backwards = []
    for table in sorted(set(state.tables) | set(now.tables)):
        before, after = state.tables.get(table), now.tables.get(table)
        if before is None:
            result.changes.append(TableChange(table, after.inserted, after.updated, after.deleted,
                                              note="table created since"))
            continue
        if after is None:
            result.changes.append(TableChange(table, note="table dropped since"))
            continue
        moved = (after.inserted - before.inserted, after.updated - before.updated, after.deleted - before.deleted)
        if min(moved) < 0:
            backwards.append(table)
            result.changes.append(TableChange(table, note="its counters went backwards"))
            continue
        note = "rewritten since (TRUNCATE, VACUUM FULL, CLUSTER or a table rewrite)" \
            if after.filenode != before.filenode else None
        if any(moved) or note:
            result.changes.append(TableChange(table, *moved, note=note))
    if backwards:
        result.unknown = (f"the counters of {', '.join(backwards)} went backwards (statistics lost in a crash "
                          "or reset)")
    return result
