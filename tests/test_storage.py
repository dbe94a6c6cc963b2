"""The S3 backup store against a real S3 HTTP server (moto's, on loopback), through boto3."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import boto3
import pytest

from pg_cutover.backup.retention import apply_prune, plan_prune
from pg_cutover.digest import sha256_file
from pg_cutover.runbook.manifest import BackupRecord, Manifest, OffsiteRecord
from pg_cutover.storage.s3 import MiB, S3Store, StorageError, verified_dump


def store_for(endpoint: str, bucket: str, **kw) -> S3Store:
    return S3Store(bucket=bucket, endpoint_url=endpoint, part_size=5 * MiB, **kw)


def random_file(path: Path, size: int) -> Path:
    with open(path, "wb") as fh:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, MiB))
            fh.write(chunk)
            remaining -= len(chunk)
    return path


def raw(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def test_multipart_round_trip_is_verified_by_the_server(s3_endpoint, bucket, tmp_path):
    store = store_for(s3_endpoint, bucket)
    dump = random_file(tmp_path / "pilot.dump", 12 * MiB + 4321)  # three 5 MiB parts
    sha = sha256_file(dump)

    obj = store.upload_file(dump, "pg-cutover/pilot/20260101_000000/pilot.dump", sha)

    assert obj.size_bytes == dump.stat().st_size and obj.sha256 == sha
    assert obj.server_checksum, "the server kept a SHA-256 checksum of the parts"
    assert "server SHA-256 checksum matched" in obj.verified_by
    head = raw(s3_endpoint).head_object(Bucket=bucket, Key=obj.key)
    assert head["ContentLength"] == dump.stat().st_size and head["Metadata"]["sha256"] == sha
    back = store.download(obj.key, tmp_path / "back.dump", sha)
    assert back.read_bytes() == dump.read_bytes()


def test_checksum_off_mode_sends_no_checksum_headers_and_still_verifies(s3_endpoint, bucket, tmp_path):
    store = store_for(s3_endpoint, bucket, checksum="off")
    dump = random_file(tmp_path / "p.dump", 6 * MiB)
    obj = store.upload_file(dump, "k/p.dump", sha256_file(dump))
    assert obj.server_checksum is None and "SHA-256 metadata" in obj.verified_by


def test_a_corrupted_object_is_refused_for_restore(s3_endpoint, bucket, tmp_path):
    store = store_for(s3_endpoint, bucket)
    dump = random_file(tmp_path / "p.dump", 6 * MiB)
    sha = sha256_file(dump)
    obj = store.upload_file(dump, "k/p.dump", sha)
    raw(s3_endpoint).put_object(Bucket=bucket, Key=obj.key, Body=b"replaced by someone else")

    with pytest.raises(StorageError, match="corrupted or replaced; refusing to restore"):
        store.download(obj.key, tmp_path / "back.dump", sha)
    assert not (tmp_path / "back.dump").exists() and not (tmp_path / "back.dump.part").exists()
    with pytest.raises(StorageError, match="the copy is not the backup"):
        from pg_cutover.digest import file_digests

        store.verify(obj.key, file_digests(dump, store.part_size))


def _manifest_for(dump: Path, sha: str, offsite: OffsiteRecord | None) -> Manifest:
    return Manifest(run_id="r1", database="pilot", host="h", port=5432,
                    backup=BackupRecord(path=str(dump), size_bytes=dump.stat().st_size, sha256=sha), offsite=offsite)


def test_restore_side_uses_the_local_file_else_a_verified_download(s3_endpoint, bucket, tmp_path):
    store = store_for(s3_endpoint, bucket)
    dump = random_file(tmp_path / "pilot_x.dump", 7 * MiB)
    sha = sha256_file(dump)
    obj = store.upload_file(dump, "pg-cutover/pilot/x/pilot_x.dump", sha)
    manifest = _manifest_for(dump, sha, OffsiteRecord(bucket=bucket, prefix="pg-cutover/pilot/x/", objects=[obj]))

    path, source = verified_dump(manifest, store, tmp_path / "work")
    assert (path, source) == (dump, "local")

    original = dump.read_bytes()
    dump.unlink()
    path, source = verified_dump(manifest, store, tmp_path / "work")
    assert source == f"s3://{bucket}/{obj.key}"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha and path.read_bytes() == original

    # A local file that changed is not trusted either; the download replaces it.
    dump.write_bytes(b"truncated")
    path, source = verified_dump(manifest, store, tmp_path / "work2")
    assert source.startswith("s3://") and sha256_file(path) == sha

    raw(s3_endpoint).put_object(Bucket=bucket, Key=obj.key, Body=b"corrupt")
    with pytest.raises(StorageError, match="refusing to restore"):
        verified_dump(manifest, store, tmp_path / "work3")
    with pytest.raises(StorageError, match="no off-site copy is recorded"):
        verified_dump(_manifest_for(dump, sha, None), store, tmp_path / "work4")


def test_retention_keeps_the_newest_success_and_unfinished_runs(s3_endpoint, bucket):
    store = store_for(s3_endpoint, bucket)
    statuses = {  # oldest first
        "20260101_000000": "succeeded",  # newest success outside the kept window: kept
        "20260102_000000": "failed",
        "20260103_000000": "running",    # not ended: kept
        "20260104_000000": "failed",
        "20260105_000000": "failed",
        "20260106_000000": "failed",
    }
    for ts, status in statuses.items():
        m = Manifest(run_id=ts, database="pilot", host="h", port=1, status=status)
        store.put_text(store.run_prefix("pilot", ts) + "manifest.json", m.model_dump_json())
        store.put_text(store.run_prefix("pilot", ts) + "pilot.dump", "dump " + ts)
    store.put_text(store.run_prefix("other", "20260101_000000") + "manifest.json", "{}")

    plan = plan_prune(store, "pilot", keep=2)
    assert plan.delete == ["20260102_000000", "20260104_000000"]
    kept = dict(plan.keep)
    assert kept["20260101_000000"] == "newest successful cutover"
    assert kept["20260103_000000"] == "run has not ended"
    assert set(kept) == {"20260101_000000", "20260103_000000", "20260105_000000", "20260106_000000"}

    assert apply_prune(store, plan) == 4
    assert store.list_runs("pilot") == sorted(kept)
    assert store.list_runs("other") == ["20260101_000000"]
    assert plan_prune(store, "pilot", keep=0).delete == []


def test_setup_errors_are_one_sentence(s3_endpoint, bucket, monkeypatch, tmp_path):
    with pytest.raises(StorageError, match=r"CUTOVER_S3_BUCKET='no-such-bucket' does not exist"):
        store_for(s3_endpoint, "no-such-bucket").check_bucket()
    with pytest.raises(StorageError, match=r"CUTOVER_S3_ENDPOINT_URL=http://127.0.0.1:1 does not answer"):
        store_for("http://127.0.0.1:1", bucket, max_attempts=1).check_bucket()
    with pytest.raises(StorageError, match="has no object lock enabled"):
        store_for(s3_endpoint, bucket, object_lock_days=7).check_bucket()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StorageError, match="no S3 credentials were found"):
        store_for(s3_endpoint, bucket).check_bucket()


def test_object_lock_retention_is_set_where_the_bucket_supports_it(s3_endpoint, tmp_path):
    name = "locked-" + os.urandom(4).hex()
    raw(s3_endpoint).create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    store = store_for(s3_endpoint, name, object_lock_days=3)
    store.check_bucket()
    dump = random_file(tmp_path / "p.dump", MiB)
    obj = store.upload_file(dump, "k/p.dump", sha256_file(dump))
    head = raw(s3_endpoint).head_object(Bucket=name, Key=obj.key)
    assert head["ObjectLockMode"] == "GOVERNANCE" and head["ObjectLockRetainUntilDate"]


def test_cli_prune_dry_run_lists_and_deletes_nothing(cutover_env, s3_endpoint, bucket, capsys):
    from pg_cutover.launcher.cli import main

    store = store_for(s3_endpoint, bucket)
    for ts, status in (("20260101_000000", "failed"), ("20260102_000000", "succeeded"), ("20260103_000000", "failed")):
        m = Manifest(run_id=ts, database="pilot", host="h", port=1, status=status)
        store.put_text(store.run_prefix("pilot", ts) + "manifest.json", m.model_dump_json())
    cutover_env.setenv("POSTGRES_DB", "pilot")
    cutover_env.setenv("CUTOVER_S3_BUCKET", bucket)
    cutover_env.setenv("CUTOVER_S3_ENDPOINT_URL", s3_endpoint)

    assert main(["prune", "--dry-run", "--keep", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "20260101_000000  would delete  older than the newest kept runs",
        "20260102_000000  keep          newest successful cutover",
        "20260103_000000  keep          among the newest 1",
    ]
    assert len(store.list_runs("pilot")) == 3
    assert main(["prune", "--keep", "1"]) == 0
    assert store.list_runs("pilot") == ["20260102_000000", "20260103_000000"]
