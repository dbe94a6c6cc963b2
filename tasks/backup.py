"""Runbook section 2: full backup, schema snapshot, verification."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pg_cutover.backup import dump as backups
from pg_cutover.pg.tools import PgClient
from pg_cutover.runbook.manifest import BackupRecord
from pg_cutover.runbook.plan import Plan
from pg_cutover.runbook.report import human_size
from pg_cutover.tasks import progress  # noqa: F401 (its steps' byte counts reach the log and the progress artifact)
from pg_cutover.tasks.evidence import code_block, publish_markdown, publish_table


@task(name="backup-full", cache_policy=NO_CACHE, timeout_seconds=4 * 3600)
def full_backup(pg: PgClient, plan: Plan, compression: str | None) -> tuple[BackupRecord, backups.StreamedRestore]:
    """2.1, with 3.1 under way: the scratch copy restores from the backup file while it is written.

    No retry: a second dump in the same window costs minutes, and the failure needs a look.
    """
    outcome, restore = backups.stream_backup(pg, plan.database, plan.backup_path, plan.scratch_db,
                                             compression=compression)
    get_run_logger().info("Backup written: %s (%s, compression %s); scratch restore of it under way",
                          outcome.record.path, human_size(outcome.record.size_bytes), outcome.record.compression)
    return outcome.record, restore


@task(name="backup-schema", cache_policy=NO_CACHE, timeout_seconds=3600)
def schema_snapshot(pg: PgClient, plan: Plan) -> str:
    """2.2."""
    backups.schema_snapshot(pg, plan.database, plan.schema_path)
    return str(plan.schema_path.resolve())


@task(name="backup-verify", cache_policy=NO_CACHE, timeout_seconds=3600)
def verify_backup(pg: PgClient, plan: Plan, record: BackupRecord) -> BackupRecord:
    """2.3: the backup listing as evidence, plus proof that the archive parses and holds every table."""
    checked = backups.verify_backup(pg, record, plan.tables)
    record.archive_tables = checked.tables
    schema_size = plan.schema_path.stat().st_size if plan.schema_path.exists() else 0
    publish_table(
        plan.database,
        "backup",
        [
            {"file": record.path, "kind": "pg_dump -Fc", "bytes": record.size_bytes,
             "size": human_size(record.size_bytes), "sha256": record.sha256},
            {"file": record.schema_path or "", "kind": "schema only", "bytes": schema_size,
             "size": human_size(schema_size), "sha256": ""},
        ],
        "Backup listing (runbook 2.3): path, size and SHA-256",
    )
    publish_markdown(
        plan.database,
        "backup-contents",
        f"# Backup archive contents\n\n{len(checked.tables)} tables with data: "
        f"{', '.join(f'`{t}`' for t in checked.tables)}\n\n{code_block(checked.listing.transcript())}",
        "pg_restore --list of the backup: proof the archive parses",
    )
    return record
