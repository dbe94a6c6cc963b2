"""Copying one run's files off-site, under `<prefix>/<database>/<timestamp>/`."""

from __future__ import annotations

import time
from pathlib import Path

from pg_cutover.digest import sha256_file
from pg_cutover.runbook.manifest import BackupRecord, OffsiteRecord
from pg_cutover.storage.s3 import S3Store


def mirror_backup(store: S3Store, database: str, timestamp: str, backup: BackupRecord) -> OffsiteRecord:
    """The dump and the schema snapshot; the manifest and report follow as they are written.

    With recipients on the store (CUTOVER_ENCRYPTION=age) both leave encrypted, as `<name>.age`."""
    started = time.monotonic()
    prefix = store.run_prefix(database, timestamp)
    record = OffsiteRecord(bucket=store.bucket, endpoint_url=store.endpoint_url, prefix=prefix)
    dump = Path(backup.path)
    record.objects.append(store.upload_backup(dump, prefix + dump.name, backup.sha256))
    if backup.schema_path:
        schema = Path(backup.schema_path)
        record.objects.append(store.upload_backup(schema, prefix + schema.name, sha256_file(schema)))
    record.seconds = round(time.monotonic() - started, 3)
    return record
