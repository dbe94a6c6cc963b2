"""Issue 22, item 3: S3 credentials from a Prefect block (CUTOVER_S3_CREDENTIALS_BLOCK).

The worker's environment holds no AWS credentials at all; the block, saved in the test Prefect API, holds
moto's. boto3's default chain stays the default when the setting is unset.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import boto3
import pytest

from pg_cutover.errors import ConfigError
from pg_cutover.settings import load_settings
from pg_cutover.storage.credentials import S3Credentials
from pg_cutover.storage.s3 import S3Store
from tests.run_evidence import everything_shown

BLOCK_SECRET = "blk-S3cret-" + uuid.uuid4().hex  # moto takes any secret; this one must show up nowhere
AWS_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                   "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION")


@pytest.fixture
def no_aws_env(offsite_env, tmp_path):
    """A worker without AWS credentials: no variables, no credential files, no instance metadata."""
    for name in AWS_CREDENTIALS:
        offsite_env.delenv(name, raising=False)
    offsite_env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    offsite_env.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    offsite_env.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert boto3.session.Session().get_credentials() is None  # the default chain has nothing to give
    return offsite_env


def block_name() -> str:
    return f"moto-{uuid.uuid4().hex[:10]}"


def objects(endpoint: str, bucket: str) -> dict[str, int]:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="reader",
                          aws_secret_access_key="reader")
    return {o["Key"]: o["Size"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}


@pytest.mark.unit
def test_the_secret_is_in_no_repr():
    creds = S3Credentials(source="CUTOVER_S3_CREDENTIALS_BLOCK='x' (AwsCredentials)", access_key_id="id",
                          secret_access_key=BLOCK_SECRET, session_token="tok-" + BLOCK_SECRET)
    store = S3Store(bucket="b", credentials=creds)
    assert BLOCK_SECRET not in repr(creds) + repr(store) + str(store)
    settings = load_settings(POSTGRES_DB="pilot")
    settings.keep_secret(*creds.secrets)
    assert BLOCK_SECRET in settings.secrets and "tok-" + BLOCK_SECRET in settings.secrets


@pytest.mark.unit
def test_a_block_setting_without_the_task_layer_is_refused_not_ignored():
    settings = load_settings(POSTGRES_DB="pilot", CUTOVER_S3_BUCKET="bkt", CUTOVER_S3_CREDENTIALS_BLOCK="moto")
    with pytest.raises(ConfigError, match=r"^CUTOVER_S3_CREDENTIALS_BLOCK='moto' is set, but this command does not"):
        S3Store.from_settings(settings)
    with pytest.raises(ConfigError, match=r"^CUTOVER_S3_CREDENTIALS_BLOCK is invalid \('Moto_1'\): expected the name"):
        load_settings(POSTGRES_DB="pilot", CUTOVER_S3_CREDENTIALS_BLOCK="Moto_1")


def test_a_cutover_mirrors_with_the_blocks_credentials_and_never_shows_the_secret(
        prefect_api, conn, pilot, no_aws_env, s3_endpoint, bucket, caplog):
    from prefect_aws import AwsCredentials

    from pg_cutover.flows.cutover import cutover
    from pg_cutover.runbook.checklist import Checklist
    from pg_cutover.runbook.manifest import load_manifest

    name = block_name()
    AwsCredentials(aws_access_key_id="moto-key-id", aws_secret_access_key=BLOCK_SECRET,
                   region_name="us-east-1").save(name)
    no_aws_env.setenv("CUTOVER_S3_CREDENTIALS_BLOCK", name)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="prefect")

    state = cutover(approved_by="alice", checklist=Checklist.all_confirmed(), return_state=True)

    assert state.is_completed(), state.message
    manifest = load_manifest(Path(state.result()["manifest"]))
    assert manifest.step("offsite-mirror").status == "succeeded"
    stored = objects(s3_endpoint, bucket)
    dump = manifest.offsite.object_for(Path(manifest.backup.path).name)
    assert stored[dump.key] == manifest.backup.size_bytes and "server SHA-256" in dump.verified_by
    assert manifest.offsite.prefix + "manifest.json" in stored
    # The secret: in no artifact, log line (the API's and this process's), manifest, report or run file.
    shown = everything_shown(state.state_details.flow_run_id)
    assert any(t.startswith("log ") for t in shown) and any(t.startswith("artifact ") for t in shown)
    assert [t for t in shown if BLOCK_SECRET in t] == []
    assert BLOCK_SECRET not in caplog.text
    run_dir = Path(state.result()["manifest"]).parent
    assert [p for p in run_dir.rglob("*") if p.is_file() and p.suffix in (".json", ".md", ".log", ".txt")
            and BLOCK_SECRET in p.read_text(errors="replace")] == []
    assert BLOCK_SECRET not in " ".join(str(v) for v in os.environ.values())


@pytest.mark.parametrize("kind", ["missing", "secret"])
def test_a_bad_block_stops_the_run_at_preflight_with_nothing_changed(
        prefect_api, conn, pilot, no_aws_env, s3_endpoint, bucket, kind):
    from prefect.blocks.system import Secret

    from pg_cutover.flows.cutover import cutover
    from pg_cutover.pg import db
    from pg_cutover.runbook.checklist import Checklist
    from tests.helpers import data_fingerprint

    name = block_name()
    if kind == "secret":
        Secret(value=BLOCK_SECRET).save(name)
    no_aws_env.setenv("CUTOVER_S3_CREDENTIALS_BLOCK", name)
    before = data_fingerprint(conn, pilot)

    state = cutover(approved_by="alice", checklist=Checklist.all_confirmed(), return_state=True)

    assert state.is_failed()
    expected = {
        "missing": f"CUTOVER_S3_CREDENTIALS_BLOCK='{name}' names no block in the Prefect API; expected the name of "
                   "an AwsCredentials or MinIOCredentials block (see `prefect block ls`). Nothing was changed.",
        "secret": f"CUTOVER_S3_CREDENTIALS_BLOCK='{name}' is a Secret block; expected the name of an AwsCredentials "
                  "or MinIOCredentials block. Nothing was changed.",
    }[kind]
    assert expected in state.message
    assert db.alembic_revision(conn, pilot) is None and data_fingerprint(conn, pilot) == before
    assert objects(s3_endpoint, bucket) == {}
    assert not list(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("*.dump"))
    assert BLOCK_SECRET not in state.message


def test_a_minio_block_with_its_own_endpoint(prefect_api, no_aws_env, s3_endpoint, bucket, tmp_path):
    """MinIOCredentials: user and password, and the server's URL in its client parameters."""
    from prefect_aws import MinIOCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    from pg_cutover.tasks.s3_credentials import offsite_store

    name = block_name()
    MinIOCredentials(minio_root_user="minio", minio_root_password=BLOCK_SECRET, region_name="us-east-1",
                     aws_client_parameters=AwsClientParameters(endpoint_url=s3_endpoint)).save(name)
    no_aws_env.delenv("CUTOVER_S3_ENDPOINT_URL")
    settings = load_settings(CUTOVER_S3_CREDENTIALS_BLOCK=f"minio-credentials/{name}")

    store = offsite_store(settings)

    assert store.endpoint_url == s3_endpoint and BLOCK_SECRET in settings.secrets
    store.check_bucket()
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)
    from pg_cutover.digest import sha256_file

    assert store.upload_file(path, "k/f.bin", sha256_file(path)).size_bytes == 1000
    assert objects(s3_endpoint, bucket) == {"k/f.bin": 1000}


def test_a_rollback_fetches_the_backup_with_the_blocks_credentials(prefect_api, conn, pilot, no_aws_env, s3_endpoint,
                                                                   bucket):
    """The rollback flow builds its store from the block too: the local dump is damaged, S3 has the good one."""
    from prefect_aws import AwsCredentials

    from pg_cutover.flows.cutover import cutover
    from pg_cutover.flows.rollback import rollback
    from pg_cutover.pg import db
    from pg_cutover.runbook.checklist import Checklist
    from pg_cutover.runbook.manifest import load_manifest
    from tests.helpers import data_fingerprint

    name = block_name()
    AwsCredentials(aws_access_key_id="moto-key-id", aws_secret_access_key=BLOCK_SECRET,
                   region_name="us-east-1").save(name)
    no_aws_env.setenv("CUTOVER_S3_CREDENTIALS_BLOCK", name)
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{pilot}" SET default_transaction_read_only = on')  # production's stamp fails
    before = data_fingerprint(conn, pilot)
    failed = cutover(approved_by="alice", checklist=Checklist.all_confirmed(), rollback_on_failure=False,
                     return_state=True)
    assert failed.is_failed()
    manifest_path = next(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("manifest.json"))
    local_dump = Path(load_manifest(manifest_path).backup.path)
    local_dump.write_bytes(local_dump.read_bytes()[:100])  # the local copy can no longer be trusted

    state = rollback(manifest=str(manifest_path), return_state=True)

    assert state.is_completed(), state.message
    m = load_manifest(manifest_path)
    assert m.rollback.status == "restored" and m.rollback.restored_from.startswith(f"s3://{bucket}/")
    assert data_fingerprint(conn, pilot) == before
    shown = everything_shown(state.state_details.flow_run_id) + everything_shown(failed.state_details.flow_run_id)
    assert [t for t in shown if BLOCK_SECRET in t] == []
    assert BLOCK_SECRET not in manifest_path.read_text()
