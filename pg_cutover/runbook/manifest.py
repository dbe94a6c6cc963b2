"""The run manifest: the one source of truth about a cutover run.

A JSON document next to the backup, rewritten atomically after every step. It
says which steps ran, where the backup is and its SHA-256, the row counts, and
the revision before and after. The rollback decides from it alone, so it works
from another process, another machine, or hours later.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pg_cutover.checks.changes import ProductionState
from pg_cutover.process import redact
from pg_cutover.runbook.steps import PRODUCTION_STEPS, RollbackStatus, RunStatus, Status

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1



def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class StepRecord(BaseModel):
    model_config = ConfigDict(validate_assignment=True)  # a status set as text becomes its enum

    name: str
    status: Status = Status.RUNNING
    started_at: str = Field(default_factory=utcnow)
    ended_at: str | None = None
    seconds: float | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class BackupRecord(BaseModel):
    path: str
    size_bytes: int
    sha256: str
    schema_path: str | None = None
    pg_dump_major: int | None = None
    compression: str | None = None
    archive_tables: list[str] = Field(default_factory=list)


class StoredObject(BaseModel):
    key: str
    size_bytes: int
    sha256: str
    server_checksum: str | None = None  # what the server computed (ChecksumSHA256), when it keeps one
    verified_by: str = ""  # how the copy was proven after upload
    # Client-side encryption (CUTOVER_ENCRYPTION=age): `sha256`, `size_bytes` and `server_checksum` are then the
    # ciphertext's (what the upload proves), `plaintext_sha256` the file's before encryption (what a restore
    # proves), `recipients` the public keys it was encrypted to. Absent (None, empty) in plaintext objects and
    # in manifests written before encryption existed.
    encryption: str | None = None  # "age"
    plaintext_sha256: str | None = None
    recipients: list[str] = Field(default_factory=list)

    @property
    def encrypted(self) -> bool:
        return self.encryption is not None


class OffsiteRecord(BaseModel):
    bucket: str
    endpoint_url: str | None = None
    prefix: str
    objects: list[StoredObject] = Field(default_factory=list)
    seconds: float = 0.0

    def object_for(self, local_name: str) -> StoredObject | None:
        for obj in self.objects:  # an encrypted copy is the local file's name plus ".age"
            if obj.key.rsplit("/", 1)[-1] in (local_name, local_name + ".age"):
                return obj
        return None


class RollbackRecord(BaseModel):
    model_config = ConfigDict(validate_assignment=True)  # a status set as text becomes its enum

    status: RollbackStatus = RollbackStatus.RUNNING
    flow_run_id: str | None = None
    strategy: str = "rename"
    started_at: str = Field(default_factory=utcnow)
    finished_at: str | None = None
    restored_from: str | None = None
    restored_sha256: str | None = None
    failed_database: str | None = None  # production as the cutover left it, renamed aside
    revision_after: str | None = None
    health: list[dict[str, Any]] = Field(default_factory=list)
    steps: list[StepRecord] = Field(default_factory=list)
    error: str | None = None
    attempts: list[dict[str, str]] = Field(default_factory=list)  # every rollback run that looked at this manifest
    # What production showed since the cutover let go of it, one sentence per table, and whether the
    # operator chose to discard it (it stays in failed_database).
    changes_since: list[str] = Field(default_factory=list)
    discarded_changes: bool = False
    production_state: ProductionState | None = None  # the restored production, when this rollback let go of it


class CloneRecord(BaseModel):
    """The clone strategy's databases, followed by OID (a rename keeps it), and its timings."""

    model_config = ConfigDict(validate_assignment=True)

    original_oid: int  # production before the cutover; after the swap it is `before`
    clone: str  # <db>_next_<timestamp>: the upgraded copy that takes production's name
    before: str  # <db>_before_<timestamp>: the original's name after the swap
    clone_oid: int | None = None  # once the clone exists
    copy_strategy: str | None = None  # FILE_COPY, or the server's default
    clone_seconds: float | None = None
    swap_seconds: float | None = None
    swapped_at: str | None = None  # the swap completed: production is the clone
    # After the window: the original's dump, proven by a restore (CUTOVER_VERIFY_RESTORE) and off-site
    # when a bucket is set. `cutover finalize` drops the original only once these hold.
    dump_verified: bool = False
    restore_checked: bool = False
    offsite_verified: bool = False
    original_dropped_at: str | None = None


class Manifest(BaseModel):
    model_config = ConfigDict(validate_assignment=True)  # a status set as text becomes its enum

    schema_version: int = SCHEMA_VERSION
    run_id: str
    flow_run_id: str | None = None
    database: str
    host: str
    port: int
    started_at: str = Field(default_factory=utcnow)
    finished_at: str | None = None
    status: RunStatus = RunStatus.RUNNING
    dry_run: bool = False
    strategy: str = "runbook"  # CUTOVER_STRATEGY: restore a backup into scratch (runbook) or clone and swap (clone)
    clone: CloneRecord | None = None
    auto_rollback: bool = True  # the run's rollback_on_failure: may a hook or trigger restore without a human
    baseline_rev: str | None = None
    target_rev: str | None = None
    revision_before: str | None = None
    revision_after: str | None = None
    production_touched: bool = False
    scratch_db: str | None = None
    backup: BackupRecord | None = None
    offsite: OffsiteRecord | None = None
    row_counts: dict[str, int] = Field(default_factory=dict)
    checklist: dict[str, Any] = Field(default_factory=dict)
    steps: list[StepRecord] = Field(default_factory=list)
    failure: dict[str, str] | None = None
    rollback: RollbackRecord | None = None
    # Production's counters when the cutover let go of it (after its upgrade, or when it failed after
    # touching it): a later rollback compares against them before it restores anything.
    production_state: ProductionState | None = None
    # For a cutover that failed (or died) mid-upgrade, what tells its own partial changes from others'
    # writes: the counters at the last gate before production was touched, production's checksums from
    # data parity (tables up to CUTOVER_PARITY_CHECKSUM_MAX_MB; row_counts has every table's count), and
    # whether the backend was stopped by the cutover from before the backup on.
    gate_state: ProductionState | None = None
    production_checksums: dict[str, str] = Field(default_factory=dict)
    backend_stopped: bool = False

    def step(self, name: str) -> StepRecord | None:
        for record in reversed(self.steps):
            if record.name == name:
                return record
        return None


def write_private(path: Path, text: str) -> None:
    """Write atomically with mode 0600: a reader never sees half a manifest."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_manifest(path: Path) -> Manifest:
    return Manifest.model_validate_json(Path(path).read_text())


# Flow run id -> its manifest, for the runs of this process: the cutover's failure hook reads
# whether production was touched from here, whatever the settings of the run were.
RUN_MANIFESTS: dict[str, Path] = {}


class RunRecorder:
    """Owns the manifest of one run and saves it after every change."""

    def __init__(self, manifest: Manifest, run_dir: Path, secrets: tuple[str, ...] = (),
                 sinks: list[Callable[[str, str], object]] | None = None, *, save: bool = True):
        self.manifest = manifest
        self.run_dir = run_dir
        self.secrets = secrets
        # Extra places each saved manifest is copied to (the off-site mirror), as (name, text) callbacks.
        self.sinks: list[Callable[[str, str], object]] = list(sinks or [])
        self.sink_errors: list[str] = []
        # Called with each step record once it has ended (progress in the UI).
        self.listeners: list[Callable[[StepRecord], object]] = []
        # Called with each step's record as it starts (the progress artifact names the running step).
        self.started: list[Callable[[StepRecord], object]] = []
        if save:
            self.save()

    @property
    def path(self) -> Path:
        return self.run_dir / MANIFEST_NAME

    def save(self) -> None:
        text = redact(json.dumps(self.manifest.model_dump(mode="json"), indent=2), self.secrets)
        write_private(self.path, text)
        for sink in list(self.sinks):
            try:
                sink(MANIFEST_NAME, text)
            except Exception as exc:
                # The local manifest is the record; a copy that cannot be written is reported, not fatal.
                self.sink_errors.append(redact(_one_line(exc), self.secrets))
                self.sinks.remove(sink)

    def update(self, **fields: Any) -> None:
        for key, value in fields.items():
            setattr(self.manifest, key, value)
        self.save()

    @contextmanager
    def step(self, name: str) -> Iterator[StepRecord]:
        """A cutover step: recorded in `steps`; its failure is the run's `failure`."""
        with self._step(name, self.manifest.steps, rollback=False) as record:
            yield record

    @contextmanager
    def rollback_step(self, name: str) -> Iterator[StepRecord]:
        """A rollback step: recorded in `rollback.steps`; the cutover's own failure record is kept."""
        assert self.manifest.rollback is not None
        with self._step(name, self.manifest.rollback.steps, rollback=True) as record:
            yield record

    @contextmanager
    def _step(self, name: str, steps: list[StepRecord], *, rollback: bool) -> Iterator[StepRecord]:
        record = StepRecord(name=name)
        steps.append(record)
        if not rollback and name in PRODUCTION_STEPS:
            # Recorded before the step runs: a crash mid-step must still read as "touched".
            self.manifest.production_touched = True
        self.save()
        self._tell(record, self.started)
        started = time.monotonic()
        try:
            yield record
        except BaseException as exc:
            record.status = "failed"
            record.error = redact(_one_line(exc), self.secrets)
            if rollback:
                self.manifest.rollback.error = f"{name}: {record.error}"
            else:
                self.manifest.failure = {"step": name, "error": record.error, "trace": redact(_trace(exc), self.secrets)}
                if getattr(exc, "stderr", None):  # a command's own words (alembic's traceback) beat our summary
                    self.manifest.failure["output"] = redact(_tail(exc.stderr), self.secrets)
            raise
        else:
            if record.status == "running":
                record.status = "succeeded"
        finally:
            record.ended_at = utcnow()
            record.seconds = round(time.monotonic() - started, 3)
            self.save()
            self._tell(record)

    def _tell(self, record: StepRecord, listeners: list[Callable[[StepRecord], object]] | None = None) -> None:
        for listener in self.listeners if listeners is None else listeners:
            try:
                listener(record)
            except Exception:  # progress display must never fail a step
                pass

    def skip(self, name: str, reason: str) -> None:
        record = StepRecord(name=name, status=Status.SKIPPED, ended_at=utcnow(), seconds=0.0,
                            detail={"reason": reason})
        self.manifest.steps.append(record)
        self.save()
        self._tell(record)

    def finish(self, status: str) -> None:
        self.manifest.status = status
        self.manifest.finished_at = utcnow()
        self.save()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or exc.__class__.__name__


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])[-4000:]


def _trace(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc))[-2000:]
