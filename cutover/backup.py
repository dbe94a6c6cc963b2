"""Runbook section 2: the full backup, the schema snapshot, and proof they are usable."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cutover.digest import sha256_file
from cutover.errors import StepFailed
from cutover.manifest import BackupRecord
from cutover.pgtools import PgClient, archive_tables
from cutover.process import CommandResult

def _private(path: Path) -> None:
    if path.exists():
        os.chmod(path, 0o600)


@dataclass
class BackupOutcome:
    record: BackupRecord
    dump: CommandResult


def full_backup(pg: PgClient, dbname: str, path: Path) -> BackupOutcome:
    """2.1: pg_dump -Fc of data and schema."""
    # Created 0600 before pg_dump writes: the dump holds every row of production.
    path.touch(mode=0o600, exist_ok=False)
    result = pg.dump(dbname, path)
    _private(path)
    record = BackupRecord(
        path=str(path.resolve()), size_bytes=path.stat().st_size, sha256=sha256_file(path), pg_dump_major=pg.major
    )
    return BackupOutcome(record=record, dump=result)


def schema_snapshot(pg: PgClient, dbname: str, path: Path) -> CommandResult:
    """2.2: schema-only SQL, for audit and review."""
    path.touch(mode=0o600, exist_ok=False)
    result = pg.dump(dbname, path, schema_only=True)
    _private(path)
    return result


@dataclass
class Verification:
    listing: CommandResult
    size_bytes: int
    sha256: str
    tables: list[str]


def verify_backup(pg: PgClient, record: BackupRecord, expected_tables: list[str]) -> Verification:
    """2.3, beyond `ls -lh`: non-empty, unchanged since written, parseable, and holding every table."""
    path = Path(record.path)
    if not path.is_file():
        raise StepFailed(f"The backup file {path} does not exist.")
    size = path.stat().st_size
    if size == 0:
        raise StepFailed(f"The backup file {path} is empty.")
    digest = sha256_file(path)
    if digest != record.sha256:
        raise StepFailed(f"The backup file {path} changed after it was written (SHA-256 {digest} != {record.sha256}).")
    listing = pg.list_archive(path)
    found = archive_tables(listing.stdout)
    missing = sorted(set(expected_tables) - found)
    if missing:
        raise StepFailed(f"The backup {path} lacks table data for: {', '.join(missing)}.")
    return Verification(listing=listing, size_bytes=size, sha256=digest, tables=sorted(found))
