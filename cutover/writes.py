"""Are writes really paused? Runbook 1 says so; this checks it before the backup.

Two signals: a session of someone else holding a transaction id (it has written,
or is writing, right now), and the database's tuple counters moving over a short
sample. Reads by this tool move neither.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from cutover.db import ConnInfo, connect

_COUNTERS = """
SELECT coalesce(tup_inserted + tup_updated + tup_deleted, 0) FROM pg_stat_database WHERE datname = %s
"""
_WRITERS = """
SELECT pid, usename, application_name, coalesce(client_addr::text, 'local'), state,
       round(extract(epoch FROM now() - xact_start)::numeric, 1), left(query, 200)
FROM pg_stat_activity
WHERE datname = %s AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL
ORDER BY xact_start
"""


@dataclass
class WriteSample:
    seconds: float
    tuples_changed: int
    writers: list[dict] = field(default_factory=list)

    @property
    def paused(self) -> bool:
        return self.tuples_changed == 0 and not self.writers


def sample_writes(conn: ConnInfo, dbname: str, seconds: float) -> WriteSample:
    with connect(conn, "postgres") as c, c.cursor() as cur:
        def counters() -> int:
            cur.execute("SELECT pg_stat_clear_snapshot()")  # never a cached snapshot
            cur.execute(_COUNTERS, (dbname,))
            row = cur.fetchone()
            return int(row[0]) if row else 0

        before = counters()
        time.sleep(seconds)
        # Backends flush their counters at most once a second: one more beat catches the last ones.
        time.sleep(1.0 if seconds else 0.0)
        after = counters()
        cur.execute(_WRITERS, (dbname,))
        writers = [
            {"pid": r[0], "user": r[1], "application": r[2], "client": r[3], "state": r[4],
             "transaction_seconds": float(r[5] or 0), "query": r[6]}
            for r in cur.fetchall()
        ]
    return WriteSample(seconds=seconds, tuples_changed=after - before, writers=writers)
