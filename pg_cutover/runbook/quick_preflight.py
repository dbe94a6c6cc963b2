"""The command line's preflight, before Prefect: every refusal that needs neither Prefect nor a change.

`cutover run` and `cutover rollback` call it before they import Prefect or start their temporary
server, so a wrong password, a misspelt revision or a missing database is one line within seconds,
not a failed flow run, its traceback and a rollback. The flow's own preflight still runs every check
(a run started from the UI or a schedule never passes through here); both call `check_readiness`,
so one problem reads as the same sentence either way.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pg_cutover.clone.preconditions import read_facts
from pg_cutover.errors import PreflightError
from pg_cutover.runbook.plan import check_readiness, prepare_backup_dir, probe_server
from pg_cutover.settings import Settings
from pg_cutover.toolkit import Toolkit

# A reachable server answers well within it; an address that drops packets is said before the operator wonders.
CONNECT_TIMEOUT_SECONDS = 5


def _quick_kit(settings: Settings) -> Toolkit:
    kit = Toolkit.from_settings(settings)
    return replace(kit, conn=replace(kit.conn, connect_timeout=CONNECT_TIMEOUT_SECONDS))


def check_cutover(settings: Settings, baseline_rev: str | None, target_rev: str | None, strategy: str) -> None:
    """Raises the first refusal as one sentence; returns when the flow may start."""
    kit = _quick_kit(settings)
    ready = check_readiness(kit, baseline_rev, target_rev)
    if strategy == "clone" and not ready.at_target:
        refusals = read_facts(kit.conn, settings.postgres_db).refusals()
        if refusals:
            raise PreflightError(" ".join(refusals) + " Nothing was changed.")
    # Last: it may create the backup directory (as the flow's preflight would, moments later), and a
    # refusal above must leave nothing behind.
    prepare_backup_dir(Path(settings.backup_dir), settings.postgres_db)


def check_rollback(settings: Settings, manifest: str) -> None:
    """The manifest, when it is a local path, and the server with its pg tools when there is something to restore.

    A flow run id or an s3:// URI may name a manifest only the off-site copy holds: left to the rollback.
    A cutover that never touched production needs no server (its rollback only records that).
    """
    # Imported here: it brings boto3, which `cutover run` does not need before Prefect.
    from pg_cutover.rollback.restore import locate_manifest

    ref = manifest.strip()
    if ref.startswith("s3://"):
        return
    source = locate_manifest(ref, backup_dir=settings.backup_dir, database=settings.postgres_db, store=None)
    if source is None or not source.manifest.production_touched:
        return
    kit = _quick_kit(settings)
    kit.pg_client(probe_server(kit.conn, "postgres") // 10000)
