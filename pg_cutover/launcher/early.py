"""The baseline built from nothing, started by `cutover run` before it imports Prefect.

The command spends 1.5 s importing Prefect and the flows, and with no Prefect API
configured up to 3 s more waiting for its temporary server. The baseline that
baseline parity compares the pilot against needs neither: it depends only on the
server, the migrations and the baseline revision. `cutover run` builds it in a
thread meanwhile (pg_cutover.checks.baseline), and the flow's `baseline-build` task takes
the result when it was built from the same server, alembic command, migrations
directory, revision and bootstrap command. In any other case, and when this early build failed, the task builds its own, so errors
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
from typing import TYPE_CHECKING

from pg_cutover.migrations.runner import AlembicRunner
from pg_cutover.pg import db

if TYPE_CHECKING:
    from pg_cutover.toolkit import Toolkit

_lock = threading.Lock()
_pending: tuple[tuple, Future] | None = None


def _key(alembic: AlembicRunner, baseline_rev: str, bootstrap: list[str] | None) -> tuple:
    return (alembic.conn.host, alembic.conn.port, tuple(alembic.command), str(Path(alembic.cwd).resolve()),
            baseline_rev, tuple(bootstrap or ()))


def _name(database: str) -> str:
    from pg_cutover.runbook.plan import derived_name

    # The process id too: two commands started in the same second must not pick the same name.
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")
    return derived_name(database, "baseline", f"{stamp}_{os.getpid()}")


def _build(kit: "Toolkit", database: str, baseline_rev: str):
    from pg_cutover.checks import baseline
    # pg tools as preflight will pick them, so the baseline comes in normal form too (pg_cutover.checks.equivalence)
    pg = kit.pg_client(db.probe(kit.conn, "postgres") // 10000)
    return baseline.build(kit.conn, pg, kit.alembic, baseline_rev, _name(database),
                          kit.settings.baseline_bootstrap_argv)


@contextmanager
def baseline_build(kit: "Toolkit", database: str, baseline_rev: str | None) -> Iterator[None]:
    """Build the baseline in a thread while the body runs; on exit wait for it (its database is dropped)."""
    global _pending
    if not baseline_rev:
        yield
        return
    pool = ThreadPoolExecutor(1, thread_name_prefix="early-baseline")
    future = pool.submit(_build, kit, database, baseline_rev)
    with _lock:
        _pending = (_key(kit.alembic, baseline_rev, kit.settings.baseline_bootstrap_argv), future)
    try:
        yield
    finally:
        with _lock:
            _pending = None
        pool.shutdown(wait=True)


def take_baseline(alembic: AlembicRunner, baseline_rev: str, bootstrap: list[str] | None):
    """The early build's Baseline if it was built for the same inputs and succeeded; else None. Once."""
    global _pending
    with _lock:
        if _pending is None or _pending[0] != _key(alembic, baseline_rev, bootstrap):
            return None
        _, future = _pending
        _pending = None
    try:
        return future.result()
    except Exception:
        return None
