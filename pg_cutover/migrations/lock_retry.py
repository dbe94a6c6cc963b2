"""A production stamp or upgrade that only lost a race for a lock is tried again, safely.

Every migration session runs with `lock_timeout` (CUTOVER_LOCK_TIMEOUT), so a
session holding a lock on a table the migration alters makes the migration fail
fast (SQLSTATE 55P03) instead of queueing every query of the app behind it. Such
a failure is worth another attempt only when the attempt provably committed
nothing. For an `atomic` command (a stamp; an upgrade whose offline SQL is one
transaction, no autocommit block) that is `alembic_version` as before: the
failure rolled the whole transaction back. For any other command, also no
counter of any table may have moved, the system catalogs' included (any DDL
moves those, committed or not), which only an attempt that failed on its first
lock passes. Anything else is for the rollback. Each attempt is recorded with
the sessions that held locks on the database at that moment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pg_cutover.checks import changes
from pg_cutover.errors import CommandFailed
from pg_cutover.migrations import safety
from pg_cutover.migrations.runner import MIGRATION_APPLICATION
from pg_cutover.pg import db
from pg_cutover.pg.db import ConnInfo
from pg_cutover.process import CommandResult

_LOCK_TIMEOUT = ("LockNotAvailable", "55P03", "canceling statement due to lock timeout")


def lock_timed_out(exc: CommandFailed) -> bool:
    text = f"{exc} {exc.stderr or ''}"
    return any(marker in text for marker in _LOCK_TIMEOUT)


@dataclass
class Attempt:
    number: int
    started_at: str
    seconds: float
    outcome: str
    holders: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"attempt": self.number, "started_at": self.started_at, "seconds": round(self.seconds, 2),
                "outcome": self.outcome, "holders": self.holders}


def _state(conn: ConnInfo, dbname: str, atomic: bool) -> tuple:
    """What an attempt could have committed: the revision; unless atomic, every table's counters and file node."""
    if atomic:
        return (db.alembic_revision(conn, dbname),)
    counters = changes.settled_snapshot(conn, dbname, "lock retry", applications=(MIGRATION_APPLICATION,),
                                        catalogs=True)
    # ANALYZE (autovacuum's too) rewrites pg_statistic: not a change the migration made.
    tables = {name: t for name, t in counters.tables.items() if name != "pg_catalog.pg_statistic"}
    return db.alembic_revision(conn, dbname), counters.database_oid, counters.stats_reset, tables


def with_lock_retries(command: Callable[[], CommandResult], conn: ConnInfo, dbname: str, *, retries: int,
                      first_wait: float, on_attempt: Callable[[Attempt], object], atomic: bool = False,
                      sleep: Callable[[float], object] = time.sleep) -> CommandResult:
    """Run `command`; after a lock timeout that provably changed nothing, wait and run it again.

    The wait doubles from `first_wait`; at most `retries` more attempts. Every attempt is passed
    to `on_attempt`. The last failure, or one that may have changed something, is raised as is.
    """
    before = _state(conn, dbname, atomic) if retries else None
    for number in range(1, retries + 2):
        started, clock = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.monotonic()
        try:
            result = command()
        except CommandFailed as exc:
            if not lock_timed_out(exc):
                on_attempt(Attempt(number, started, time.monotonic() - clock, f"failed: {exc}"))
                raise
            holders = _holders(conn, dbname)
            if number > retries:
                on_attempt(Attempt(number, started, time.monotonic() - clock,
                                   "lock timeout; no attempts left", holders))
                raise
            if _state(conn, dbname, atomic) != before:
                on_attempt(Attempt(number, started, time.monotonic() - clock,
                                   "lock timeout after changing something; not tried again", holders))
                raise
            wait = first_wait * 2 ** (number - 1)
            on_attempt(Attempt(number, started, time.monotonic() - clock,
                               f"lock timeout, nothing changed; trying again in {wait:g} s", holders))
            sleep(wait)
            continue
        on_attempt(Attempt(number, started, time.monotonic() - clock, "succeeded"))
        return result
    raise AssertionError("unreachable: the last attempt returns or raises")


def _holders(conn: ConnInfo, dbname: str) -> list[dict]:
    try:
        return safety.blocking_sessions(conn, dbname, min_xact_seconds=0)
    except Exception as exc:  # the evidence of who held the lock is worth less than the retry itself
        return [{"error": f"could not read the sessions: {exc}"}]
