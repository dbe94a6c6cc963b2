"""Would restoring the backup discard somebody's writes? Decided from the manifest and production now.

Two spans matter. After the cutover let go of production (its upgrade done, or its
failure recorded), every change is somebody else's: any at all refuses the restore.
Before that, a cutover that failed or died mid-upgrade may have left its own partial
changes, which the counters cannot tell from the application's writes. That span is
clear when the cutover had stopped the backend itself, or when every table whose
counters moved since the last gate before production was touched still holds exactly
the rows data parity recorded for production (count and checksum); otherwise nobody
can tell, and a human decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pg_cutover.checks import changes, parity
from pg_cutover.clone.databases import oid_of
from pg_cutover.migrations.runner import MIGRATION_APPLICATION
from pg_cutover.pg import db
from pg_cutover.pg.db import ConnInfo
from pg_cutover.runbook.manifest import Manifest

AFTER_UPGRADE = "after its upgrade (production-current)"
AFTER_SWAP = "the upgraded clone, right before it took production's name (swap)"


@dataclass
class Assessment:
    clean: bool
    sentences: list[str] = field(default_factory=list)  # what changed, one per table
    summary: str = ""
    during_failed_run: bool = False  # the changes may be the cutover's own: they cannot be told apart


def assess(conn: ConnInfo, m: Manifest) -> Assessment:
    if m.strategy == "clone":
        return _assess_clone(conn, m)
    if m.production_state is not None:
        seen = changes.since(conn, m.production_state)
        if not seen.clean:
            return Assessment(False, seen.sentences())
        if m.production_state.moment in (AFTER_UPGRADE, AFTER_SWAP):
            return Assessment(True, summary=f"no row of production changed since the cutover let go of it "
                                            f"({m.production_state.moment}, {m.production_state.taken_at})")
    # The upgrade did not complete (failed or killed): the span from the last gate to the failure.
    if m.backend_stopped:
        return Assessment(True, summary="the cutover had stopped the backend before the backup, and it stayed "
                                        "stopped: every change since is the cutover's own")
    _end_leftover_migrations(conn, m.database)
    end = m.production_state or changes.snapshot(conn, m.database, "now", wait_flush=True)
    moved = _moved_tables(m, end)
    unproven = _not_as_backed_up(conn, m, sorted(moved))
    if not unproven:
        return Assessment(True, summary=f"{len(moved)} tables changed while the cutover ran, each holds exactly the "
                                        "rows data parity recorded for production")
    return Assessment(False, [f"{table}: {why}." for table, why in unproven.items()], during_failed_run=True)


def _assess_clone(conn: ConnInfo, m: Manifest) -> Assessment:
    """The clone strategy never writes to the original: what a swap back would take away from the
    application is only what was written to the upgraded clone while it held production's name."""
    clone = m.clone
    if clone is None or clone.clone_oid is None or oid_of(conn, m.database) != clone.clone_oid:
        return Assessment(True, summary=f"the upgraded clone does not hold the name {m.database}: nothing was "
                                        "written to it as production")
    if m.production_state is None:
        return Assessment(False, [f"the upgraded clone holds {m.database} and its state before the swap was not "
                                  "recorded, so writes to it since cannot be ruled out."])
    seen = changes.since(conn, m.production_state)
    if not seen.clean:
        return Assessment(False, seen.sentences())
    return Assessment(True, summary=f"no row of the upgraded clone changed since it took the name {m.database} "
                                    f"({m.production_state.taken_at})")


def _moved_tables(m: Manifest, end: changes.ProductionState) -> set[str]:
    """Tables whose counters or file node moved between the gate and `end` (every table without a usable gate)."""
    if m.gate_state is None:
        return set(m.row_counts)
    moved = changes.compare(m.gate_state, end)
    if moved.unknown and not moved.changes:  # replaced database or reset statistics: nothing is known
        return set(m.row_counts)
    return {change.table for change in moved.changes}


def _not_as_backed_up(conn: ConnInfo, m: Manifest, tables: list[str]) -> dict[str, str]:
    """Of `tables`, those whose rows now differ from data parity's record of production, with why."""
    out: dict[str, str] = {}
    for table in tables:
        if table.endswith(".alembic_version"):
            continue  # the cutover's own record of its revision
        if table not in m.row_counts:
            out[table] = "not in the backup (created while the cutover ran)"
        elif table not in m.production_checksums:
            out[table] = "too big to checksum, and its counters moved while the cutover ran"
    provable = [t for t in tables if t in m.production_checksums and t not in out]
    if not provable:
        return out
    # Nothing is read under a lock somebody else holds: a wait here would be a hung rollback.
    now = parity.read_data_side(conn, m.database, provable, checksum_max_bytes=2 ** 62, lock_timeout="10s")
    for table in provable:
        rows, _, checksum = now[table]
        if rows is None:
            out[table] = "dropped while the cutover ran"
        elif rows != m.row_counts[table]:
            out[table] = f"{rows} rows now, {m.row_counts[table]} in the backup"
        elif checksum != m.production_checksums[table]:
            out[table] = f"its {rows} rows differ from the backup's (same count)"
    return out


def _end_leftover_migrations(conn: ConnInfo, database: str) -> None:
    """A killed cutover's migration backend may still hold its locks (mid-statement, it has not noticed its
    client is gone); the cutover is dead (its lock is free), so its sessions are ended before reading."""
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s "
                    "AND application_name = %s", (database, MIGRATION_APPLICATION))
