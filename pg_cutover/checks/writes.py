"""Are writes really paused? Runbook 1 says so; this checks it, and again before production.

Two signals: a session of someone else holding a transaction id (it has written,
or is writing, right now), and the database's tuple counters moving over a short
sample. Reads by this tool move neither.

The transaction-id check is instant and runs before the backup. The counter sample
needs time (the configured seconds plus the stats flush beat) and runs beside the
backup's start: the backup is a snapshot, and nothing touches production before the
sample has passed, so a write it sees still ends the run with production untouched.
Right before the first production change `changes_since` compares the counters with
the sample's first reading, so a write anywhere between the sample's start and the
stamp (after the backup, which a rollback would lose) stops the run too.

The sample starts early (`first_reading` at preflight), so its wait overlaps preflight,
the approval and the baseline parity. An earlier start only lengthens the sample.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pg_cutover.pg.db import ConnInfo, connect

_COUNTERS = """
SELECT coalesce(tup_inserted + tup_updated + tup_deleted, 0) FROM pg_stat_database WHERE datname = %s
"""
_WRITERS = """
SELECT pid, usename, application_name, coalesce(client_addr::text, 'local'), state,
       round(extract(epoch FROM now() - xact_start)::numeric, 1), left(query, 200)
FROM pg_stat_activity
WHERE datname = %s AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL
  AND backend_type = 'client backend'  -- autovacuum's ANALYZE takes a transaction id too: not a writer
ORDER BY xact_start
"""
# Backends flush their counters at most once a second: one more beat catches the last ones.
FLUSH_BEAT = 1.0
# An early reading older than this beyond the sample (the run waited for the checklist form)
# no longer says anything about "now" when it shows writes: the sample starts again instead.
STALE_AFTER = 30.0
POLL = 0.25


@dataclass
class CounterReading:
    database: str
    tuples: int
    at: float  # time.monotonic()


@dataclass
class WriteSample:
    seconds: float
    tuples_changed: int
    writers: list[dict] = field(default_factory=list)
    restarted: bool = False  # the early reading was stale and showed writes: sampled again from scratch
    start: CounterReading | None = None  # the reading the sample counted from

    @property
    def paused(self) -> bool:
        return self.tuples_changed == 0 and not self.writers


def _counters(cur, dbname: str) -> int:
    cur.execute("SELECT pg_stat_clear_snapshot()")  # never a cached snapshot
    cur.execute(_COUNTERS, (dbname,))
    row = cur.fetchone()
    return int(row[0]) if row else 0


def first_reading(conn: ConnInfo, dbname: str) -> CounterReading | None:
    """The sample's start, taken early; None when it cannot be read (the full sample runs later)."""
    try:
        with connect(conn, "postgres") as c, c.cursor() as cur:
            return CounterReading(dbname, _counters(cur, dbname), time.monotonic())
    except Exception:
        return None


@dataclass
class SampleStart:
    """The instant part of the check, taken before the backup."""

    reading: CounterReading  # the sample counts from here
    writers: list[dict]  # sessions holding a transaction id right now
    restarted: bool = False  # the early reading was stale and showed writes: counting starts now instead


def begin_sample(conn: ConnInfo, dbname: str, seconds: float, since: CounterReading | None = None) -> SampleStart:
    """Who holds a transaction id now, and the reading to count from: `since` unless it is stale and shows writes.

    A stale early reading (the run waited for the checklist form) that shows writes is replaced
    here, before the backup starts, so that no write after the backup's start is ever excused.
    """
    needed = seconds + (FLUSH_BEAT if seconds else 0.0)
    with connect(conn, "postgres") as c, c.cursor() as cur:
        now = _counters(cur, dbname)
        fresh = CounterReading(dbname, now, time.monotonic())
        restarted = False
        if since is None or since.database != dbname:
            since = fresh
        elif now != since.tuples and fresh.at - since.at > needed + STALE_AFTER:
            since, restarted = fresh, True
        return SampleStart(since, writers_holding_xids(cur, dbname), restarted)


def finish_sample(conn: ConnInfo, dbname: str, seconds: float, start: SampleStart) -> WriteSample:
    """No tuple changed over at least `seconds` (+ the flush beat) from the start's reading, and nobody holds a transaction id.

    The counters are read every POLL seconds meanwhile: the first change ends the sample at once,
    so a long sample costs nothing when writes are going on, and nothing is lost when they are not.
    """
    since = start.reading
    deadline = since.at + seconds + (FLUSH_BEAT if seconds else 0.0)
    with connect(conn, "postgres") as c, c.cursor() as cur:
        while True:
            after = _counters(cur, dbname)
            left = deadline - time.monotonic()
            if after != since.tuples or left <= 0:
                break
            time.sleep(min(left, POLL))
        covered = time.monotonic() - since.at - (FLUSH_BEAT if seconds else 0.0)
        writers = writers_holding_xids(cur, dbname)
    changed = after - since.tuples
    return WriteSample(seconds=covered if changed else max(covered, seconds), tuples_changed=changed,
                       writers=writers, restarted=start.restarted, start=since)


def sample_writes(conn: ConnInfo, dbname: str, seconds: float, since: CounterReading | None = None) -> WriteSample:
    """Both parts at once: no tuple changed over at least `seconds` ending now, and nobody holds a transaction id."""
    return finish_sample(conn, dbname, seconds, begin_sample(conn, dbname, seconds, since))


def changes_since(conn: ConnInfo, reading: CounterReading) -> tuple[int, list[dict]]:
    """Rows inserted, updated or deleted in the reading's database since it was taken (flushed
    counters), and the sessions holding a transaction id there now: one connection for both."""
    with connect(conn, "postgres") as c, c.cursor() as cur:
        return _counters(cur, reading.database) - reading.tuples, writers_holding_xids(cur, reading.database)


def writers_holding_xids(cur, dbname: str) -> list[dict]:
    cur.execute(_WRITERS, (dbname,))
    return [
        {"pid": r[0], "user": r[1], "application": r[2], "client": r[3], "state": r[4],
         "transaction_seconds": float(r[5] or 0), "query": r[6]}
        for r in cur.fetchall()
    ]
