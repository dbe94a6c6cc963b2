"""The baseline built from nothing, started by `cutover run` before it imports Prefect.

The command spends 1.5 s importing Prefect and the flows, and with no Prefect API
configured up to 3 s more waiting for its temporary server. The baseline that
baseline parity compares the pilot against needs neither: it depends only on the
server, the migrations and the baseline revision. `cutover run` builds it in a
thread meanwhile (a new empty database upgraded to the baseline, fingerprinted,
dropped), and the flow's `baseline-build` task takes the result when it was built
from the same server, alembic command, migrations directory and revision. In any
other case, and when this early build failed, the task builds its own, so errors
are reported by the flow in its usual words.
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
_pending: tuple[tuple, Future] | None = None


def _key(alembic: AlembicRunner, baseline_rev: str) -> tuple:
    return (alembic.conn.host, alembic.conn.port, tuple(alembic.command), str(Path(alembic.cwd).resolve()),
            baseline_rev)


def _name(database: str) -> str:
    from cutover.plan import derived_name

    # The process id too: two commands started in the same second must not pick the same name.
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")
    return derived_name(database, "baseline", f"{stamp}_{os.getpid()}")


@contextmanager
def baseline_build(alembic: AlembicRunner, database: str, baseline_rev: str | None) -> Iterator[None]:
    """Build the baseline in a thread while the body runs; on exit wait for it (its database is dropped)."""
    global _pending
    if not baseline_rev:
        yield
        return
    from cutover import parity

    pool = ThreadPoolExecutor(1, thread_name_prefix="early-baseline")
    future = pool.submit(parity.build_baseline_fingerprint, alembic.conn, None, alembic, baseline_rev,
                         _name(database))
    with _lock:
        _pending = (_key(alembic, baseline_rev), future)
    try:
        yield
    finally:
        with _lock:
            _pending = None
        pool.shutdown(wait=True)


def take_baseline(alembic: AlembicRunner, baseline_rev: str):
    """The early build's fingerprint if it was built for the same inputs and succeeded; else None. Once."""
    global _pending
    with _lock:
        if _pending is None or _pending[0] != _key(alembic, baseline_rev):
            return None
        _, future = _pending
        _pending = None
    try:
        return future.result()
    except Exception:
        return None
