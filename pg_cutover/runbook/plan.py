"""Preflight: every check that needs no change, and the plan that follows from them.

Everything here reads; nothing creates, stamps or alters a database. A bad
setting or an unfit environment stops the run with one sentence before the
first change.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pg_cutover.checks.writes import CounterReading
from pg_cutover.errors import ConnectionFailed, PreflightError
from pg_cutover.migrations.runner import History
from pg_cutover.migrations.session import AlembicSession
from pg_cutover.pg import db
from pg_cutover.pg.db import ConnInfo
from pg_cutover.pg.tools import PgClient
from pg_cutover.toolkit import Toolkit
from pg_cutover.values import check_revision


@dataclass
class Plan:
    database: str
    baseline_rev: str
    target_rev: str  # resolved, never "head"
    revision_before: str | None
    server_major: int
    timestamp: str
    run_dir: Path
    scratch_db: str
    tables: list[str] = field(default_factory=list)
    heads: list[str] = field(default_factory=list)  # of the script directory, read once at preflight
    write_reading: CounterReading | None = None  # the writes sample's start (see pg_cutover.checks.writes)
    strategy: str = "runbook"  # with "clone", scratch_db is the clone, <db>_next_<timestamp>
    notes: list[str] = field(default_factory=list)  # preflight checks that could not run, each with why

    @property
    def before_db(self) -> str:
        """The clone strategy's name for the original once the clone has taken its name."""
        return derived_name(self.database, "before", self.timestamp)

    @property
    def at_target(self) -> bool:
        return self.revision_before == self.target_rev

    @property
    def needs_stamp(self) -> bool:
        """Only a database Alembic never touched is stamped; one already on the chain is upgraded from where it is."""
        return self.revision_before is None

    @property
    def backup_path(self) -> Path:
        return self.run_dir / f"{self.database}_{self.timestamp}.dump"

    @property
    def schema_path(self) -> Path:
        return self.run_dir / f"{self.database}_{self.timestamp}_schema.sql"


def derived_name(database: str, role: str, timestamp: str) -> str:
    """`<db>_<role>_<timestamp>` (scratch, restore, failed), kept within PostgreSQL's 63 bytes."""
    name = f"{database}_{role}_{timestamp}"
    if len(name) <= 63:
        return name
    # Too long: keep it recognisable and unique rather than truncated into a collision.
    tag = hashlib.sha256(database.encode()).hexdigest()[:6]
    keep = 63 - len(f"_{tag}_{role}_{timestamp}")
    return f"{database[:keep]}_{tag}_{role}_{timestamp}"


def scratch_name(database: str, timestamp: str, strategy: str = "runbook") -> str:
    """The database the dry run migrates: a restored scratch copy, or the clone that becomes production."""
    return derived_name(database, "next" if strategy == "clone" else "scratch", timestamp)


def check_alembic_dir(kit: Toolkit) -> None:
    settings = kit.settings
    directory = Path(settings.alembic_dir)
    if not directory.is_dir():
        raise PreflightError(f"CUTOVER_ALEMBIC_DIR={str(directory)!r} is not a directory; expected the app's directory holding alembic.ini.")
    # With a containerised command (docker compose exec ...) alembic.ini lives in the container.
    program = Path(settings.alembic_argv[0]).name
    local = program.startswith("alembic") or program.startswith("python")
    if local and not (directory / "alembic.ini").is_file():
        raise PreflightError(f"CUTOVER_ALEMBIC_DIR={str(directory)!r} holds no alembic.ini; expected the app's directory holding alembic.ini.")


def prepare_backup_dir(base: Path, database: str) -> Path:
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = base / database
        target.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise PreflightError(f"CUTOVER_BACKUP_DIR={str(base)!r} cannot be used: {exc.strerror}; expected a writable directory.") from None
    if not os.access(target, os.W_OK | os.X_OK):
        raise PreflightError(f"CUTOVER_BACKUP_DIR={str(base)!r} is not writable; expected a writable directory.")
    return target


@dataclass
class Readiness:
    """What preflight reads before it decides anything: the revisions, the server, its pg tools."""

    baseline_rev: str
    target_rev: str  # resolved, never "head"
    revision_before: str | None
    server_major: int
    pg: PgClient
    history: History

    @property
    def at_target(self) -> bool:
        return self.revision_before == self.target_rev


def check_readiness(kit: Toolkit, baseline_rev: str | None, target_rev: str | None,
                    alembic: AlembicSession | None = None) -> Readiness:
    """Every refusal that needs only reads: revisions, the app's directory, the server, its pg tools.

    Shared by the flow's preflight and the command line's check before Prefect starts, so one
    problem reads as the same sentence in both. Changes nothing, creates nothing.
    """
    settings = kit.settings
    baseline = baseline_rev or settings.baseline_rev
    if not baseline:
        raise PreflightError("BASELINE_REV is not set; expected the Alembic revision id that matches the legacy schema (or the baseline_rev parameter).")
    try:
        check_revision(baseline)
        check_revision(target_rev or "head")
    except ValueError as exc:
        raise PreflightError(f"baseline_rev/target_rev is invalid: {exc}.") from None
    check_alembic_dir(kit)

    database = settings.postgres_db
    # Reading the script directory is an interpreter start: it runs while the server is probed.
    with ThreadPoolExecutor(1, thread_name_prefix="alembic-graph") as pool:
        graph = pool.submit(alembic.history) if alembic is not None else pool.submit(kit.alembic.history, database)
        try:
            server_major = probe_server(kit.conn, database) // 10000
            pg = kit.pg_client(server_major)
        except BaseException:
            graph.cancel()
            raise
        history = graph.result()
    if not history.parents:
        raise PreflightError(f"CUTOVER_ALEMBIC_DIR={str(settings.alembic_dir)!r}: the migrations there have no revisions.")
    if not history.knows(baseline):
        raise PreflightError(
            f"BASELINE_REV={baseline!r} is not a revision of the migrations in CUTOVER_ALEMBIC_DIR "
            f"(known: {', '.join(sorted(history.parents))})."
        )
    target = history.resolve(target_rev or "head")
    if not history.knows(target):
        raise PreflightError(f"target_rev={target!r} is not a revision of the migrations in CUTOVER_ALEMBIC_DIR.")
    chain = history.ancestors(target)
    if baseline not in chain:
        raise PreflightError(f"BASELINE_REV={baseline!r} is not an ancestor of the target revision {target!r}.")

    before = db.alembic_revision(kit.conn, database)
    if before is not None and before not in chain:
        raise PreflightError(
            f"POSTGRES_DB={database!r} is at revision {before!r}, which is not on the path to {target!r}; "
            "nothing was changed."
        )
    if before is not None and baseline not in history.ancestors(before):
        raise PreflightError(
            f"POSTGRES_DB={database!r} is at revision {before!r}, below BASELINE_REV={baseline!r}; nothing was changed."
        )
    return Readiness(baseline_rev=baseline, target_rev=target, revision_before=before, server_major=server_major,
                     pg=pg, history=history)


def probe_server(conn: ConnInfo, database: str) -> int:
    """db.probe, whose sentence also names POSTGRES_PASSWORD when the server turned the password down."""
    try:
        return db.probe(conn, database)
    except ConnectionFailed as exc:
        # libpq says so only in words ("password authentication failed", "no password supplied").
        if "password" in str(exc):
            raise ConnectionFailed(f"{exc}; check POSTGRES_PASSWORD.") from None
        raise


def make_plan(kit: Toolkit, baseline_rev: str | None, target_rev: str | None,
              alembic: AlembicSession | None = None, strategy: str = "runbook") -> tuple[Plan, PgClient]:
    """`alembic`: production's warm interpreter, to read the revision graph in (else a process of its own)."""
    settings = kit.settings
    ready = check_readiness(kit, baseline_rev, target_rev, alembic)
    database = settings.postgres_db
    account_dir = prepare_backup_dir(Path(settings.backup_dir), database)
    timestamp = datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")
    stamp, n = timestamp, 1
    while (account_dir / stamp).exists() or any(
            db.database_exists(kit.conn, derived_name(database, role, stamp)) for role in ("scratch", "next", "before")):
        n += 1
        stamp = f"{timestamp}_{n}"
    run_dir = account_dir / stamp
    run_dir.mkdir(mode=0o700)

    plan = Plan(
        database=database,
        baseline_rev=ready.baseline_rev,
        target_rev=ready.target_rev,
        revision_before=ready.revision_before,
        server_major=ready.server_major,
        timestamp=stamp,
        run_dir=run_dir,
        scratch_db=scratch_name(database, stamp, strategy),
        tables=db.list_tables(kit.conn, database),
        heads=list(ready.history.heads),
        strategy=strategy,
    )
    return plan, ready.pg
