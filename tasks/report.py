"""Runbook 5.4: the evidence report, as an artifact and as a file next to the backup."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from pg_cutover.runbook.manifest import Manifest, write_private
from pg_cutover.runbook.report import REPORT_NAME, render_report
from pg_cutover.storage.s3 import S3Store
from pg_cutover.tasks.evidence import OUTBOX, artifact_key, publish_markdown, publish_table

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


def publish_to_cutover(cutover_flow_run_id: str, database: str, manifest: Manifest | None, state_name: str) -> None:
    """On the failed cutover's own run: which rollback run answered it, and its `outcome` row as it
    stands now (new versions of the keys, filed under the cutover's run)."""
    from uuid import UUID

    from prefect.artifacts import MarkdownArtifact, TableArtifact
    from prefect.runtime import flow_run

    from pg_cutover.tasks.events import run_link

    run_id, link = UUID(cutover_flow_run_id), run_link()
    name = f"{flow_run.name or 'rollback'} ({flow_run.id})"
    text = (f"# Rollback: {state_name}\n\nThis cutover was answered by the rollback run "
            f"{f'[{name}]({link})' if link else f'`{name}`'}: **{state_name}**.\n")
    link_key, outcome_key = artifact_key(database, "rollback-run"), artifact_key(database, OUTCOME)
    OUTBOX.post(link_key, lambda: MarkdownArtifact(key=link_key, markdown=text, flow_run_id=run_id,
                                                   description=f"The rollback run that answered this cutover: "
                                                               f"{state_name}").create())
    if manifest is not None:
        row = outcome_row(manifest)
        OUTBOX.post(outcome_key, lambda: TableArtifact(key=outcome_key, table=[row], flow_run_id=run_id,
                                                       description=f"Outcome of this run for {database} after its "
                                                                   f"rollback ({state_name})").create())
