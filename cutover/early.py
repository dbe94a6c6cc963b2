"""Work `cutover run` starts before it imports Prefect, for the flow to pick up.

The command spends 1.5 s importing Prefect and the flows, and with no Prefect API
configured up to 3 s more waiting for its temporary server. Two things the flow needs
first depend on neither, only on the server, the migrations and the baseline revision:

- the revision graph (`alembic history` + `heads`, read from the script directory;
  no database is opened), which preflight checks the revisions against;
- the baseline built from nothing (a new empty database upgraded to the baseline,
  fingerprinted, dropped), which baseline parity compares the pilot against.

`cutover run` starts both in threads meanwhile. The flow takes each when it was made
for the same server, alembic command, migrations directory (and database or
revision), and does its own otherwise, also when the early one failed: errors are then
reported by the flow in its usual words.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from cutover.alembic_runner import AlembicRunner

_lock = threading.Lock()
_pending: dict[str, tuple[tuple, Future]] = {}


def _key(alembic: AlembicRunner, detail: str) -> tuple:
    return (alembic.conn.host, alembic.conn.port, tuple(alembic.command), str(Path(alembic.cwd).resolve()), detail)


def _name(database: str) -> str:
    from cutover.plan import derived_name

    # The process id too: two commands started in the same second must not pick the same name.
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")
    return derived_name(database, "baseline", f"{stamp}_{os.getpid()}")


@contextmanager
def started(alembic: AlembicRunner, database: str, baseline_rev: str | None) -> Iterator[None]:
    """Read the revision graph and (with a baseline revision) build the baseline in threads while the
    body runs; on exit wait for both (the baseline's database is dropped whatever happened)."""
    from cutover import parity

    pool = ThreadPoolExecutor(2, thread_name_prefix="early")
    with _lock:
        _pending["history"] = (_key(alembic, database), pool.submit(alembic.history, database))
        if baseline_rev:
            _pending["baseline"] = (_key(alembic, baseline_rev),
                                    pool.submit(parity.build_baseline_fingerprint, alembic.conn, None, alembic,
                                                baseline_rev, _name(database)))
    try:
        yield
    finally:
        with _lock:
            _pending.clear()
        pool.shutdown(wait=True)


def _take(kind: str, key: tuple) -> Future | None:
    with _lock:
        entry = _pending.get(kind)
        if entry is None or entry[0] != key:
            return None
        del _pending[kind]
        return entry[1]


def take_history(alembic: AlembicRunner, database: str) -> Future | None:
    """The early `alembic history` + `heads` of this database's alembic, under way or done; once."""
    return _take("history", _key(alembic, database))


def take_baseline(alembic: AlembicRunner, baseline_rev: str):
    """The early baseline's fingerprint if it was built for the same inputs and succeeded; else None. Once."""
    future = _take("baseline", _key(alembic, baseline_rev))
    if future is None:
        return None
    try:
        return future.result()
    except Exception:
        return None
