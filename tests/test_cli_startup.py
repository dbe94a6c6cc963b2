"""`cutover run` start-up (issue 8): the writes sample read before Prefect is imported, and the
temporary Prefect server the command starts itself when no Prefect API is configured."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pg_cutover.checks.writes import FLUSH_BEAT, remember_early_reading, sample_writes, take_early_reading
from pg_cutover.launcher.tempserver import LOG_NAME
from pg_cutover.pg import db
from tests.helpers import databases_like


@pytest.fixture
def scratch_db(conn):
    name = f"writes_{uuid.uuid4().hex[:10]}"
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        with db.connect(conn, name) as c, c.cursor() as cur:
            cur.execute("CREATE TABLE t (id serial PRIMARY KEY, note text)")
        yield name
    finally:
        db.drop_databases_like(conn, name)


def test_the_early_reading_starts_the_sample_and_sees_later_writes(conn, scratch_db):
    before = time.monotonic()
    assert remember_early_reading(conn, scratch_db) is not None
    with db.connect(conn, scratch_db) as c, c.cursor() as cur:
        cur.execute("INSERT INTO t (note) VALUES ('written after the early reading')")

    since = take_early_reading(conn, scratch_db)
    assert since is not None and since.at >= before
    sample = sample_writes(conn, scratch_db, 0.2, since=since)

    assert sample.tuples_changed > 0
    assert not sample.paused
    assert sample.seconds >= 0.2  # never shorter than configured
    assert take_early_reading(conn, scratch_db) is None  # handed out once


def test_the_early_reading_is_only_for_the_server_and_database_it_was_read_from(conn, scratch_db):
    remember_early_reading(conn, scratch_db)

    assert take_early_reading(conn, scratch_db + "_other") is None
    assert take_early_reading(replace(conn, port=conn.port + 1), scratch_db) is None
    assert take_early_reading(conn, scratch_db) is not None  # a mismatch does not use it up


def test_an_unreadable_early_reading_keeps_nothing(conn, scratch_db):
    unreachable = replace(conn, host="127.0.0.1", port=1, connect_timeout=2)
    assert remember_early_reading(unreachable, scratch_db) is None
    assert take_early_reading(unreachable, scratch_db) is None


def _processes_with(prefect_home: Path) -> list[str]:
    """Command lines of live processes whose environment names this PREFECT_HOME."""
    marker = f"PREFECT_HOME={prefect_home}".encode() + b"\0"
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker in (proc / "environ").read_bytes() + b"\0":
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found


def test_the_early_baseline_is_taken_only_for_the_same_inputs_and_only_when_it_was_built(conn):
    from pg_cutover.checks import baseline
    from pg_cutover.launcher import early
    from pg_cutover.launcher.embedded import EXAMPLE_APP_DIR
    from pg_cutover.settings import load_settings
    from pg_cutover.toolkit import Toolkit
    from tests.conftest import BASELINE

    database = f"early_{uuid.uuid4().hex[:8]}"
    kit = Toolkit.from_settings(load_settings(POSTGRES_DB=database, CUTOVER_ALEMBIC_DIR=str(EXAMPLE_APP_DIR)))
    alembic = kit.alembic
    try:
        with early.baseline_build(kit, database, BASELINE):
            assert early.take_baseline(alembic, "0002_brewery_slug", None) is None  # another revision: not this one
            assert early.take_baseline(alembic, BASELINE, ["true"]) is None  # another bootstrap: not this one
            built = early.take_baseline(alembic, BASELINE, None)
            assert early.take_baseline(alembic, BASELINE, None) is None  # handed out once
        direct = baseline.build(conn, None, alembic, BASELINE, f"{database}_direct")
        assert built.read == direct.read and "public.beers" in built.read["table"]
        assert built.archive and built.bootstrap is None  # the schema kept to print its normal form

        with early.baseline_build(kit, database, "0009_unknown"):  # fails: the flow builds its own
            assert early.take_baseline(alembic, "0009_unknown", None) is None
    finally:
        assert databases_like(conn, database) == []  # every early build dropped its database


@pytest.mark.e2e  # the command line's own temporary Prefect server
def test_cli_starts_and_stops_its_own_temporary_server(cutover_env, conn, pilot, tmp_path):
    prefect_home = tmp_path / "prefect-home"
    # Prefect's own default for analytics, as an operator has it: the temporary server turns them off.
    env = {name: value for name, value in os.environ.items()
           if name not in ("PREFECT_API_URL", "PREFECT_SERVER_ANALYTICS_ENABLED")}
    env.update(PREFECT_HOME=str(prefect_home), PREFECT_LOGGING_LEVEL="INFO")

    proc = subprocess.run([sys.executable, "-m", "pg_cutover.launcher.cli", "run", "--dry-run"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| ERROR" not in proc.stderr and "telemetry" not in proc.stderr, proc.stderr[-3000:]
    assert '"status": "dry-run"' in proc.stdout
    assert "Starting temporary server" not in proc.stderr  # Prefect did not start a second one
    assert "View at http" not in proc.stderr  # no link to a UI that is neither served nor kept
    server_log = (prefect_home / LOG_NAME).read_text()
    assert "telemetry" not in server_log and "| ERROR" not in server_log, server_log[-3000:]
    assert _processes_with(prefect_home) == []  # the server is gone with the command

    # The run's evidence is in this PREFECT_HOME's database, read without starting anything.
    with sqlite3.connect(prefect_home / "prefect.db") as evidence:
        runs = evidence.execute(
            "SELECT flow_run.id, flow_run.state_type, flow_run.start_time FROM flow_run "
            "JOIN flow ON flow.id = flow_run.flow_id WHERE flow.name = 'cutover'").fetchall()
        assert [state for _, state, _ in runs] == ["COMPLETED"]
        run_id, _, flow_start = runs[0]
        artifacts = dict(evidence.execute("SELECT key, description FROM artifact WHERE flow_run_id = ?", (run_id,)))
        (sample_end,) = evidence.execute("SELECT end_time FROM task_run WHERE flow_run_id = ? AND name LIKE "
                                         "'writes-paused-%'", (run_id,)).fetchone()
    assert len(artifacts) >= 3, artifacts
    # The baseline was built while the command imported Prefect, taken by the flow, and its
    # database dropped: nothing of it is left.
    assert "built from nothing while the command started" in proc.stderr, proc.stderr[-3000:]
    assert databases_like(conn, f"{pilot}_baseline") == []

    # The writes sample began before the flow run did: with the reading the command took before
    # importing Prefect (the task's end is later than the sample's, so this errs towards failing).
    (description,) = [text for key, text in artifacts.items() if key.endswith("-writes-paused")]
    covered = float(re.search(r"Writes over ([0-9.]+) s", description)[1])
    sample_start = datetime.fromisoformat(sample_end) - timedelta(seconds=covered + FLUSH_BEAT)
    assert sample_start < datetime.fromisoformat(flow_start), (description, sample_end, flow_start)


PROFILES = '''active = "{active}"

[profiles.ephemeral]
PREFECT_SERVER_EPHEMERAL_ENABLED = "true"

[profiles.local]
PREFECT_API_URL = "http://127.0.0.1:4200/api"
'''


@pytest.mark.parametrize(
    ("env", "active", "cwd_file", "expected"),
    [
        ({"PREFECT_API_URL": "http://prefect:4200/api"}, "ephemeral", None, True),
        ({}, None, None, False),  # no profiles file: Prefect's own default profile
        ({}, "ephemeral", None, False),
        ({}, "local", None, True),
        ({"PREFECT_PROFILE": "local"}, "ephemeral", None, True),
        ({"PREFECT_PROFILE": "missing"}, "local", None, False),  # an unknown profile: Prefect's default
        ({}, "ephemeral", ("prefect.toml", "[api]\nurl = 'http://prefect:4200/api'\n"), None),
        ({}, "ephemeral", (".env", "PREFECT_API_URL=http://prefect:4200/api\n"), None),
        ({}, "ephemeral", (".env", "POSTGRES_DB=pilot\n"), False),
        ({}, "ephemeral", ("pyproject.toml", "[tool.prefect.api]\nurl = 'http://prefect:4200/api'\n"), None),
        ({}, "ephemeral", ("pyproject.toml", "[project]\nname = 'x'\n"), False),
        ({"PREFECT_PROFILES_PATH": "/elsewhere/profiles.toml"}, "ephemeral", None, None),
    ],
)
def test_an_api_configured_anywhere_prefect_looks_is_never_overridden(monkeypatch, tmp_path, env, active, cwd_file,
                                                                       expected):
    from pg_cutover.launcher.tempserver import api_configured

    for name in ("PREFECT_API_URL", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    if active:
        (home / "profiles.toml").write_text(PROFILES.format(active=active))
    monkeypatch.setenv("PREFECT_HOME", str(home))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    if cwd_file:
        (tmp_path / cwd_file[0]).write_text(cwd_file[1])
    assert api_configured() is expected
