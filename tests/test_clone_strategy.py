"""The clone strategy (CUTOVER_STRATEGY=clone) end to end: real PostgreSQL, real Alembic processes, the
example API run as a service the cutover stops and starts, the Prefect test harness for evidence."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from pg_cutover.flows.cutover import cutover
from pg_cutover.pg import db
from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.manifest import load_manifest
from tests.conftest import HEAD
from tests.helpers import artifacts_with_key, data_fingerprint, databases_like, execute

APPROVED = dict(approved_by="alice", checklist=Checklist.all_confirmed())
CLONE_STEPS = ["writes-paused", "baseline-parity", "row-counts", "writes-sample", "clone", "data-parity",
               "clone-amcheck", "clone-migrate", "clone-schema-parity", "upgrade-sql", "window-check",
               "writes-still-paused", "swap", "start-backend", "validate"]


def the_manifest():
    return load_manifest(next(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("manifest.json")))


def database_properties(conn, name: str) -> tuple:
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute("SELECT shobj_description(d.oid, 'pg_database'), d.datconnlimit, s.setconfig "
                    "FROM pg_database d LEFT JOIN pg_db_role_setting s ON s.setdatabase = d.oid AND s.setrole = 0 "
                    "WHERE d.datname = %s", (name,))
        return cur.fetchone()


@pytest.fixture
def clone_env(cutover_env, managed_api):
    """The clone strategy with the backend stopped by the cutover: a clone needs no session on production."""
    cutover_env.setenv("CUTOVER_STRATEGY", "clone")
    cutover_env.setenv("CUTOVER_WRITE_FREEZE", "stop-service")
    return managed_api


def test_the_clone_is_upgraded_and_swapped_in_and_the_original_is_kept_unchanged(prefect_api, conn, pilot,
                                                                                  clone_env):
    execute(conn, "postgres", f'COMMENT ON DATABASE "{pilot}" IS \'beer pilot\'',
            f'ALTER DATABASE "{pilot}" SET statement_timeout = \'41s\'', f'ALTER DATABASE "{pilot}" CONNECTION LIMIT 40')
    properties = database_properties(conn, pilot)
    before = data_fingerprint(conn, pilot)

    state = cutover(**APPROVED, return_state=True)

    assert state.is_completed(), state.message
    m = the_manifest()
    assert m.status == "succeeded" and m.strategy == "clone"
    assert [s.name for s in m.steps] == CLONE_STEPS
    assert all(s.status == "succeeded" for s in m.steps), [(s.name, s.error) for s in m.steps]
    # Production is the upgraded clone, under its own name, with every row the migrations keep.
    assert db.alembic_revision(conn, pilot) == HEAD == m.revision_after
    after = data_fingerprint(conn, pilot)
    assert {t: n for t, (n, _) in after.items()} == {t: n for t, (n, _) in before.items()}
    assert after["public.reviews"] == before["public.reviews"] and after["public.beers"] == before["public.beers"]
    # The database-level properties came along; the clone's name is gone.
    assert database_properties(conn, pilot) == properties
    assert databases_like(conn, f"{pilot}_next_") == []
    # The original, byte for byte as before (every row of every table), under <db>_before_<ts>.
    assert databases_like(conn, f"{pilot}_before_") == [m.clone.before]
    assert data_fingerprint(conn, m.clone.before) == before
    assert db.alembic_revision(conn, m.clone.before) is None
    assert m.clone.copy_strategy == "FILE_COPY" and m.clone.clone_seconds is not None
    assert m.clone.swapped_at and m.clone.swap_seconds < 30
    # The backend was started again and serves the upgraded database.
    reply = httpx.get(clone_env + "/", timeout=10)
    assert reply.status_code == 200 and reply.json()["revision"] == HEAD
    parity = artifacts_with_key(f"{pilot.replace('_', '-')}-clone-schema-parity")[0]
    assert "No differences: the upgraded clone is the target." in parity


def test_a_revision_failing_on_the_clone_leaves_the_original_untouched(prefect_api, conn, pilot, clone_env,
                                                                         broken_alembic_dir, cutover_env):
    cutover_env.setenv("CUTOVER_ALEMBIC_DIR", str(broken_alembic_dir))
    before = data_fingerprint(conn, pilot)

    state = cutover(**APPROVED, return_state=True)

    assert state.is_failed()
    m = the_manifest()
    assert m.failure["step"] == "clone-migrate" and not m.production_touched
    assert m.rollback.status == "not-needed"
    # The original: never renamed, never written.
    assert data_fingerprint(conn, pilot) == before and db.alembic_revision(conn, pilot) is None
    assert databases_like(conn, f"{pilot}_before_") == []
    # The clone is kept for inspection, where the failed revision left it.
    assert databases_like(conn, f"{pilot}_next_") == [m.clone.clone] == [m.scratch_db]
    # The backend it stopped is serving the untouched database again.
    assert httpx.get(clone_env + "/", timeout=10).json()["revision"] is None


def test_health_failing_after_the_swap_swaps_back_in_seconds(prefect_api, conn, pilot, clone_env, cutover_env):
    # This backend release breaks on the new schema: GET / answers 500 once the database is at head.
    cutover_env.setenv("BEER_APP_INCOMPATIBLE_WITH", HEAD)
    subprocess.run(os.environ["CUTOVER_SERVICE_STOP"].split(), check=True, capture_output=True, timeout=60)
    subprocess.run(os.environ["CUTOVER_SERVICE_START"].split(), check=True, capture_output=True, timeout=60)
    before = data_fingerprint(conn, pilot)

    state = cutover(**APPROVED, return_state=True)

    assert state.is_failed()
    m = the_manifest()
    assert m.failure["step"] == "validate" and "answered 500" in m.failure["error"]
    assert m.rollback.status == "restored", m.rollback
    assert [s.name for s in m.rollback.steps] == [
        "changes-since-cutover", "stop-backend", "swap-back", "verify", "start-backend"]
    swap_back = next(s for s in m.rollback.steps if s.name == "swap-back")
    assert swap_back.seconds < 10
    # The names are back: production is the original, every row as before; the upgraded clone is kept aside.
    assert data_fingerprint(conn, pilot) == before and db.alembic_revision(conn, pilot) is None
    assert databases_like(conn, f"{pilot}_before_") == []
    assert databases_like(conn, f"{pilot}_failed_") == [m.rollback.failed_database]
    assert db.alembic_revision(conn, m.rollback.failed_database) == HEAD
    reply = httpx.get(clone_env + "/", timeout=10)
    assert reply.status_code == 200 and reply.json()["revision"] is None
    incident = artifacts_with_key(f"{pilot.replace('_', '-')}-incident")[0]
    assert m.rollback.failed_database in incident


def test_another_session_on_production_is_named_and_nothing_changes(prefect_api, conn, pilot, cutover_env):
    cutover_env.setenv("CUTOVER_STRATEGY", "clone")
    before = data_fingerprint(conn, pilot)
    with db.connect(conn, pilot) as other, other.cursor() as cur:
        cur.execute("SET application_name = 'nightly-report'")

        state = cutover(**APPROVED, return_state=True)

        assert state.is_failed()
        pid = other.get_backend_pid()
    m = the_manifest()
    assert m.failure["step"] == "clone" and not m.production_touched
    assert f"pid {pid}" in m.failure["error"] and "nightly-report" in m.failure["error"]
    assert "Nothing was changed" in m.failure["error"]
    assert databases_like(conn, f"{pilot}_next_") == [] and databases_like(conn, f"{pilot}_before_") == []
    assert data_fingerprint(conn, pilot) == before and db.alembic_revision(conn, pilot) is None


def test_a_role_that_may_not_create_databases_is_refused_at_preflight(prefect_api, conn, pilot, cutover_env):
    role = f"nocreate_{pilot[-6:]}"
    execute(conn, "postgres", f"CREATE ROLE {role} LOGIN NOCREATEDB IN ROLE pg_read_all_data")
    try:
        cutover_env.setenv("CUTOVER_STRATEGY", "clone")
        cutover_env.setenv("POSTGRES_USER", role)

        state = cutover(**APPROVED, return_state=True)

        assert state.is_failed()
        message = str(state.message) + " ".join(str(e) for e in [state.result(raise_on_failure=False)])
        assert "needs a role that may create databases (CREATEDB)" in message and "Nothing was changed" in message
        assert not list(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("manifest.json"))
        assert databases_like(conn, f"{pilot}_next_") == []
    finally:
        execute(conn, "postgres", f"DROP ROLE {role}")
