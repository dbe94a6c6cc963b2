"""Runbook section 2: the full backup, the schema snapshot, and proof they are usable."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pg_cutover.digest import sha256_file
from pg_cutover.errors import StepFailed
from pg_cutover.pg.tools import PgClient, archive_tables
from pg_cutover.process import CommandResult, exit_status, last_lines, redact
from pg_cutover.runbook.manifest import BackupRecord
from pg_cutover.throughput import Count, LineCounter, Ticker, human_bytes, without_chatter

CHUNK = 1024 * 1024


def _private(path: Path) -> None:
    if path.exists():
        os.chmod(path, 0o600)


@dataclass
class BackupOutcome:
    record: BackupRecord
    dump: CommandResult


class StreamedRestore:
    """pg_restore of the backup file into the scratch database, fed while pg_dump still writes it.

    The scratch copy is restored from exactly the bytes of the backup file (that is what proves
    the backup restores) without waiting for the dump to end. The file is the buffer between
    the two processes, so the dump is never slowed by the restore and memory stays bounded.
    """

    def __init__(self, pg: PgClient, path: Path, scratch_db: str, timeout: float):
        self.path = path
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.dump_done = threading.Event()
        self.dump_failed = False
        self.fed_bytes = 0
        self.feed_error: str | None = None
        self.stderr = tempfile.TemporaryFile()
        # --verbose: one stderr line per item restored, which is how far it has got (see `items`).
        self.proc = subprocess.Popen(pg.restore_argv(scratch_db, verbose=True), stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=self.stderr, env=pg.env())
        self.items = LineCounter(self.stderr.fileno())
        self.started = time.monotonic()
        self.runner = pg.runner
        self.thread = threading.Thread(target=self._feed, name="scratch-restore-feed", daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        try:
            with open(self.path, "rb") as src:
                while True:
                    chunk = src.read(CHUNK)
                    if chunk:
                        self.proc.stdin.write(chunk)
                        self.fed_bytes += len(chunk)
                        continue
                    if self.dump_failed or time.monotonic() > self.deadline:
                        return
                    if self.dump_done.is_set():
                        # The dump has ended: whatever is still unread is the rest of the archive.
                        while chunk := src.read(CHUNK):
                            self.proc.stdin.write(chunk)
                            self.fed_bytes += len(chunk)
                        return
                    self.dump_done.wait(0.02)
        except (BrokenPipeError, OSError) as exc:
            self.feed_error = f"{type(exc).__name__}: {exc}"  # pg_restore stopped reading; its stderr says why
        finally:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def abort(self) -> None:
        self.dump_failed = True
        self.dump_done.set()
        self.proc.kill()
        self.proc.wait()
        self.thread.join(10)

    def so_far(self) -> Count:
        """Bytes fed to pg_restore (of the backup's size once the dump has ended) and items it has restored."""
        total = self.path.stat().st_size if self.dump_done.is_set() else None
        return Count(done=self.fed_bytes, total=total, items=self.items.count())

    def wait(self, step: str = "pg_restore") -> float:
        """Block until pg_restore has finished; seconds it took in all. Raises with its stderr on failure."""
        with Ticker(step, "fed", self.so_far):
            self.thread.join(max(0.0, self.deadline - time.monotonic()))
            try:
                code = self.proc.wait(max(1.0, self.deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                late = f"pg_restore into the scratch copy did not finish within {self.timeout:.0f} s."
                raise StepFailed(late) from None
        self.stderr.seek(0)
        err = redact(without_chatter(self.stderr.read().decode(errors="replace")), self.runner.secrets)
        self.stderr.close()
        if code != 0:
            raise StepFailed(f"pg_restore into the scratch copy {exit_status(code)}: {last_lines(err)}")
        return time.monotonic() - self.started


def _written(path: Path, beside: StreamedRestore | None = None) -> Count:
    """The dump's size so far, and how far the restore fed from it has got."""
    note = ""
    if beside is not None:
        fed = beside.so_far()
        note = f"scratch restore {human_bytes(fed.done)} fed, {fed.items} item{'' if fed.items == 1 else 's'} restored"
    return Count(done=path.stat().st_size, note=note)


def stream_backup(pg: PgClient, dbname: str, path: Path, scratch_db: str, *,
                  compression: str | None, step: str = "pg_dump") -> tuple[BackupOutcome, StreamedRestore]:
    """2.1 and 3.1 in one pass over the data: the full backup, and its restore into scratch under way.

    Returns when the backup file is complete; the restore may still be running (wait on it).
    """
    path.touch(mode=0o600, exist_ok=False)
    pg.createdb(scratch_db)
    restore = StreamedRestore(pg, path, scratch_db, pg.timeout)
    try:
        with Ticker(step, "written", lambda: _written(path, restore)):
            result = pg.runner.run(pg.dump_argv(dbname, path, compression=compression), timeout=pg.timeout,
                                   env_extra=pg.conn.libpq_env(), what="pg_dump")
    except BaseException:
        restore.abort()
        # Half a dump is no backup, and on a full disk its bytes are the room the manifest
        # and the report need to say what happened.
        path.unlink(missing_ok=True)
        raise
    restore.dump_done.set()
    _private(path)
    record = BackupRecord(path=str(path.resolve()), size_bytes=path.stat().st_size, sha256=sha256_file(path),
                          pg_dump_major=pg.major, compression=compression or "pg_dump default")
    return BackupOutcome(record=record, dump=result), restore


def plain_backup(pg: PgClient, dbname: str, path: Path, *, compression: str | None,
                 step: str = "pg_dump") -> BackupRecord:
    """`pg_dump -Fc` of a database nobody writes to (the clone strategy's original), with its SHA-256."""
    path.touch(mode=0o600, exist_ok=False)
    try:
        with Ticker(step, "written", lambda: _written(path)):
            pg.runner.run(pg.dump_argv(dbname, path, compression=compression), timeout=pg.timeout,
                          env_extra=pg.conn.libpq_env(), what="pg_dump")
    except BaseException:
        path.unlink(missing_ok=True)  # half a dump is no backup
        raise
    _private(path)
    return BackupRecord(path=str(path.resolve()), size_bytes=path.stat().st_size, sha256=sha256_file(path),
                        pg_dump_major=pg.major, compression=compression or "pg_dump default")


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
