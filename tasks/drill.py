"""Restore drills as Prefect tasks: one task run per database, its event, and the drill's table artifact."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from pg_cutover.backup import drill
from pg_cutover.pg.db import ConnInfo
from pg_cutover.pg.tools import PgClient
from pg_cutover.process import redact
from pg_cutover.storage.encryption import RestoreIdentity
from pg_cutover.storage.s3 import S3Store
from pg_cutover.tasks.events import emit
from pg_cutover.tasks.evidence import OUTBOX

ARTIFACT_KEY = "restore-drill"
EVENTS = ("drill.passed", "drill.warning", "drill.failed")


@task(name="restore-drill-database", task_run_name="restore-drill-{database}", cache_policy=NO_CACHE)
def drill_one(store: S3Store, pg: PgClient, conn: ConnInfo, database: str, work_root: Path,
              secrets: tuple[str, ...] = (), identity: RestoreIdentity | None = None) -> drill.DrillResult:
    """One database's drill (pg_cutover.backup.drill); its outcome as a log line and a pg-cutover.drill.* event."""
    log = get_run_logger()
    result = drill.drill_database(store, pg, conn, database, work_root=work_root, identity=identity)
    result.reason = redact(result.reason, secrets)  # the evidence never carries a secret
    result.warnings = [redact(w, secrets) for w in result.warnings]
    if result.passed:
        log.info("Restore drill of %s passed: %s restored into %s in %.1f s, %s rows as the manifest says.",
                 database, result.backup_key, result.drill_db, result.restore_seconds or 0, result.rows)
    elif result.failed:
        log.error("Restore drill of %s failed: %s", database, result.reason)
    else:
        log.warning("Restore drill of %s is not a pass: %s", database, result.result)
    emit(f"drill.{result.status}", database, conn.host, conn.port, result.result[:500],
         backup_key=result.backup_key, age_hours=None if result.age_hours is None else f"{result.age_hours:.2f}",
         restore_seconds=None if result.restore_seconds is None else f"{result.restore_seconds:.2f}",
         rows=result.rows)
    return result


def publish_drill_table(results: list[drill.DrillResult], description: str) -> None:
    rows = [r.row() for r in results] or [{"database": "-", "backup key": "-", "age (hours)": "-",
                                           "restore seconds": "-", "rows": "-",
                                           "result": "no database has off-site backups"}]
    OUTBOX.post(ARTIFACT_KEY, create_table_artifact, table=rows, key=ARTIFACT_KEY, description=description)
