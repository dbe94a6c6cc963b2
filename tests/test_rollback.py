"""The rollback flow, started by the cutover's own failure hooks, on real PostgreSQL with the
example API run as a service that the rollback stops and starts through the command controller."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from pg_cutover.flows.cutover import cutover
from pg_cutover.pg import db
from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.manifest import load_manifest
from tests.conftest import HEAD
from tests.helpers import artifacts_of, artifacts_with_key, data_fingerprint, databases_like, rollback_runs_of

APPROVED = dict(approved_by="alice", checklist=Checklist.all_confirmed())


def the_manifest() -> "Manifest":  # noqa: F821
    return load_manifest(next(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("manifest.json")))


def assert_rolled_back(conn, pilot, before, api, failed_step):
    m = the_manifest()
    assert m.failure["step"] == failed_step and m.production_touched
    assert m.rollback.status == "restored", m.rollback
    # Every row of every table as before the cutover, and the revision as before (legacy: none).
    assert data_fingerprint(conn, pilot) == before
    assert db.alembic_revision(conn, pilot) is None
    # The database the cutover left behind is kept under its new name, not dropped.
    assert databases_like(conn, f"{pilot}_failed_") == [m.rollback.failed_database]
    assert databases_like(conn, f"{pilot}_restore_") == []
    # The backend was stopped and started by the controller, and answers.
    assert [s.name for s in m.rollback.steps] == [
        "changes-since-cutover", "stop-backend", "fetch-backup", "restore", "database-properties", "swap", "verify", "start-backend"]
    reply = httpx.get(api + "/", timeout=10)
    assert reply.status_code == 200 and reply.json()["revision"] is None
    # The incident record, in the Prefect API and next to the backup.
    incident = artifacts_with_key(f"{pilot.replace('_', '-')}-incident")[0]
    assert "restored from the backup" in incident and m.rollback.failed_database in incident
    assert f"`{failed_step}`" in incident and m.backup.sha256 in incident
    assert (Path(m.backup.path).parent / "incident.md").read_text() == incident
    # One rollback run answered the failure: named after the database and the cutover, its state says what it did.
    runs = rollback_runs_of(m.flow_run_id)
    assert len(runs) == 1 and runs[0].state.name == "Restored" and runs[0].name.startswith(f"rollback-{pilot}-of-")
    # The cutover's own run links to it, and its outcome says production was restored.
    key = pilot.replace("_", "-")
    assert json.loads(artifacts_with_key(f"{key}-outcome")[0])[0]["rollback"] == "restored"  # the newest version
    assert str(runs[0].id) in artifacts_of(m.flow_run_id)[f"{key}-rollback-run"]
    return m


def test_stamp_failure_on_production_is_rolled_back(prefect_api, conn, pilot, cutover_env, managed_api):
    before = data_fingerprint(conn, pilot)
    # Production refuses writes; the scratch copy (restored without database settings) does not,
    # so the dry run passes and `alembic stamp` fails on production.
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{pilot}" SET default_transaction_read_only = on')

    state = cutover(**APPROVED, return_state=True)

    assert state.is_failed()
    assert_rolled_back(conn, pilot, before, managed_api, "production-stamp")


def test_upgrade_failing_halfway_is_rolled_back(prefect_api, conn, pilot, cutover_env, managed_api, halfway_alembic_dir):
    cutover_env.setenv("CUTOVER_ALEMBIC_DIR", str(halfway_alembic_dir))
    # The cutover stops the backend itself: what the failed upgrade committed can only be its own.
    cutover_env.setenv("CUTOVER_WRITE_FREEZE", "stop-service")
    before = data_fingerprint(conn, pilot)

    state = cutover(**APPROVED, return_state=True)

    assert state.is_failed()
    m = assert_rolled_back(conn, pilot, before, managed_api, "production-upgrade")
    assert "injected failure halfway" in m.failure["error"]
    # The incident carries the migration's own error (alembic's last lines), and no `|` cuts its error cell.
    incident = artifacts_with_key(f"{pilot.replace('_', '-')}-incident")[0]
    said = incident.split("## What the failing command said")[1]
    assert "RaiseException" in said and "injected failure halfway through 0004_half" in said
    error_row = next(line for line in incident.splitlines() if line.startswith("| error |"))
    assert error_row.count(" | ") == 1 and "injected failure halfway" in error_row
    # What the failed upgrade committed is kept, aside, for forensics.
    failed = m.rollback.failed_database
    assert db.alembic_revision(conn, failed) == HEAD
    with db.connect(conn, failed) as c, c.cursor() as cur:
        cur.execute("SELECT count(*) FROM beers WHERE tasting_notes = 'pending'")
        assert cur.fetchone()[0] == before["public.beers"][0]


def test_health_failure_after_upgrade_is_rolled_back(prefect_api, conn, pilot, cutover_env, managed_api):
    # This backend release breaks on the new schema: GET / answers 500 once the database is at head.
    cutover_env.setenv("BEER_APP_INCOMPATIBLE_WITH", HEAD)
    subprocess.run(os.environ["CUTOVER_SERVICE_STOP"].split(), check=True, capture_output=True, timeout=60)
    subprocess.run(os.environ["CUTOVER_SERVICE_START"].split(), check=True, capture_output=True, timeout=60)
    before = data_fingerprint(conn, pilot)

    state = cutover(**APPROVED, return_state=True)

    assert state.is_failed()
    m = assert_rolled_back(conn, pilot, before, managed_api, "validate")
    assert "answered 500" in m.failure["error"]


def test_failure_before_production_restores_nothing(prefect_api, conn, pilot, cutover_env, broken_alembic_dir):
    cutover_env.setenv("CUTOVER_ALEMBIC_DIR", str(broken_alembic_dir))
    before = data_fingerprint(conn, pilot)

    state = cutover(**APPROVED, return_state=True)

    assert state.is_failed()
    m = the_manifest()
    # No rollback run at all: the cutover's own run says why it stopped.
    assert not m.production_touched and m.rollback is None
    assert rollback_runs_of(state.state_details.flow_run_id) == []
    assert data_fingerprint(conn, pilot) == before and db.alembic_revision(conn, pilot) is None
    assert databases_like(conn, f"{pilot}_failed_") == []
    report = artifacts_of(state.state_details.flow_run_id)[f"{pilot.replace('_', '-')}-cutover-report"]
    assert "Production was not touched: nothing to roll back." in report and "scratch-migrate" in report


def test_two_rollbacks_for_one_cutover_restore_once(prefect_api, conn, pilot, cutover_env, managed_api):
    from prefect.settings import PREFECT_API_URL

    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{pilot}" SET default_transaction_read_only = on')
    before = data_fingerprint(conn, pilot)
    state = cutover(**APPROVED, rollback_on_failure=False, return_state=True)
    assert state.is_failed()
    # The hook still ran an automatic rollback, which respected the switch and restored nothing, in red.
    assert the_manifest().rollback.status == "not-started"
    assert [r.state.name for r in rollback_runs_of(state.state_details.flow_run_id)] == ["ManualRollbackNeeded"]
    assert db.alembic_revision(conn, pilot) is None  # the stamp itself failed: nothing to see yet
    run_id = str(state.state_details.flow_run_id)

    # As the in-process hook and the server-side trigger would: two processes, same cutover, same moment.
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    procs = [subprocess.Popen([sys.executable, "-m", "pg_cutover.launcher.cli", "rollback", "--manifest", run_id],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    statuses = sorted(json.loads(o[0][o[0].index("{"):])["status"] for o in outs)
    assert statuses == ["already-restored", "restored"]

    assert data_fingerprint(conn, pilot) == before
    assert len(databases_like(conn, f"{pilot}_failed_")) == 1
    m = the_manifest()
    assert [a["outcome"].split(" by ")[0].split(" (")[0] for a in m.rollback.attempts] == [
        "automatic rollback is off for this cutover", "restored from the backup", "found the work done"]


def test_rollback_keeps_database_settings_grants_owner_and_comment(prefect_api, conn, pilot, cutover_env,
                                                                   halfway_alembic_dir):
    """The dump holds the contents only; the restored production must behave as before too."""
    from pg_cutover.pg.dbprops import read_properties, split_list
    from tests.helpers import execute

    cutover_env.setenv("CUTOVER_ALEMBIC_DIR", str(halfway_alembic_dir))
    cutover_env.setenv("CUTOVER_HEALTH_URL", "none")
    # A backend stopped by the cutover: the failed upgrade's partial changes are its own, so it is restored.
    cutover_env.setenv("CUTOVER_WRITE_FREEZE", "stop-service")
    cutover_env.setenv("CUTOVER_SERVICE_STOP", "true")
    cutover_env.setenv("CUTOVER_SERVICE_START", "true")
    execute(conn, "postgres", "DO $$ BEGIN CREATE ROLE pgcutover_reader NOLOGIN; "
                              "EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    execute(conn, "postgres",
            f'ALTER DATABASE {pilot} SET search_path = "$user", public, "Odd ""Schema"""',
            f"ALTER DATABASE {pilot} SET statement_timeout = '5min'",
            f"ALTER DATABASE {pilot} SET app.tenant = 'acme, inc'",
            f"ALTER ROLE pgcutover_reader IN DATABASE {pilot} SET work_mem = '8MB'",
            f"COMMENT ON DATABASE {pilot} IS 'the pilot''s data'",
            f"ALTER DATABASE {pilot} CONNECTION LIMIT 40",
            f"REVOKE ALL ON DATABASE {pilot} FROM PUBLIC",
            f"GRANT CONNECT ON DATABASE {pilot} TO pgcutover_reader")
    props = read_properties(conn, pilot)
    assert len(props.settings) == 4 and props.acl is not None and props.connection_limit == 40
    before = data_fingerprint(conn, pilot)

    state = cutover(**APPROVED, return_state=True)

    assert state.is_failed()
    m = the_manifest()
    assert m.rollback.status == "restored" and data_fingerprint(conn, pilot) == before
    step = next(s for s in m.rollback.steps if s.name == "database-properties")
    assert step.status == "succeeded" and "4 settings" in step.detail["summary"], step
    assert read_properties(conn, pilot) == props  # settings, grants, comment, limit and owner as before
    assert split_list('"$user", public, "Odd ""Schema"""') == ["$user", "public", 'Odd "Schema"']
    with db.connect(conn, pilot) as c, c.cursor() as cur:  # a new session gets them
        cur.execute("SHOW search_path")
        assert cur.fetchone()[0] == '"$user", public, "Odd ""Schema"""'
        cur.execute("SELECT current_setting('app.tenant')")
        assert cur.fetchone()[0] == "acme, inc"
