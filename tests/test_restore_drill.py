"""Restore drills (issue 22 item 2): each database's newest successful cutover restored from its off-site copy
into a throwaway database, checked and dropped. Real PostgreSQL, the moto S3 server, the Prefect test API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pandas as pd
from prefect.utilities.callables import parameter_schema

from pg_cutover.backup import drill
from pg_cutover.flows.cutover import cutover
from pg_cutover.flows.drill import restore_drill
from pg_cutover.migrations import safety
from pg_cutover.pg import db
from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.manifest import MANIFEST_NAME, load_manifest
from pg_cutover.settings import load_settings
from pg_cutover.storage.s3 import S3Store
from pg_cutover.toolkit import Toolkit
from tests.conftest import HEAD
from tests.helpers import artifacts_of, data_fingerprint, databases_like

APPROVED = dict(approved_by="alice", checklist=Checklist.all_confirmed())


def _cut_over(env, database: str):
    """A real cutover of `database` with its off-site copy; returns its manifest."""
    env.setenv("POSTGRES_DB", database)
    state = cutover(**APPROVED, return_state=True)
    assert state.is_completed(), state.message
    return load_manifest(Path(state.result()["manifest"]))


def _two_cutovers(offsite_env, pilot, pilot_factory, conn):
    second = pilot_factory(reviews=150)
    manifests = {name: _cut_over(offsite_env, name) for name in (pilot, second)}
    production = {name: (db.alembic_revision(conn, name), data_fingerprint(conn, name)) for name in manifests}
    assert all(rev == HEAD for rev, _ in production.values())
    return manifests, production


def _dump_key(m) -> str:
    return m.offsite.object_for(Path(m.backup.path).name).key


def _drill_rows(state) -> dict[str, dict]:
    table = json.loads(artifacts_of(state.state_details.flow_run_id)["restore-drill"])
    return {row["database"]: row for row in table}


def _drill_events(flow_run_id, expected: int, wait_seconds: float = 30.0) -> set[tuple[str, str, str]]:
    """(event, database, outcome) of the flow run's pg-cutover.drill.* events in the API; waits for `expected`."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    query = {"filter": {"event": {"name": ["pg-cutover.drill.passed", "pg-cutover.drill.failed"]},
                        "related": {"id": [f"prefect.flow-run.{flow_run_id}"]}}, "limit": 50}
    deadline = time.monotonic() + wait_seconds
    while True:
        found = httpx.post(PREFECT_API_URL.value() + "/events/filter", json=query, timeout=10).json()["events"]
        if len(found) >= expected or time.monotonic() > deadline:
            return {(e["event"], e["resource"]["prefect.resource.name"], e["payload"]["outcome"]) for e in found}
        time.sleep(0.2)


def _no_drill_left(conn, names) -> None:
    assert [d for name in names for d in databases_like(conn, f"{name}_drill_")] == []


def _no_download_left() -> None:
    drills = Path(os.environ["CUTOVER_BACKUP_DIR"]) / "drills"
    assert not list(drills.glob("*")), list(drills.glob("*"))


def test_drill_over_two_databases_in_one_run(prefect_api, conn, pilot, pilot_factory, offsite_env, s3_endpoint, bucket,
                                             monkeypatch):
    manifests, production = _two_cutovers(offsite_env, pilot, pilot_factory, conn)

    # The local dumps are gone: the drill restores from the bucket, or not at all.
    for m in manifests.values():
        Path(m.backup.path).unlink()

    state = restore_drill(return_state=True)

    assert state.is_completed(), state.message
    rows = _drill_rows(state)
    assert set(rows) == set(manifests)
    for name, m in manifests.items():
        row = rows[name]
        assert row["result"] == "passed", row
        assert row["backup key"] == _dump_key(m)
        assert row["rows"] == sum(m.row_counts.values()) and row["rows"] > 0
        assert 0 <= float(row["age (hours)"]) < 1 and float(row["restore seconds"]) > 0
        # production untouched: same revision, same data
        assert (db.alembic_revision(conn, name), data_fingerprint(conn, name)) == production[name]
    _no_drill_left(conn, manifests)
    _no_download_left()
    assert state.result()["failed"] == []
    assert _drill_events(state.state_details.flow_run_id, 2) == {("pg-cutover.drill.passed", n, "passed")
                                                                  for n in manifests}

    # A restore that does not hold the manifest's rows fails after its drill database exists: dropped all the same.
    name = next(n for n in manifests if n != pilot)
    m = manifests[name]
    table = sorted(m.row_counts)[0]
    lying = m.model_copy(update={"row_counts": {**m.row_counts, table: m.row_counts[table] + 1}})
    store = S3Store(bucket=bucket, endpoint_url=s3_endpoint)
    store.put_text(m.offsite.prefix + MANIFEST_NAME, lying.model_dump_json())
    pg = Toolkit.from_settings(load_settings()).pg_client(db.probe(conn, "postgres") // 10000)
    passed_one = drill.DrillResult(pilot, status=drill.PASSED)
    result = drill.drill_database(store, pg, conn, name, work_root=Path(os.environ["CUTOVER_BACKUP_DIR"]) / "drills")
    assert not result.passed and "does not hold the pre-cutover rows" in result.reason, result
    assert f"{table} {m.row_counts[table] + 1} != {m.row_counts[table]}" in result.reason
    assert result.drill_db.startswith(f"{name}_drill_")
    _no_drill_left(conn, manifests)
    _no_download_left()
    assert (db.alembic_revision(conn, name), data_fingerprint(conn, name)) == production[name]

    # amcheck that cannot run is said as a warning, never as a pass (this server has amcheck: its absence is
    # what safety.amcheck returns when CREATE EXTENSION is refused).
    store.put_text(m.offsite.prefix + MANIFEST_NAME, m.model_dump_json())
    unavailable = pd.DataFrame([("(amcheck)", "", None, "amcheck is unavailable: permission denied")],
                               columns=safety.AMCHECK_COLUMNS)
    monkeypatch.setattr(safety, "amcheck", lambda conn, dbname: unavailable)
    result = drill.drill_database(store, pg, conn, name, work_root=Path(os.environ["CUTOVER_BACKUP_DIR"]) / "drills")
    assert result.status == drill.WARNING and not result.passed and not result.failed
    assert result.result.startswith("warning: amcheck could not run: amcheck is unavailable: permission denied")
    assert "1 of 2 restore drill(s) passed, 1 with a warning" in drill.summary_line([result, passed_one])
    _no_drill_left(conn, manifests)
    _no_download_left()


def test_drill_fails_on_a_tampered_object_and_says_which(prefect_api, conn, pilot, pilot_factory, offsite_env,
                                                          s3_endpoint, bucket, tmp_path):
    manifests, production = _two_cutovers(offsite_env, pilot, pilot_factory, conn)
    tampered = _dump_key(manifests[pilot])
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    original = s3.get_object(Bucket=bucket, Key=tampered)["Body"].read()
    s3.put_object(Bucket=bucket, Key=tampered, Body=original[:-64] + b"\0" * 64,
                  Metadata={"sha256": manifests[pilot].backup.sha256})  # even its metadata lies

    state = restore_drill(return_state=True)

    assert state.is_failed() and state.name == "DrillFailed", state
    rows = _drill_rows(state)
    other = next(n for n in manifests if n != pilot)
    bad, good = rows[pilot], rows[other]
    assert bad["result"].startswith("failed: ") and tampered in bad["result"], bad
    assert "does not match the backup's SHA-256" in bad["result"] and manifests[pilot].backup.sha256 in bad["result"]
    assert bad["restore seconds"] == "-"
    assert good["result"] == "passed", good
    assert pilot in state.message and tampered in state.message
    events = _drill_events(state.state_details.flow_run_id, 2)
    assert {(e, n) for e, n, _ in events} == {("pg-cutover.drill.failed", pilot), ("pg-cutover.drill.passed", other)}
    assert all(tampered in outcome for e, _, outcome in events if e.endswith("failed"))
    for name in manifests:
        assert (db.alembic_revision(conn, name), data_fingerprint(conn, name)) == production[name]
    _no_drill_left(conn, manifests)
    _no_download_left()

    # `cutover drill` says the same and exits non-zero; only the inventory's database is drilled.
    inventory = tmp_path / "fleet.toml"
    inventory.write_text(f'[[target]]\nname = "tampered"\ndatabase = "{pilot}"\n')
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.run([sys.executable, "-m", "pg_cutover.launcher.cli", "drill", "--inventory", str(inventory)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"{pilot}" in proc.stdout and "failed: " in proc.stdout and tampered in proc.stdout, proc.stdout
    assert other not in proc.stdout
    assert "DrillFailed" in proc.stderr
    _no_drill_left(conn, manifests)


def test_restore_drill_parameters_have_help():
    schema = parameter_schema(restore_drill.fn).model_dump_for_openapi()
    assert schema["properties"]["inventory"]["description"].startswith("Path of a fleet inventory file")
