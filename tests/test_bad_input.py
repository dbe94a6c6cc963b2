"""Bad input: one sentence naming the setting, raised before any database is created, stamped or changed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pg_cutover.errors import ConfigError, CutoverError, PreflightError
from pg_cutover.flows.cutover import cutover
from pg_cutover.pg import db
from pg_cutover.pg.tools import locate_bin_dir
from pg_cutover.process import Runner
from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.manifest import load_manifest
from pg_cutover.settings import load_settings
from tests.helpers import artifacts_of, data_fingerprint, databases_like

APPROVED = dict(approved_by="alice", checklist=Checklist.all_confirmed())


def assert_nothing_changed(conn, pilot, before, *, manifests: bool = False):
    """`manifests`: the run got as far as the approval, and its record says it never touched production."""
    assert db.alembic_revision(conn, pilot) is None
    assert data_fingerprint(conn, pilot) == before
    assert databases_like(conn, f"{pilot}_scratch") == []
    backups = Path(os.environ["CUTOVER_BACKUP_DIR"])
    assert not list(backups.rglob("*.dump"))
    found = [load_manifest(path) for path in backups.rglob("manifest.json")]
    assert bool(found) == manifests and not any(m.production_touched or m.backup for m in found)


def fails_with(**params) -> str:
    with pytest.raises(CutoverError) as info:
        cutover(**{**APPROVED, **params})
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("env", "setting", "phrase"),
    [
        ({"POSTGRES_DB": "pilot; DROP TABLE beers"}, "POSTGRES_DB", "plain identifier"),
        ({"POSTGRES_DB": "pilot db"}, "POSTGRES_DB", "plain identifier"),
        ({"POSTGRES_DB": "bière"}, "POSTGRES_DB", "plain identifier"),
        ({"POSTGRES_DB": 'pi"lot'}, "POSTGRES_DB", "plain identifier"),
        ({"POSTGRES_DB": ""}, "POSTGRES_DB", "plain identifier"),
        ({"POSTGRES_PORT": "fivefour"}, "POSTGRES_PORT", "integer"),
        ({"POSTGRES_PORT": "70000"}, "POSTGRES_PORT", "65535"),
        ({"CUTOVER_HEALTH_URL": "localhost:8000"}, "CUTOVER_HEALTH_URL", "http://"),
        ({"CUTOVER_HEALTH_PATHS": "docs"}, "CUTOVER_HEALTH_PATHS", "starting with '/'"),
        ({"CUTOVER_ALEMBIC_COMMAND": "alembic 'unbalanced"}, "CUTOVER_ALEMBIC_COMMAND", "quotes"),
        ({"BASELINE_REV": "0001; rm -rf"}, "BASELINE_REV", "revision id"),
        ({"CUTOVER_STRATEGY": "blue-green"}, "CUTOVER_STRATEGY", "'runbook' or 'clone'"),
        ({"CUTOVER_KEEP_ORIGINAL_HOURS": "-1"}, "CUTOVER_KEEP_ORIGINAL_HOURS", "greater than or equal to 0"),
        ({"CUTOVER_VERIFY_RESTORE": "maybe"}, "CUTOVER_VERIFY_RESTORE", "boolean"),
    ],
)
def test_malformed_settings_name_the_setting(cutover_env, env, setting, phrase):
    for key, value in env.items():
        cutover_env.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith(setting) and phrase in str(info.value)
    assert "\n" not in str(info.value)


def test_password_never_echoed_in_a_settings_error(cutover_env):
    cutover_env.setenv("POSTGRES_PASSWORD", "s3cret-Passw0rd")
    cutover_env.setenv("POSTGRES_PORT", "nope")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "s3cret" not in str(info.value)


def test_unknown_baseline_revision(prefect_api, conn, pilot, cutover_env):
    before = data_fingerprint(conn, pilot)
    cutover_env.setenv("BASELINE_REV", "9999_nope")
    message = fails_with()
    assert message.startswith("BASELINE_REV='9999_nope' is not a revision") and "0001_baseline" in message
    assert_nothing_changed(conn, pilot, before)


def test_unreachable_database(prefect_api, conn, pilot, cutover_env):
    before = data_fingerprint(conn, pilot)
    cutover_env.setenv("POSTGRES_HOST", "127.0.0.1")
    cutover_env.setenv("POSTGRES_PORT", "1")
    message = fails_with()
    assert "POSTGRES_HOST/POSTGRES_PORT 127.0.0.1:1 could not be reached" in message
    cutover_env.setenv("POSTGRES_PORT", str(conn.port))
    cutover_env.setenv("POSTGRES_HOST", conn.host)
    assert_nothing_changed(conn, pilot, before)


def test_database_that_does_not_exist(prefect_api, conn, pilot, cutover_env):
    cutover_env.setenv("POSTGRES_DB", "no_such_pilot_db")
    message = fails_with()
    assert "POSTGRES_DB='no_such_pilot_db'" in message and "does not exist" in message


def test_alembic_dir_without_alembic_ini(prefect_api, conn, pilot, cutover_env, tmp_path):
    before = data_fingerprint(conn, pilot)
    empty = tmp_path / "not_an_app"
    empty.mkdir()
    cutover_env.setenv("CUTOVER_ALEMBIC_DIR", str(empty))
    message = fails_with()
    assert message.startswith("CUTOVER_ALEMBIC_DIR=") and "holds no alembic.ini" in message
    assert_nothing_changed(conn, pilot, before)


def test_missing_pg_dump(prefect_api, conn, pilot, cutover_env, tmp_path):
    before = data_fingerprint(conn, pilot)
    cutover_env.setenv("CUTOVER_PG_BIN", str(tmp_path / "no-such-bin"))
    message = fails_with()
    assert message.startswith("CUTOVER_PG_BIN=") and "pg_dump" in message
    assert_nothing_changed(conn, pilot, before)


def test_pg_dump_older_than_the_server_is_refused(tmp_path):
    # No PostgreSQL 9.6 client can be installed here: a stand-in prints an old version, as an old pg_dump would.
    old = tmp_path / "old-bin"
    old.mkdir()
    for tool in ("pg_dump", "pg_restore", "psql", "createdb", "dropdb"):
        path = old / tool
        path.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
        path.chmod(0o755)
    with pytest.raises(PreflightError) as info:
        locate_bin_dir(old, 15, Runner())
    assert "older than the server (version 15)" in str(info.value) and "CUTOVER_PG_BIN" in str(info.value)


def test_checklist_not_ticked_changes_nothing(prefect_api, conn, pilot, cutover_env):
    before = data_fingerprint(conn, pilot)
    state = cutover(approved_by="alice", checklist=Checklist(window_approved=True), return_state=True)
    assert state.is_cancelled() and state.name == "NotApproved"
    assert "checklist is not complete" in state.message and "writes_paused" in state.message
    # Nobody pre-approved and nobody answers the form: the run ends when the form times out
    # (the server itself fails a run whose pause expired), and the checklist evidence says why.
    state = cutover(approved_by="  ", approval_timeout_seconds=3, return_state=True)
    assert state.is_failed()
    assert "never resumed" in state.message or "nobody answered the checklist form" in state.message
    checklist = artifacts_of(state.state_details.flow_run_id)[f"{pilot.replace('_', '-')}-checklist"]
    assert "Not approved: nobody answered the checklist form within 3 s" in checklist
    assert_nothing_changed(conn, pilot, before, manifests=True)
    statuses = sorted(load_manifest(p).status for p in Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("manifest.json"))
    assert statuses == ["failed", "not-approved"]


def test_cli_refuses_to_run_without_approval(cutover_env):
    proc = subprocess.run([sys.executable, "-m", "pg_cutover.launcher.cli", "run"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("cutover: cutover run needs --approved-by NAME and --confirm-checklist")


def test_cli_reports_one_line_and_exit_status(cutover_env):
    cutover_env.setenv("POSTGRES_DB", "bad name")
    proc = subprocess.run(
        [sys.executable, "-m", "pg_cutover.launcher.cli", "run", "--approved-by", "alice", "--confirm-checklist"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "cutover: POSTGRES_DB is invalid ('bad name'): expected a plain identifier: ASCII letters, digits and "
        "underscores, not starting with a digit, at most 63 characters."
    ]
