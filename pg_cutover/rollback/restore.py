"""Runbook section 6: restore from backup, decided from the run manifest alone.

Production is never dropped on the default path: the backup is restored into a
new database, checked, and swapped in by renames; the database the cutover left
behind stays under `<db>_failed_<timestamp>` for forensics.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from pg_cutover.errors import ConfigError, CutoverError, StepFailed
from pg_cutover.pg import db
from pg_cutover.pg.db import ConnInfo
from pg_cutover.pg.tools import PgClient
from pg_cutover.runbook.manifest import MANIFEST_NAME, Manifest, load_manifest, write_private
from pg_cutover.runbook.plan import derived_name
from pg_cutover.storage.s3 import S3Store

STRATEGIES = ("rename", "drop-recreate")


def run_lock_name(database: str) -> str:
    """The advisory lock a running cutover of `database` holds (the rollback's is the bare name)."""
    return f"cutover-run:{database}"
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class RollbackFailed(CutoverError):
    """The rollback itself failed; the message says what state production is in."""


class RollbackRefused(RollbackFailed):
    """Production changed since the cutover let go of it: nothing restored, a human decides."""


@dataclass
class ManifestSource:
    manifest: Manifest
    run_dir: Path  # local directory of this run (created when the manifest came from S3)
    origin: str  # where it was read: a path or an s3:// URI
    store: S3Store | None = None

    def reload(self) -> Manifest:
        """The freshest copy: local, and the off-site one when the run was mirrored (another machine may have written it)."""
        local = self.run_dir / MANIFEST_NAME
        best = load_manifest(local) if local.exists() else self.manifest
        if self.store is not None and best.offsite is not None:
            text = _store_for(self.store, best.offsite.bucket).get_text(best.offsite.prefix + MANIFEST_NAME)
            if text:
                remote = Manifest.model_validate_json(text)
                if _progress(remote) > _progress(best):
                    best = remote
        return best


def _progress(m: Manifest) -> int:
    order = {None: 0, "not-started": 0, "running": 1, "failed": 1, "not-needed": 2, "restored": 3}
    return order.get(m.rollback.status if m.rollback else None, 0)


def _store_for(store: S3Store, bucket: str) -> S3Store:
    return store if store.bucket == bucket else replace(store, bucket=bucket, _client=None)


def is_flow_run_id(ref: str) -> bool:
    return bool(_UUID.match(ref.strip()))


def locate_manifest(ref: str, *, backup_dir: Path, database: str, store: S3Store | None) -> ManifestSource | None:
    """A path (file or run directory), an s3:// URI, or the cutover's flow run id.

    None when a flow run id matches no manifest: that cutover stopped before writing one,
    which happens only before its first step, so before production was touched.
    """
    ref = ref.strip()
    if ref.startswith("s3://"):
        bucket, _, key = ref[5:].partition("/")
        if store is None:
            raise ConfigError(f"manifest={ref!r} is in S3 but CUTOVER_S3_BUCKET is not set; set it (and CUTOVER_S3_ENDPOINT_URL for a compatible server).")
        source = _store_for(store, bucket)
        text = source.get_text(key)
        if text is None:
            raise ConfigError(f"manifest={ref!r} does not exist.")
        return _localise(Manifest.model_validate_json(text), backup_dir, ref, store)
    path = Path(ref)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if path.is_file():
        return ManifestSource(load_manifest(path), path.parent, str(path), store)
    if _UUID.match(ref):
        for candidate in sorted(Path(backup_dir).glob(f"{database}/*/{MANIFEST_NAME}"), reverse=True):
            m = load_manifest(candidate)
            if m.flow_run_id == ref:
                return ManifestSource(m, candidate.parent, str(candidate), store)
        if store is not None:
            for ts in reversed(store.list_runs(database)):
                text = store.get_text(store.run_prefix(database, ts) + MANIFEST_NAME)
                if text and Manifest.model_validate_json(text).flow_run_id == ref:
                    uri = f"s3://{store.bucket}/{store.run_prefix(database, ts)}{MANIFEST_NAME}"
                    return _localise(Manifest.model_validate_json(text), backup_dir, uri, store)
        return None
    raise ConfigError(
        f"manifest={ref!r} is not a manifest.json path, a run directory, an s3:// URI or a cutover flow run id."
    )


def _localise(m: Manifest, backup_dir: Path, origin: str, store: S3Store | None) -> ManifestSource:
    run_dir = Path(backup_dir) / m.database / (Path(m.backup.path).parent.name if m.backup else m.run_id)
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    local = run_dir / MANIFEST_NAME
    if not local.exists():
        write_private(local, m.model_dump_json(indent=2))
    return ManifestSource(m, run_dir, origin, store)


def stamp_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")


def restore_into(pg: PgClient, conn: ConnInfo, target: str, dump: Path, expected: dict[str, int]) -> dict[str, int]:
    """createdb + pg_restore, then every table's row count must equal the pre-cutover count.

    A restore that fails drops the database it created: half a restore is nobody's data, and
    under drop-recreate it occupies the name production must get back.
    """
    pg.createdb(target)
    try:
        pg.restore(target, dump, jobs=max(1, min(4, os.cpu_count() or 1)))
        counts = db.row_counts(conn, target, list(expected))
        diff = {t: (expected[t], counts.get(t)) for t in expected if counts.get(t) != expected[t]}
        if diff:
            raise StepFailed("The restored copy does not hold the pre-cutover rows: "
                             + ", ".join(f"{t} {a} != {b}" for t, (a, b) in diff.items()))
    except BaseException:
        try:
            pg.dropdb(target)
        except Exception:
            pass  # the restore's own error is the one to report
        raise
    return counts


def restore_in_place(pg: PgClient, conn: ConnInfo, database: str, aside: str, dump: Path,
                     expected: dict[str, int]) -> dict[str, int]:
    """Runbook 6.2-6.3 (drop, recreate, restore) without ever dropping production first.

    Production waits renamed to `aside` while the backup is restored under its name and
    checked; if that fails it gets its name back. Dropping `aside` is left to the caller,
    once the restore is verified.
    """
    return _aside_while(conn, database, aside, f"Restoring {database} from the backup",
                        lambda: restore_into(pg, conn, database, dump, expected))


def swap_in(conn: ConnInfo, database: str, restored: str, failed_name: str) -> None:
    """Production aside to failed_name, the restored copy into its place; undone if the second rename fails."""
    _aside_while(conn, database, failed_name, f"Putting the restored copy {restored!r} in place",
                 lambda: db.rename_database(conn, restored, database))


def _aside_while(conn: ConnInfo, database: str, aside: str, what: str, put_in_place):
    """Production renamed to `aside` while something else takes its name; on failure it gets its name back."""
    db.rename_database(conn, database, aside)
    try:
        return put_in_place()
    except Exception as exc:
        try:
            db.rename_database(conn, aside, database)
            state = f"production was renamed back to {database!r} and is as the cutover left it (not dropped)"
        except Exception:
            state = f"production is intact under {aside!r} (not dropped); rename it back by hand"
        raise RollbackFailed(f"{what} failed ({exc}); {state}.") from None


def unique_name(conn: ConnInfo, database: str, role: str) -> str:
    ts = stamp_now()
    name, n = derived_name(database, role, ts), 1
    while db.database_exists(conn, name):
        n += 1
        name = derived_name(database, role, f"{ts}_{n}")
    return name
