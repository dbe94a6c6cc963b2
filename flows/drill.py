"""The restore drill: each database's newest successful cutover restored from its off-site copy, then dropped.

Run by `cutover drill` or the weekly `restore-drill` deployment (inactive until switched on). The
domain side is `pg_cutover.backup.drill`; this flow picks the databases, runs one task per database,
and posts the `restore-drill` table artifact. It ends Failed (`DrillFailed`) when any drill failed.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed, State

from pg_cutover.backup import drill
from pg_cutover.errors import ConfigError
from pg_cutover.pg import db
from pg_cutover.runbook.inventory import load_inventory
from pg_cutover.settings import load_settings
from pg_cutover.tasks.drill import drill_one, publish_drill_table
from pg_cutover.tasks.encryption_identity import restore_identity
from pg_cutover.tasks.evidence import evidence_drained
from pg_cutover.tasks.s3_credentials import offsite_store
from pg_cutover.toolkit import Toolkit


@flow(name="restore-drill", description="Restore each database's newest successful cutover backup from S3 into a "
                                         "throwaway drill database, check it, and drop it.")
def restore_drill(inventory: str | None = None) -> State:
    """Restore each database's newest successful cutover backup from its off-site copy, check it, and drop it.

    For every database with backups under CUTOVER_S3_PREFIX in CUTOVER_S3_BUCKET: the dump is downloaded from
    the bucket (never the local file), its SHA-256 checked against the manifest, restored into a new
    `<database>_drill_<timestamp>` database on the configured server, every table's row count compared with
    the manifest's, amcheck run, and the drill database dropped. Production is never touched.

    Args:
        inventory: Path of a fleet inventory file (TOML) on the worker: drill only its targets' databases.
            Default: every database that has off-site backups in the bucket.
    """
    log = get_run_logger()
    with evidence_drained(log):
        settings = load_settings()
        store = offsite_store(settings)  # with CUTOVER_S3_CREDENTIALS_BLOCK's credentials when set
        if store is None:
            raise ConfigError("CUTOVER_S3_BUCKET is not set; expected the bucket whose off-site backups to drill.")
        if inventory:
            databases = list(dict.fromkeys(str(t.database) for t in load_inventory(inventory).targets))
        else:
            databases = drill.databases_with_backups(store)
        kit = Toolkit.from_settings(settings)
        pg = kit.pg_client(db.probe(kit.conn, "postgres") // 10000)
        log.info("Restore drill of %d database(s) from %s/%s: %s", len(databases), store.where, store.prefix,
                 ", ".join(databases) or "none")
        work_root = settings.backup_dir / "drills"  # each download in a directory of its own, removed after its drill
        identity = restore_identity(settings)  # used only for copies encrypted on the client; redacted once read
        results = [drill_one(store, pg, kit.conn, database, work_root, tuple(settings.secrets), identity)
                   for database in databases]
        line = drill.summary_line(results)
        publish_drill_table(results, f"Restore drill from {store.where}/{store.prefix}: {line}")
    summary: dict[str, Any] = {"results": [r.row() for r in results], "summary": line,
                               "failed": [r.database for r in results if r.failed],
                               "warnings": [r.database for r in results if r.status == drill.WARNING]}
    if summary["failed"]:
        return Failed(name="DrillFailed", message=line, data=summary)
    return Completed(message=line, data=summary)
