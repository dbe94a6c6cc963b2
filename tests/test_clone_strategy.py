"""The clone strategy (CUTOVER_STRATEGY=clone) end to end: real PostgreSQL, real Alembic processes, the
example API run as a service the cutover stops and starts, the Prefect test harness for evidence."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg2
import pytest

from pg_cutover.clone.finalize import decide
from pg_cutover.digest import sha256_file
from pg_cutover.flows.cutover import cutover
from pg_cutover.flows.finalize import finalize
from pg_cutover.launcher.embedded import EXAMPLE_APP_DIR
from pg_cutover.pg import db
from pg_cutover.pg.tools import TOOLS
from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.manifest import BackupRecord, CloneRecord, Manifest, StepRecord, load_manifest
from tests.clusters import private_cluster, tiny_tmpfs
from tests.conftest import BASELINE, HEAD, operator_env, wait_for
from tests.helpers import artifacts_with_key, data_fingerprint, databases_like, execute

APPROVED = dict(approved_by="alice", checklist=Checklist.all_confirmed())
CLONE_STEPS = ["baseline-parity", "upgrade-sql", "approval", "writes-paused", "clone", "data-parity",
               "clone-amcheck", "clone-migrate", "clone-schema-parity", "window-check",
               "writes-still-paused", "swap", "start-backend", "validate", "original-dump", "original-verify",
               "original-restore-check"]


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
                                                                                  clone_env, cutover_env):
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
    # After the window: the original's dump, its SHA-256, and a restore that proved it; the check database gone.
    assert sha256_file(Path(m.backup.path)) == m.backup.sha256 and m.backup.size_bytes > 0
    assert m.clone.dump_verified and m.clone.restore_checked
    assert databases_like(conn, f"{pilot}_check_") == []

    # finalize keeps the original until the hours have passed, then drops it and records it.
    cutover_env.setenv("CUTOVER_KEEP_ORIGINAL_HOURS", "24")
    kept = finalize()
    assert kept["kept"] == [m.clone.before] and not kept["dropped"]
    assert "kept until" in kept["rows"][0]["reason"]
    assert databases_like(conn, f"{pilot}_before_") == [m.clone.before]
    cutover_env.setenv("CUTOVER_KEEP_ORIGINAL_HOURS", "0")
    assert finalize(dry_run=True)["rows"][0]["action"] == "would drop"
    assert databases_like(conn, f"{pilot}_before_") == [m.clone.before]
    assert finalize()["dropped"] == [m.clone.before]
    assert databases_like(conn, f"{pilot}_before_") == []
    assert the_manifest().clone.original_dropped_at is not None
    assert finalize()["rows"] == []  # nothing left to decide
    assert db.alembic_revision(conn, pilot) == HEAD

    # With the original gone, a rollback by hand restores the proven dump instead of swapping back.
    from pg_cutover.flows.rollback import rollback

    summary = rollback(manifest=str(Path(m.backup.path).parent))
    assert summary["status"] == "restored" and summary["restored_from"]
    assert data_fingerprint(conn, pilot) == before and db.alembic_revision(conn, pilot) is None
    assert db.alembic_revision(conn, summary["failed_database"]) == HEAD  # the upgraded database, kept aside


def test_a_dry_run_clones_upgrades_and_checks_the_clone_then_drops_it(prefect_api, conn, pilot, cutover_env):
    cutover_env.setenv("CUTOVER_STRATEGY", "clone")
    before = data_fingerprint(conn, pilot)

    state = cutover(dry_run=True, return_state=True)

    assert state.is_completed(), state.message
    m = the_manifest()
    assert m.status == "dry-run" and not m.production_touched
    assert [s.name for s in m.steps][-4:] == ["clone-amcheck", "clone-migrate", "clone-schema-parity", "clone-drop"]
    assert databases_like(conn, f"{pilot}_next_") == [] and databases_like(conn, f"{pilot}_before_") == []
    assert data_fingerprint(conn, pilot) == before and db.alembic_revision(conn, pilot) is None


def test_a_revision_failing_on_the_clone_leaves_the_original_untouched(prefect_api, conn, pilot, clone_env,
                                                                         broken_alembic_dir, cutover_env):
    cutover_env.setenv("CUTOVER_ALEMBIC_DIR", str(broken_alembic_dir))
    before = data_fingerprint(conn, pilot)

    state = cutover(**APPROVED, return_state=True)

    assert state.is_failed()
    m = the_manifest()
    assert m.failure["step"] == "clone-migrate" and not m.production_touched
    assert m.rollback is None  # nothing to restore: no rollback run at all
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


# The real pg_dump, its output sent to /dev/full (every write fails with ENOSPC) when it dumps the
# original after the window: the disk is full exactly then, and at no other moment of the run.
FULL_DISK_PG_DUMP = """#!/bin/sh
case "$*" in
  *_before_*) exec {real} "$@" --file=/dev/full ;;
  *) exec {real} "$@" ;;
esac
"""


def test_the_dump_after_the_window_failing_keeps_production_upgraded_and_the_original(
        prefect_api, conn, pilot, clone_env, cutover_env, tmp_path):
    real = Path(db_tools_dir(conn))
    wrapped = tmp_path / "pgbin"
    wrapped.mkdir()
    for tool in TOOLS:
        (wrapped / tool).symlink_to(real / tool)
    (wrapped / "pg_dump").unlink()
    (wrapped / "pg_dump").write_text(FULL_DISK_PG_DUMP.format(real=real / "pg_dump"))
    (wrapped / "pg_dump").chmod(0o755)
    cutover_env.setenv("CUTOVER_PG_BIN", str(wrapped))
    before = data_fingerprint(conn, pilot)

    state = cutover(**APPROVED, return_state=True)

    assert state.is_completed(), state.message  # the window's work stands: no rollback
    m = the_manifest()
    assert m.status == "succeeded" and m.rollback is None
    dump = m.step("original-dump")
    assert dump.status == "warning" and "No space left on device" in dump.error
    assert "production stays upgraded and the original is kept" in dump.error
    assert m.backup is None and not m.clone.dump_verified
    assert db.alembic_revision(conn, pilot) == HEAD
    assert data_fingerprint(conn, m.clone.before) == before
    assert not list(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("*.dump"))  # half a dump is no backup
    # finalize never drops an original whose dump is not proven, however old.
    cutover_env.setenv("CUTOVER_KEEP_ORIGINAL_HOURS", "0")
    result = finalize()
    assert result["kept"] == [m.clone.before] and "did not verify" in result["rows"][0]["reason"]
    assert databases_like(conn, f"{pilot}_before_") == [m.clone.before]


def db_tools_dir(conn) -> str:
    from pg_cutover.pg.tools import locate_bin_dir
    from pg_cutover.process import Runner

    return str(locate_bin_dir(None, db.probe(conn, "postgres") // 10000, Runner())[0])


def test_finalize_keeps_an_original_whose_dump_changed_or_whose_off_site_copy_is_unproven(tmp_path):
    dump = tmp_path / "pilot.dump"
    dump.write_bytes(b"archive")
    m = Manifest(run_id="r", database="pilot", host="h", port=1, strategy="clone",
                 backup=BackupRecord(path=str(dump), size_bytes=7, sha256=sha256_file(dump)),
                 clone=CloneRecord(original_oid=1, clone="pilot_next_x", before="pilot_before_x", dump_verified=True,
                                   swapped_at="2026-11-01T00:00:00+00:00"),
                 steps=[StepRecord(name="original-restore-check", status="succeeded")])
    path = tmp_path / "manifest.json"

    assert decide(path, m, keep_hours=24, bucket_configured=False).drop
    assert "off-site copy was not verified" in decide(path, m, keep_hours=24, bucket_configured=True).reason
    m.steps[0].status = "warning"
    assert "restore check did not pass" in decide(path, m, keep_hours=24, bucket_configured=False).reason
    m.steps[0].status = "succeeded"
    dump.write_bytes(b"archivX")
    assert "no longer has the SHA-256" in decide(path, m, keep_hours=24, bucket_configured=False).reason
    dump.unlink()
    assert "no longer on disk" in decide(path, m, keep_hours=24, bucket_configured=False).reason


CUTOVER_IN_A_PROCESS = """
from pg_cutover.flows.cutover import cutover
from pg_cutover.runbook.checklist import Checklist
cutover(approved_by="alice", checklist=Checklist.all_confirmed())
"""


def test_a_cutover_killed_between_the_two_renames_is_swapped_back_by_the_rollback(prefect_api, conn, pilot,
                                                                                    cutover_env):
    from prefect.settings import PREFECT_API_URL

    from pg_cutover.flows.rollback import rollback

    cutover_env.setenv("CUTOVER_STRATEGY", "clone")
    before = data_fingerprint(conn, pilot)
    backups = Path(os.environ["CUTOVER_BACKUP_DIR"])
    child = subprocess.Popen([sys.executable, "-c", CUTOVER_IN_A_PROCESS], start_new_session=True,
                             env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    holder = None
    try:
        # Once the clone exists (its step done), this session holds a lock on the clone's catalog row:
        # the swap's first rename goes through, its second waits on the lock.
        wait_for("the clone step to finish", lambda: any(
            s.name == "clone" and s.status == "succeeded" for m in map(load_manifest, backups.rglob("manifest.json"))
            for s in m.steps), timeout=180, interval=0.1)
        clone = the_manifest().clone.clone
        holder = psycopg2.connect(host=conn.host, port=conn.port, user=conn.user, password=conn.password,
                                  dbname="postgres")
        holder.cursor().execute(f'ALTER DATABASE "{clone}" CONNECTION LIMIT 77')
        waiting = wait_for("the second rename to wait on the lock", lambda: blocked_rename(conn, clone), timeout=180,
                           interval=0.1)
        assert databases_like(conn, f"{pilot}_before_") and not db.database_exists(conn, pilot)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        if holder is not None:
            holder.rollback()
            holder.close()
    wait_for("the killed cutover's session to end", lambda: not session_alive(conn, waiting), timeout=60)
    m = the_manifest()
    assert m.status == "running" and m.production_touched and m.steps[-1].name == "swap"
    assert not db.database_exists(conn, pilot)  # killed between the renames: production has no name

    summary = rollback(manifest=str(next(backups.rglob("manifest.json"))))

    assert summary["status"] == "restored"
    m = the_manifest()
    assert m.status == "crashed" and m.rollback.status == "restored"
    assert "was free" in next(s for s in m.rollback.steps if s.name == "swap-back").detail["summary"]
    assert data_fingerprint(conn, pilot) == before and db.alembic_revision(conn, pilot) is None
    assert databases_like(conn, f"{pilot}_before_") == []
    # The upgraded clone stays where the crash left it, open for inspection.
    assert databases_like(conn, f"{pilot}_next_") == [clone] and db.alembic_revision(conn, clone) == HEAD


def blocked_rename(conn, clone: str) -> int | None:
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE %s",
                    (f'ALTER DATABASE "{clone}"%',))
        row = cur.fetchone()
    return row[0] if row else None


def session_alive(conn, pid: int) -> bool:
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))
        return cur.fetchone() is not None


def test_a_logical_replication_slot_and_a_subscription_are_refused_in_one_sentence(prefect_api, pg_target,
                                                                                    monkeypatch, tmp_path):
    with private_cluster("wal_level=logical", "max_replication_slots=4") as other:
        execute(other, "postgres", "CREATE DATABASE app")
        execute(other, "app", "SELECT pg_create_logical_replication_slot('cdc_orders', 'pgoutput')",
                "CREATE SUBSCRIPTION mirror_sub CONNECTION 'dbname=nowhere' PUBLICATION p WITH (connect = false)")
        operator_env(monkeypatch, pg_target, "app", BASELINE, EXAMPLE_APP_DIR, tmp_path / "backups")
        monkeypatch.setenv("POSTGRES_PORT", str(other.port))

        state = cutover(**APPROVED, strategy="clone", return_state=True)

        assert state.is_failed()
        message = str(state.result(raise_on_failure=False))
        assert "app has logical replication slots bound to it (cdc_orders)" in message
        assert "app has subscriptions (mirror_sub)" in message and message.endswith("Nothing was changed.")
        with db.connect(other, "postgres") as c, c.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1")
            assert [r[0] for r in cur.fetchall()] == ["app", "postgres"]
        assert not list((tmp_path / "backups").rglob("manifest.json"))


@pytest.mark.parametrize("when", ["at preflight", "during the window"])
def test_a_full_tablespace_leaves_nothing_behind(prefect_api, conn, pilot, cutover_env, when):
    cutover_env.setenv("CUTOVER_STRATEGY", "clone")
    with tiny_tmpfs(10 if when == "at preflight" else 24) as disk:
        space = f"ts_{pilot[-10:]}"
        (disk / "ts").mkdir()
        shutil.chown(disk / "ts", "postgres", "postgres")
        execute(conn, "postgres", f"CREATE TABLESPACE {space} LOCATION '{disk / 'ts'}'",
                f'ALTER DATABASE "{pilot}" SET TABLESPACE {space}')
        try:
            before = data_fingerprint(conn, pilot)
            files_before = sorted(p.name for p in (disk / "ts").glob("PG_*/*"))
            if when == "during the window":
                # The disk fills up after preflight checked it: the backend's stop command is the moment.
                left = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize // 2 ** 20 - 2
                cutover_env.setenv("CUTOVER_WRITE_FREEZE", "stop-service")
                cutover_env.setenv("CUTOVER_SERVICE_STOP", f"dd if=/dev/zero of={disk / 'filler'} bs=1M count={left}")
                cutover_env.setenv("CUTOVER_SERVICE_START", "true")

            state = cutover(**APPROVED, return_state=True)

            assert state.is_failed()
            message = str(state.result(raise_on_failure=False))
            if when == "at preflight":
                assert f"Tablespace {space} ({disk / 'ts'}) has" in message and "the clone of" in message
                assert message.endswith("Nothing was changed.")
            else:
                m = the_manifest()
                assert m.failure["step"] == "clone" and not m.production_touched
                assert "the disk is full" in m.failure["error"] and "No space left on device" in m.failure["error"]
                assert f"PostgreSQL removed the partial copy, {pilot} is untouched." in m.failure["error"]
            # Nothing left behind: no clone, no stray files in the tablespace; the original as it was.
            assert databases_like(conn, f"{pilot}_next_") == []
            assert sorted(p.name for p in (disk / "ts").glob("PG_*/*")) == files_before
            assert data_fingerprint(conn, pilot) == before
        finally:
            db.drop_databases_like(conn, pilot)
            execute(conn, "postgres", f"DROP TABLESPACE IF EXISTS {space}")


def test_the_swap_counts_the_original_again_once_its_sessions_are_gone_and_undoes_itself(conn, pilot):
    from pg_cutover.checks.writes import begin_sample
    from pg_cutover.clone import databases
    from pg_cutover.errors import StepFailed

    clone, before = f"{pilot}_next_t", f"{pilot}_before_t"
    databases.create_clone(conn, pilot, clone, db.probe(conn, "postgres") // 10000)
    reading = begin_sample(conn, pilot, 0).reading
    # A write after the clone was taken, by a session that stays connected: the swap's first rename ends it.
    writer = psycopg2.connect(host=conn.host, port=conn.port, user=conn.user, password=conn.password, dbname=pilot)
    writer.autocommit = True
    writer.cursor().execute("INSERT INTO breweries (name, city) SELECT 'late', 'x'")

    with pytest.raises(StepFailed, match="1 rows were written to .* after its clone was taken.*has its name back"):
        databases.swap(conn, pilot, clone, before, reading)

    assert db.database_exists(conn, pilot) and db.database_exists(conn, clone)
    assert not db.database_exists(conn, before)
    assert db.row_counts(conn, pilot, ["public.breweries"])["public.breweries"] == \
        db.row_counts(conn, clone, ["public.breweries"])["public.breweries"] + 1
