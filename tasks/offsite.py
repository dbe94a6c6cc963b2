"""The off-site copy: mirror the backup to S3, show where it is, prune old runs."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pg_cutover.backup.mirror import mirror_backup
from pg_cutover.backup.retention import apply_prune, plan_prune
from pg_cutover.runbook.manifest import BackupRecord, OffsiteRecord
from pg_cutover.runbook.plan import Plan
from pg_cutover.runbook.report import human_size
from pg_cutover.storage.links import LinkPolicy, object_link
from pg_cutover.storage.s3 import S3Store
from pg_cutover.tasks import progress  # noqa: F401 (its steps' byte counts reach the log and the progress artifact)
from pg_cutover.tasks.evidence import artifact_key, publish_link, publish_table


# No Prefect timeout: it runs in a worker thread, where Prefect cannot interrupt it; botocore's
# connect/read timeouts and bounded retries are what end a stuck upload.
@task(name="offsite-mirror", cache_policy=NO_CACHE)
def mirror(store: S3Store, plan: Plan, backup: BackupRecord, links: LinkPolicy) -> OffsiteRecord:
    """Runs beside the scratch restore; botocore retries throttling and connection errors itself.

    Each object's link artifact names it (no bearer link) unless `links` asks for presigned ones."""
    record = mirror_backup(store, plan.database, plan.timestamp, backup)
    publish_table(
        plan.database,
        "offsite",
        [{"bucket": record.bucket, "key": o.key, "bytes": o.size_bytes, "size": human_size(o.size_bytes),
          "sha256": o.sha256, "server checksum": o.server_checksum or "-", "verified": o.verified_by,
          **({"encrypted": f"{o.encryption} to {len(o.recipients)} recipient(s)", "plaintext sha256": o.plaintext_sha256}
             if o.encrypted else {})}
         for o in record.objects],
        f"Off-site copy in {store.where}, uploaded in {record.seconds:.1f}s",
    )
    for obj in record.objects:
        name = obj.key.rsplit("/", 1)[-1].removesuffix(".age")  # an encrypted copy: <name>.age
        link = object_link(store, obj, links)
        publish_link(
            key=artifact_key(plan.database, "offsite-" + ("dump" if name.endswith(".dump") else "schema")),
            link=link.url, link_text=link.text, description=link.description,
        )
    get_run_logger().info("Off-site copy verified in %s: %s", store.where, ", ".join(o.key for o in record.objects))
    return record


@task(name="offsite-prune", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, timeout_seconds=600)
def prune(store: S3Store, database: str, keep: int, dry_run: bool = False) -> dict:
    plan = plan_prune(store, database, keep)
    deleted = 0 if dry_run else apply_prune(store, plan)
    publish_table(database, "offsite-retention", plan.rows() or [{"run": "-", "action": "-", "reason": "no runs"}],
                  f"Retention: keep {keep} per database{' (dry run)' if dry_run else ''}; {deleted} objects deleted")
    return {"kept": [ts for ts, _ in plan.keep], "deleted": plan.delete, "objects_deleted": deleted}
