"""The clone strategy's finalize: drop each kept original whose dump is proven and whose keep time is past.

Run by `cutover finalize` or the scheduled `finalize` deployment; everything it decides is a
table artifact, and each dropped original is recorded in its run's manifest.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from pg_cutover.clone import finalize as originals
from pg_cutover.runbook.manifest import RunRecorder, utcnow
from pg_cutover.settings import load_settings
from pg_cutover.tasks.evidence import evidence_drained, publish_table
from pg_cutover.tasks.s3_credentials import offsite_store
from pg_cutover.toolkit import Toolkit


@flow(name="finalize", description="Drop the clone strategy's kept originals once their dumps are proven and "
                                    "CUTOVER_KEEP_ORIGINAL_HOURS have passed.")
def finalize(dry_run: bool = False) -> dict[str, Any]:
    """Drop each kept original of a clone-strategy cutover once its dump is proven and its keep time has passed.

    Args:
        dry_run: Only say, in the finalize table artifact, which originals would be dropped and why; drop nothing.
            Default off: a proven original past CUTOVER_KEEP_ORIGINAL_HOURS (default 24) since its swap is dropped.
    """
    log = get_run_logger()
    with evidence_drained(log):
        settings = load_settings()
        kit = Toolkit.from_settings(settings)
        store = offsite_store(settings)  # CUTOVER_S3_CREDENTIALS_BLOCK's credentials when set
        rows = []
        for path, m in originals.kept_originals(settings.backup_dir, kit.conn):
            decision = originals.decide(path, m, keep_hours=settings.keep_original_hours,
                                        bucket_configured=store is not None)
            if decision.drop and not dry_run:
                refused = originals.drop_original(kit.conn, m)
                if refused is None:
                    m.clone.original_dropped_at = utcnow()
                    sinks = [] if store is None or m.offsite is None else [
                        lambda name, text, prefix=m.offsite.prefix: store.put_text(prefix + name, text)]
                    RunRecorder(m, path.parent, settings.secrets, sinks)
                    log.info("Dropped %s (the original of %s): %s", decision.original, m.database, decision.reason)
                else:
                    decision.drop, decision.reason = False, f"not dropped: {refused}"
            rows.append({**decision.row(), "action": ("would drop" if dry_run and decision.drop else
                                                      decision.row()["action"])})
        publish_table(settings.postgres_db, "finalize",
                      rows or [{"database": "-", "original": "-", "action": "-", "reason": "no kept originals",
                                "manifest": "-"}],
                      f"The clone strategy's kept originals{' (dry run)' if dry_run else ''}")
        return {"dropped": [r["original"] for r in rows if r["action"] == "drop"],
                "kept": [r["original"] for r in rows if r["action"] == "keep"], "rows": rows}
