"""Runbook 5.4: the evidence report, as an artifact and as a file next to the backup."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from pg_cutover.runbook.manifest import Manifest, write_private
from pg_cutover.runbook.report import REPORT_NAME, render_report
from pg_cutover.storage.s3 import S3Store
from pg_cutover.tasks.evidence import publish_markdown, publish_table

OUTCOME = "outcome"


@task(name="evidence-report", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, timeout_seconds=300)
def publish_report(manifest: Manifest, run_dir: Path, store: S3Store | None = None) -> str:
    text = render_report(manifest)
    path = Path(run_dir) / REPORT_NAME
    # The artifacts first: on a full disk the API still gets the summary the file cannot hold.
    publish_markdown(manifest.database, "cutover-report", text, f"Cutover summary ({manifest.status}); file: {path}")
    publish_outcome(manifest)
    write_private(path, text)
    if store is not None and manifest.offsite is not None:
        store.put_text(manifest.offsite.prefix + REPORT_NAME, text)
    return str(path)


def outcome_row(manifest: Manifest) -> dict[str, str]:
    """The run in one row: what a fleet summary (or anyone reading the API) needs, and nothing secret."""
    m, rb = manifest, manifest.rollback
    stored = m.offsite.object_for(Path(m.backup.path).name) if (m.offsite and m.backup) else None
    return {
        "database": m.database,
        "status": m.status,
        "revision_before": m.revision_before or "none",
        "revision_after": _revision_after(m),
        "production_touched": "yes" if m.production_touched else "no",
        "backup": m.backup.path if m.backup else "",
        "backup_key": stored.key if stored else "",
        "rollback": rb.status if rb else "",
        "failed_database": (rb.failed_database or "") if rb else "",
        "error": (rb.error if rb and rb.error else (m.failure or {}).get("error", ""))[:300],
    }


def _revision_after(m: Manifest) -> str:
    if m.rollback is not None and m.rollback.status == "restored":
        return m.rollback.revision_after or "none"
    if m.revision_after or not m.production_touched:
        return m.revision_after or m.revision_before or "none"
    return "unknown: production was touched and not restored"


def publish_outcome(manifest: Manifest) -> None:
    publish_table(manifest.database, OUTCOME, [outcome_row(manifest)],
                  f"Outcome of this run for {manifest.database} (one row; read by the fleet summary)")
