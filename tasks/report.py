"""Runbook 5.4: the evidence report, as an artifact and as a file next to the backup."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from cutover.manifest import Manifest, write_private
from cutover.report import REPORT_NAME, render_report
from cutover.storage import S3Store
from tasks.evidence import publish_markdown


@task(name="evidence-report", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, timeout_seconds=300)
def publish_report(manifest: Manifest, run_dir: Path, store: S3Store | None = None) -> str:
    text = render_report(manifest)
    path = Path(run_dir) / REPORT_NAME
    write_private(path, text)
    if store is not None and manifest.offsite is not None:
        store.put_text(manifest.offsite.prefix + REPORT_NAME, text)
    publish_markdown(manifest.database, "cutover-report", text, f"Cutover summary ({manifest.status}); file: {path}")
    return str(path)
