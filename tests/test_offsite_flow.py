"""The cutover with its off-site mirror: a real S3 HTTP server, real PostgreSQL, the Prefect API."""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3

from pg_cutover.flows.cutover import cutover
from pg_cutover.pg import db
from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.manifest import Manifest, load_manifest
from tests.conftest import HEAD, S3_SECRET
from tests.helpers import artifacts_of, data_fingerprint, databases_like

APPROVED = dict(approved_by="alice", checklist=Checklist.all_confirmed())


def s3(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def keys(endpoint, bucket) -> dict[str, int]:
    listing = s3(endpoint).list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: o["Size"] for o in listing}


def test_backup_is_mirrored_and_proven_before_production(prefect_api, conn, pilot, offsite_env, s3_endpoint, bucket):
    state = cutover(**APPROVED, return_state=True)
    assert state.is_completed(), state.message
    assert db.alembic_revision(conn, pilot) == HEAD

    manifest = load_manifest(Path(state.result()["manifest"]))
    run_prefix = f"pg-cutover/{pilot}/{Path(manifest.backup.path).parent.name}/"
    stored = keys(s3_endpoint, bucket)
    dump_key = run_prefix + Path(manifest.backup.path).name
    assert set(stored) == {dump_key, run_prefix + Path(manifest.backup.schema_path).name,
                           run_prefix + "manifest.json", run_prefix + "report.md"}
    assert stored[dump_key] == manifest.backup.size_bytes
    head = s3(s3_endpoint).head_object(Bucket=bucket, Key=dump_key)
    assert head["Metadata"]["sha256"] == manifest.backup.sha256
    # The off-site manifest is the final one, and says where the copy is.
    remote = Manifest.model_validate_json(s3(s3_endpoint).get_object(Bucket=bucket, Key=run_prefix + "manifest.json")["Body"].read())
    assert remote.status == "succeeded" and remote.offsite.objects[0].sha256 == manifest.backup.sha256
    # The mirror finished before production was touched.
    names = [s.name for s in manifest.steps]
    assert names.index("offsite-mirror") < names.index("production-stamp")
    assert manifest.step("offsite-mirror").status == "succeeded"

    arts = artifacts_of(state.state_details.flow_run_id)
    key = pilot.replace("_", "-")
    table = json.loads(arts[f"{key}-offsite"])
    assert {r["key"] for r in table} == {dump_key, run_prefix + Path(manifest.backup.schema_path).name}
    assert all(r["sha256"] and r["bucket"] == bucket for r in table)
    # By default the link names the object: no bearer link to the data (tests/test_offsite_links.py).
    link = arts[f"{key}-offsite-dump"].split("](", 1)[1].rstrip(")")
    assert link == f"s3://{bucket}/{dump_key}"
    assert f"s3://{bucket}/{run_prefix}" in arts[f"{key}-cutover-report"]
    evidence = [str(v) for v in arts.values()] + [json.dumps(remote.model_dump(mode="json"))]
    assert not [e for e in evidence if S3_SECRET in e]


def test_unreachable_endpoint_stops_before_production(prefect_api, conn, pilot, offsite_env):
    offsite_env.setenv("CUTOVER_S3_ENDPOINT_URL", "http://127.0.0.1:1")
    offsite_env.setenv("CUTOVER_S3_MAX_ATTEMPTS", "2")
    before = data_fingerprint(conn, pilot)

    state = cutover(**APPROVED, return_state=True)

    assert state.is_failed()
    assert "CUTOVER_S3_ENDPOINT_URL=http://127.0.0.1:1 does not answer" in state.message
    assert db.alembic_revision(conn, pilot) is None and data_fingerprint(conn, pilot) == before
    assert databases_like(conn, f"{pilot}_scratch") == []
    assert not list(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("*.dump"))


def test_offsite_optional_when_not_required(prefect_api, conn, pilot, offsite_env):
    offsite_env.setenv("CUTOVER_S3_BUCKET", "bucket-that-is-not-there")
    offsite_env.setenv("CUTOVER_REQUIRE_OFFSITE", "false")

    state = cutover(**APPROVED, return_state=True)

    assert state.is_completed(), state.message
    assert db.alembic_revision(conn, pilot) == HEAD
    manifest = load_manifest(Path(state.result()["manifest"]))
    assert manifest.offsite is None and "offsite-mirror" not in [s.name for s in manifest.steps]


def test_retention_runs_after_a_successful_cutover(prefect_api, conn, pilot, offsite_env, s3_endpoint, bucket):
    from pg_cutover.storage.s3 import S3Store

    store = S3Store(bucket=bucket, endpoint_url=s3_endpoint)
    for ts in ("20200101_000000", "20200102_000000"):
        m = Manifest(run_id=ts, database=pilot, host="h", port=1, status="failed")
        store.put_text(store.run_prefix(pilot, ts) + "manifest.json", m.model_dump_json())
    offsite_env.setenv("CUTOVER_S3_KEEP", "2")

    state = cutover(**APPROVED, return_state=True)

    assert state.is_completed(), state.message
    runs = store.list_runs(pilot)
    assert runs[0] == "20200102_000000" and len(runs) == 2  # the oldest failed run was pruned
    manifest = load_manifest(Path(state.result()["manifest"]))
    assert manifest.step("offsite-prune").status == "succeeded"
