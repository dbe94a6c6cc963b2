"""Restore drills: prove that the off-site copy of each database's newest successful cutover restores.

For one database a drill takes the manifest of its newest successful cutover from the bucket,
downloads the dump from the bucket (never the local file: the drill proves the off-site copy),
checks its SHA-256 against the manifest, restores it into a fresh `<db>_drill_<timestamp>`
database, compares every table's row count with the manifest's, runs amcheck, and drops the
drill database and the downloaded file whatever happened. Production is never connected to.

The steps are separate functions so that client-side encryption (issue 22 item 1) can add its
decrypt between `fetch_offsite` and the restore without touching the rest.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from pg_cutover.errors import CutoverError
from pg_cutover.migrations import safety
from pg_cutover.pg.db import ConnInfo
from pg_cutover.pg.tools import PgClient
from pg_cutover.rollback.restore import restore_into, unique_name
from pg_cutover.runbook.manifest import MANIFEST_NAME, Manifest
from pg_cutover.runbook.steps import RunStatus
from pg_cutover.storage import encryption
from pg_cutover.storage.encryption import RestoreIdentity
from pg_cutover.storage.s3 import S3Store

DRILL_ROLE = "drill"
PASSED = "passed"
WARNING = "warning"  # restored and counted, but amcheck could not run: not a pass, not a failure
FAILED = "failed"


class DrillFailed(CutoverError):
    """One database's drill did not prove its backup; the message says which step and which object."""


@dataclass
class Newest:
    """The newest successful cutover of a database in the bucket."""

    database: str
    timestamp: str
    manifest: Manifest


@dataclass
class DrillResult:
    database: str
    backup_key: str = ""
    age_hours: float | None = None
    restore_seconds: float | None = None
    rows: int | None = None
    status: str = FAILED
    reason: str = ""
    drill_db: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    @property
    def result(self) -> str:
        """What the table artifact says: `passed`, `warning: <what could not be checked>` or `failed: <reason>`."""
        if self.passed:
            return PASSED
        if self.status == WARNING:
            return f"{WARNING}: {'; '.join(self.warnings)}; restored with the manifest's row counts"
        return f"{FAILED}: {self.reason}"

    def row(self) -> dict[str, object]:
        return {
            "database": self.database,
            "backup key": self.backup_key or "-",
            "age (hours)": "-" if self.age_hours is None else round(self.age_hours, 2),
            "restore seconds": "-" if self.restore_seconds is None else round(self.restore_seconds, 2),
            "rows": "-" if self.rows is None else self.rows,
            "result": self.result,
        }


def databases_with_backups(store: S3Store) -> list[str]:
    """The database prefixes under CUTOVER_S3_PREFIX, sorted."""
    prefix = f"{store.prefix}/"
    names: list[str] = []
    try:
        for page in store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=prefix,
                                                                           Delimiter="/"):
            names += [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
    except Exception as exc:
        raise store.explain(exc, f"listing {prefix}") from None
    return sorted(n for n in names if n)


def newest_successful(store: S3Store, database: str) -> Newest | None:
    """The newest run whose off-site manifest says `succeeded` (the rule retention keeps it by)."""
    for ts in reversed(store.list_runs(database)):
        text = store.get_text(store.run_prefix(database, ts) + MANIFEST_NAME)
        try:
            m = Manifest.model_validate_json(text) if text else None
        except ValueError:
            m = None  # unreadable: not a run the drill can trust, an older one may be
        if m is not None and m.status == RunStatus.SUCCEEDED:
            return Newest(database, ts, m)
    return None


def dump_key(newest: Newest) -> str:
    m = newest.manifest
    if m.backup is None:
        raise DrillFailed(f"the manifest of run {m.run_id} records no backup.")
    obj = m.offsite.object_for(Path(m.backup.path).name) if m.offsite else None
    if obj is None:
        raise DrillFailed(f"the manifest of run {m.run_id} records no off-site copy of {Path(m.backup.path).name}.")
    plaintext = obj.plaintext_sha256 if obj.encrypted else obj.sha256  # an encrypted object's own is the ciphertext's
    if plaintext != m.backup.sha256:
        raise DrillFailed(f"the manifest of run {m.run_id} records SHA-256 {plaintext} for {obj.key}, "
                          f"but {m.backup.sha256} for the backup.")
    return obj.key


def backup_age_hours(m: Manifest, now: datetime) -> float | None:
    step = m.step("backup-full")
    when = (step.ended_at if step is not None and step.ended_at else None) or m.started_at
    try:
        taken = datetime.fromisoformat(when)
    except (TypeError, ValueError):
        return None
    if taken.tzinfo is None:
        taken = taken.replace(tzinfo=timezone.utc)
    return (now - taken).total_seconds() / 3600


def fetch_offsite(store: S3Store, newest: Newest, key: str, work_dir: Path,
                  identity: RestoreIdentity | None = None) -> Path:
    """The dump downloaded from the bucket, its SHA-256 proven equal to the manifest's (else BackupUntrusted).

    Always the off-site object, even when the local file exists: that is what the drill proves. An object
    encrypted on the client is proven as uploaded (the ciphertext's SHA-256), decrypted with `identity`, and
    proven again as the backup (the plaintext's); a missing or wrong identity fails the drill before any restore.
    """
    m = newest.manifest
    bucket_store = store if store.bucket == m.offsite.bucket else _other_bucket(store, m.offsite.bucket)
    dest = work_dir / Path(m.backup.path).name
    obj = m.offsite.object_for(Path(m.backup.path).name)
    if obj is None or not obj.encrypted:
        return bucket_store.download(key, dest, m.backup.sha256)
    sealed = bucket_store.download(key, dest.with_name(dest.name + ".age"), obj.sha256)
    try:
        return encryption.decrypt_file(sealed, dest, identity, m.backup.sha256, key, obj.recipients)
    finally:
        sealed.unlink(missing_ok=True)


def _other_bucket(store: S3Store, bucket: str) -> S3Store:
    return replace(store, bucket=bucket, _client=None)


def check_indexes(conn: ConnInfo, dbname: str) -> tuple[list[str], list[str]]:
    """amcheck on the drill database: (broken indexes, warnings). amcheck that could not run is a warning."""
    frame = safety.amcheck(conn, dbname)
    if len(frame) == 1 and frame.iloc[0]["ok"] is None:
        return [], [f"amcheck could not run: {frame.iloc[0]['error']}"]
    bad = frame[frame["ok"].eq(False)]
    return [f"{r['index']} ({r['error']})" for _, r in bad.iterrows()], []


def drill_database(store: S3Store, pg: PgClient, conn: ConnInfo, database: str, *,
                   work_root: Path | None = None, now: datetime | None = None,
                   identity: RestoreIdentity | None = None) -> DrillResult:
    """One database's drill; never raises for the drill's own failures (they are the result's reason).

    The dump is downloaded under `work_root` (the flow passes CUTOVER_BACKUP_DIR/drills). Cleans up its drill
    database and its downloaded file whatever happened.
    """
    now = now or datetime.now(timezone.utc)
    result = DrillResult(database)
    if work_root is not None:
        work_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f"drill-{database}-", dir=work_root))  # mode 0700
    created = False
    try:
        newest = newest_successful(store, database)
        if newest is None:
            raise DrillFailed(f"no successful cutover of {database} in s3://{store.bucket}/{store.prefix}/{database}/.")
        key = dump_key(newest)
        result.backup_key = key
        result.age_hours = backup_age_hours(newest.manifest, now)
        dump = fetch_offsite(store, newest, key, work_dir, identity)
        result.drill_db = unique_name(conn, database, DRILL_ROLE)
        expected = dict(newest.manifest.row_counts)
        if not expected:
            raise DrillFailed(f"the manifest of run {newest.manifest.run_id} records no row counts to compare.")
        started = time.monotonic()
        created = True
        counts = restore_into(pg, conn, result.drill_db, dump, expected)  # row counts compared with the manifest's
        result.restore_seconds = time.monotonic() - started
        result.rows = sum(counts.values())
        broken, result.warnings = check_indexes(conn, result.drill_db)
        if broken:
            raise DrillFailed(f"amcheck found broken indexes in {result.drill_db}: {', '.join(broken)}.")
        result.status = WARNING if result.warnings else PASSED
    except Exception as exc:
        result.status = FAILED
        result.reason = " ".join(str(exc).split()) or type(exc).__name__
        if result.backup_key and result.backup_key not in result.reason:
            result.reason = f"{result.backup_key}: {result.reason}"
    finally:
        if created:
            try:
                pg.dropdb(result.drill_db)
            except Exception as exc:
                result.status = FAILED
                result.reason = (result.reason + "; " if result.reason else "") + \
                    f"the drill database {result.drill_db} could not be dropped ({exc}); drop it by hand."
        shutil.rmtree(work_dir, ignore_errors=True)
    return result


def summary_line(results: list[DrillResult]) -> str:
    failed = [r for r in results if r.failed]
    warned = [r for r in results if r.status == WARNING]
    if not results:
        return "No database has off-site backups to drill."
    said = "; ".join(f"{r.database}: {r.result}" for r in failed + warned)
    if failed:
        return f"{len(failed)} of {len(results)} restore drill(s) failed: {said}"
    if warned:
        return (f"{len(results) - len(warned)} of {len(results)} restore drill(s) passed, "
                f"{len(warned)} with a warning: {said}")
    return f"{len(results)} restore drill(s) passed."
