"""One pass over the data: pg_dump writes the backup while pg_restore reads it into scratch."""

from __future__ import annotations

import pytest

from pg_cutover.backup.dump import StreamedRestore, stream_backup
from pg_cutover.digest import sha256_file
from pg_cutover.errors import ConfigError, PreflightError, StepFailed
from pg_cutover.pg import db
from pg_cutover.pg.tools import PgClient, compression_args, locate_bin_dir
from pg_cutover.process import Runner
from pg_cutover.settings import load_settings
from tests.helpers import data_fingerprint


@pytest.fixture
def pg(conn) -> PgClient:
    bin_dir, major = locate_bin_dir(None, db.probe(conn, "postgres") // 10000, Runner())
    return PgClient(bin_dir=bin_dir, major=major, conn=conn, runner=Runner(), timeout=600)


def test_streamed_restore_is_the_backup(pg, conn, pilot_factory, tmp_path):
    pilot = pilot_factory(reviews=20000)
    scratch = f"{pilot}_scratch_stream"
    outcome, restore = stream_backup(pg, pilot, tmp_path / "p.dump", scratch, compression="1")
    restore.wait()

    assert data_fingerprint(conn, scratch) == data_fingerprint(conn, pilot)
    assert restore.fed_bytes >= outcome.record.size_bytes  # every byte of the file went through pg_restore
    assert outcome.record.sha256 == sha256_file(tmp_path / "p.dump") and outcome.record.compression == "1"
    assert (tmp_path / "p.dump").stat().st_mode & 0o777 == 0o600
    # The kept file is a complete, seekable archive: a parallel restore of it works too (the rollback's path).
    pg.createdb(f"{pilot}_scratch_again")
    pg.restore(f"{pilot}_scratch_again", tmp_path / "p.dump", jobs=2)
    assert data_fingerprint(conn, f"{pilot}_scratch_again") == data_fingerprint(conn, pilot)


def test_a_failing_restore_is_reported_with_its_reason(pg, conn, pilot_factory, tmp_path):
    pilot = pilot_factory(reviews=10)
    scratch = f"{pilot}_scratch_bad"
    pg.createdb(scratch)
    junk = tmp_path / "not-an-archive.dump"
    junk.write_bytes(b"this is not a pg_dump archive\n" * 100)
    restore = StreamedRestore(pg, junk, scratch, timeout=60)
    restore.dump_done.set()
    with pytest.raises(StepFailed, match="pg_restore into the scratch copy failed with exit code 1: .*archive"):
        restore.wait()


def test_compression_settings(cutover_env):
    assert compression_args("1", 15) == ["--compress", "1"]
    assert compression_args("zstd:3", 16) == ["--compress", "zstd:3"]
    assert compression_args("gzip:4", 15) == ["--compress", "4"]
    with pytest.raises(PreflightError, match="needs pg_dump 16 or newer"):
        compression_args("lz4", 15)
    cutover_env.setenv("CUTOVER_DUMP_COMPRESSION", "fast")
    with pytest.raises(ConfigError, match=r"^CUTOVER_DUMP_COMPRESSION is invalid \('fast'\): expected a gzip level"):
        load_settings()
