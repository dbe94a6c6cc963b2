"""Runbook section 6 as tasks: stop, fetch the verified backup, restore, swap, start, verify, record.

No retries on the restore or the renames: a half-done rename is for the flow to
reason about, not for a retry policy. Stopping and starting the backend and the
health wait are safe to repeat.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from pg_cutover.backend import health
from pg_cutover.clone import databases as clone_databases
from pg_cutover.errors import StepFailed
from pg_cutover.pg import db
from pg_cutover.pg.dbprops import carry_properties
from pg_cutover.pg.tools import PgClient
from pg_cutover.rollback.restore import restore_in_place, restore_into, swap_in
from pg_cutover.runbook.manifest import Manifest, write_private
from pg_cutover.runbook.report import INCIDENT_NAME, render_incident
from pg_cutover.storage.encryption import DecryptionRefused, RestoreIdentity
from pg_cutover.storage.s3 import BackupUntrusted, S3Store, verified_dump
from pg_cutover.tasks import progress  # noqa: F401 (the restore's items reach the log and the progress artifact)
from pg_cutover.tasks.evidence import publish_markdown, run_logger
from pg_cutover.tasks.report import publish_outcome
from pg_cutover.toolkit import Toolkit


@task(name="rollback-stop-backend", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3, timeout_seconds=600)
def stop_backend(kit: Toolkit) -> str:
    result = kit.rollback_service.stop()
    return result.transcript() if result else "No service stop command: writes must already be paused."


def _not_a_refusal(task, task_run, state) -> bool:
    """Retry a download that broke off, never a backup whose SHA-256 does not match."""
    try:
        outcome = state.result(raise_on_failure=False)
    except Exception as exc:
        outcome = exc
    return not isinstance(outcome, (BackupUntrusted, DecryptionRefused))


@task(name="rollback-fetch-backup", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5,
      retry_condition_fn=_not_a_refusal, timeout_seconds=4 * 3600)
def fetch_backup(manifest: Manifest, store: S3Store | None, work_dir: Path,
                 identity: RestoreIdentity | None = None) -> tuple[Path, str]:
    """`identity` (CUTOVER_ENCRYPTION_IDENTITY, see pg_cutover.tasks.encryption_identity) decrypts an off-site
    copy encrypted on the client; unused when the local dump is intact or the copy is plaintext."""
    path, source = verified_dump(manifest, store, work_dir, identity)
    run_logger().info("Backup verified (SHA-256 %s) from %s", manifest.backup.sha256, source)
    return path, source


@task(name="rollback-restore", cache_policy=NO_CACHE, timeout_seconds=4 * 3600)
def restore_copy(pg: PgClient, kit: Toolkit, target: str, dump: Path, expected: dict[str, int]) -> dict[str, int]:
    return restore_into(pg, kit.conn, target, dump, expected)


@task(name="rollback-swap", cache_policy=NO_CACHE, timeout_seconds=600)
def swap(kit: Toolkit, database: str, restored: str, failed_name: str) -> None:
    swap_in(kit.conn, database, restored, failed_name)


@task(name="rollback-drop-recreate", cache_policy=NO_CACHE, timeout_seconds=4 * 3600)
def drop_recreate(pg: PgClient, kit: Toolkit, database: str, aside: str, dump: Path,
                  expected: dict[str, int]) -> dict[str, int]:
    """Runbook 6.2-6.3: the backup restored under production's own name, production waiting aside."""
    return restore_in_place(pg, kit.conn, database, aside, dump, expected)


@task(name="rollback-swap-back", cache_policy=NO_CACHE, timeout_seconds=600)
def swap_back(kit: Toolkit, manifest: Manifest, aside: str) -> str:
    """The clone strategy's rollback: the original, never written to, gets production's name back.

    Wherever the swap (or a crash inside it) left the names, the databases are found by OID;
    the upgraded clone, when it held the name, is kept under `aside`. Returns what was done.
    """
    clone = manifest.clone
    before = clone_databases.where(kit.conn, manifest.database, clone.original_oid, clone.clone_oid)
    after = clone_databases.swap_back(kit.conn, manifest.database, clone.original_oid, clone.clone_oid, aside)
    if before.swapped_back(manifest.database):
        return f"{manifest.database} already is the original (OID {clone.original_oid}): nothing renamed"
    moved = (f"{manifest.database} (the upgraded clone) -> {after.clone}; " if before.holder == clone.clone_oid
             else f"{manifest.database} was free (the swap stopped between its renames); ")
    return moved + f"{before.original} (the original) -> {manifest.database}"


@task(name="rollback-database-properties", cache_policy=NO_CACHE, timeout_seconds=300)
def carry_database_properties(kit: Toolkit, source: str, target: str) -> tuple[str, list[str]]:
    """Owner, grants, comment, connection limit and per-database settings, which the dump does not hold."""
    props, problems = carry_properties(kit.conn, source, target)
    return props.describe(), problems


@task(name="rollback-drop-failed-copy", cache_policy=NO_CACHE, timeout_seconds=600)
def drop_failed_copy(pg: PgClient, name: str) -> None:
    """drop-recreate's "drop", done last: only once the restored production is verified and serving."""
    pg.dropdb(name)


@task(name="rollback-start-backend", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3, timeout_seconds=600)
def start_backend(kit: Toolkit) -> list[dict]:
    """6.4: start the backend for the restored schema, then wait until every health path answers."""
    kit.rollback_service.start()
    settings = kit.settings
    if not settings.health_url:
        return []
    results = health.check(settings.health_url, settings.health_path_list, wait_seconds=settings.health_timeout)
    return [{"url": r.url, "status": r.status} for r in results]


@task(name="rollback-verify", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, timeout_seconds=600)
def verify_restored(kit: Toolkit, manifest: Manifest) -> str | None:
    """The revision is the pre-cutover one and every table holds its pre-cutover row count.

    After a swap back the database is the original itself, found by OID: it was never written by
    the cutover, so its identity is the proof, and nothing is counted (seconds at any size).
    """
    revision = db.alembic_revision(kit.conn, manifest.database)
    if revision != manifest.revision_before:
        raise StepFailed(f"After the restore {manifest.database} is at revision {revision!r}, not {manifest.revision_before!r}.")
    if manifest.strategy == "clone" and manifest.rollback.restored_sha256 is None:
        oid = clone_databases.oid_of(kit.conn, manifest.database)
        if oid != manifest.clone.original_oid:
            raise StepFailed(f"After the swap back {manifest.database} is OID {oid}, not the original's "
                             f"{manifest.clone.original_oid}.")
        return revision
    counts = db.row_counts(kit.conn, manifest.database, list(manifest.row_counts))
    if counts != manifest.row_counts:
        raise StepFailed(f"After the restore {manifest.database} holds {counts}, not {manifest.row_counts}.")
    return revision


@task(name="incident-record", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, timeout_seconds=300)
def publish_incident(manifest: Manifest, run_dir: Path | None, store: S3Store | None) -> str:
    text = render_incident(manifest)
    if run_dir is not None:
        write_private(Path(run_dir) / INCIDENT_NAME, text)
    if store is not None and manifest.offsite is not None:
        store.put_text(manifest.offsite.prefix + INCIDENT_NAME, text)
    publish_markdown(manifest.database, "incident", text, f"Incident record (runbook 6.5): rollback "
                     f"{manifest.rollback.status if manifest.rollback else 'not run'}")
    publish_outcome(manifest)
    return text
