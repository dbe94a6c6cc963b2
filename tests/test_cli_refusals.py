"""The command line's refusals (issue 21, item 7): what can be refused without Prefect is one line on stderr,
before Prefect is imported, with nothing changed; a run that fails later says where its evidence is.

Every command here runs with a `prefect` package on PYTHONPATH that fails on import and with PREFECT_API_URL
at a closed port: a refusal that still reads as its own one line was made before Prefect was reached.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pg_cutover.launcher.embedded import free_port
from pg_cutover.pg import db
from pg_cutover.runbook.manifest import MANIFEST_NAME, Manifest
from pg_cutover.runbook.report import REPORT_NAME
from tests.clusters import private_cluster
from tests.helpers import data_fingerprint, databases_like

APPROVED = ["--approved-by", "alice", "--confirm-checklist"]
PREFECT_IMPORTED = "prefect was imported before the refusal"


@pytest.fixture
def no_prefect(tmp_path) -> dict[str, str]:
    """The environment with a `prefect` that cannot be imported and an API nobody answers on."""
    shadow = tmp_path / "shadow"
    (shadow / "prefect").mkdir(parents=True)
    (shadow / "prefect" / "__init__.py").write_text(f"raise SystemExit({PREFECT_IMPORTED!r})\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(shadow), os.environ.get("PYTHONPATH")])),
            "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api", "PREFECT_HOME": str(tmp_path / "prefect-home")}


def cutover(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pg_cutover.launcher.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def the_one_line(proc: subprocess.CompletedProcess) -> str:
    """The refusal: exit 1, nothing on stdout, one line on stderr and nothing from Prefect or a rollback."""
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cutover: ") and lines[0].strip() != "cutover:", proc.stderr[-3000:]
    assert proc.stdout == ""
    for absent in ("Traceback", "rolling back", "Flow run", "| INFO", "| ERROR", PREFECT_IMPORTED):
        assert absent not in proc.stderr
    return lines[0]


def assert_nothing_changed(conn, pilot, before, backups: Path) -> None:
    assert db.alembic_revision(conn, pilot) is None
    assert data_fingerprint(conn, pilot) == before
    assert databases_like(conn, f"{pilot}_") == []  # no scratch, baseline, clone or restore
    assert not backups.exists() or list(backups.rglob("*")) == []  # no run directory, not even an empty one


@pytest.mark.parametrize(
    ("env", "args", "says"),
    [
        ({"BASELINE_REV": "0001_baseIine"}, [], ["BASELINE_REV='0001_baseIine' is not a revision", "0001_baseline"]),
        ({}, ["--baseline-rev", "0002_nope"], ["BASELINE_REV='0002_nope' is not a revision"]),
        ({}, ["--target-rev", "0009_nope"], ["target_rev='0009_nope' is not a revision"]),
        ({"POSTGRES_DB": "no_such_pilot_db"}, [], ["POSTGRES_DB='no_such_pilot_db'", "does not exist"]),
        ({"POSTGRES_PORT": "closed"}, [], ["POSTGRES_HOST/POSTGRES_PORT 127.0.0.1:", "could not be reached"]),
        ({"POSTGRES_USER": "no_such_role"}, [], ["POSTGRES_USER 'no_such_role'", "does not exist"]),
        ({"CUTOVER_PG_BIN": "/nonexistent/pg/bin"}, [], ["CUTOVER_PG_BIN='/nonexistent/pg/bin' does not hold pg_dump"]),
        ({"CUTOVER_ALEMBIC_DIR": "/nonexistent/app"}, [],
         ["CUTOVER_ALEMBIC_DIR='/nonexistent/app' is not a directory"]),
    ],
    ids=["misspelt-baseline", "baseline-flag", "target-rev", "missing-database", "unreachable-port", "unknown-role",
         "pg-tools", "alembic-dir"],
)
def test_refused_in_one_line_before_prefect(cutover_env, conn, pilot, no_prefect, tmp_path, env, args, says):
    before = data_fingerprint(conn, pilot)
    overrides = {key: str(free_port()) if value == "closed" else value for key, value in env.items()}
    # The unreachable server is reached on 127.0.0.1 whatever the shared server's address.
    overrides.update({"POSTGRES_HOST": "127.0.0.1"} if "POSTGRES_PORT" in env else {})

    line = the_one_line(cutover("run", *APPROVED, *args, env={**no_prefect, **overrides}))

    for phrase in says:
        assert phrase in line
    assert_nothing_changed(conn, pilot, before, tmp_path / "backups")


def test_a_dry_run_is_refused_the_same_way(cutover_env, conn, pilot, no_prefect, tmp_path):
    before = data_fingerprint(conn, pilot)
    line = the_one_line(cutover("run", "--dry-run", env={**no_prefect, "BASELINE_REV": "0001_baseIine"}))
    assert line.startswith("cutover: BASELINE_REV='0001_baseIine' is not a revision")
    assert_nothing_changed(conn, pilot, before, tmp_path / "backups")


def test_wrong_password_names_the_setting_and_never_shows_it(cutover_env, no_prefect, tmp_path):
    # The shared server trusts every loopback connection: a private cluster asks this role for its password.
    home = Path(tempfile.mkdtemp(prefix="pgc-hba-"))
    try:
        hba = home / "pg_hba.conf"
        hba.write_text("local all all trust\nhost all postgres 127.0.0.1/32 trust\n"
                       "host all all 127.0.0.1/32 scram-sha-256\n")
        for path in (home, hba):
            shutil.chown(path, "postgres", "postgres")
        with private_cluster(f"hba_file={hba}") as admin:
            with db.connect(admin, "postgres") as c, c.cursor() as cur:
                cur.execute("CREATE ROLE app_owner LOGIN PASSWORD 'the-Right-0ne'")
                cur.execute("CREATE DATABASE pilot_pw OWNER app_owner")
            wrong = "wr0ng-Secret-Value"
            env = {**no_prefect, "POSTGRES_HOST": admin.host, "POSTGRES_PORT": str(admin.port),
                   "POSTGRES_USER": "app_owner", "POSTGRES_PASSWORD": wrong, "POSTGRES_DB": "pilot_pw"}

            line = the_one_line(cutover("run", *APPROVED, env=env))

            assert "POSTGRES_PASSWORD" in line and "password authentication failed" in line
            assert wrong not in line and "the-Right-0ne" not in line
            with db.connect(admin, "pilot_pw") as c, c.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_class WHERE relname = 'alembic_version'")
                assert cur.fetchone()[0] == 0
            assert databases_like(admin, "pilot_pw_") == []
            assert not (tmp_path / "backups").exists()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_rollback_of_a_manifest_that_is_not_there(cutover_env, no_prefect, tmp_path):
    line = the_one_line(cutover("rollback", "--manifest", str(tmp_path / "no-such-run"), env=no_prefect))
    assert line.startswith(f"cutover: manifest='{tmp_path / 'no-such-run'}' is not a manifest.json path")


def test_rollback_with_the_server_unreachable(cutover_env, conn, pilot, no_prefect, tmp_path):
    # A cutover that touched production: its rollback needs the server, and says so before Prefect starts.
    run_dir = tmp_path / "backups" / pilot / "20260101_000000"
    run_dir.mkdir(parents=True)
    manifest = Manifest(run_id="manual", database=pilot, host=conn.host, port=conn.port, production_touched=True,
                        status="failed")
    (run_dir / MANIFEST_NAME).write_text(manifest.model_dump_json())
    port = free_port()

    line = the_one_line(cutover("rollback", "--manifest", str(run_dir),
                                env={**no_prefect, "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(port)}))

    assert f"POSTGRES_HOST/POSTGRES_PORT 127.0.0.1:{port} could not be reached" in line
    assert sorted(p.name for p in run_dir.iterdir()) == [MANIFEST_NAME]  # no incident written, nothing restored


@pytest.mark.e2e
def test_a_failed_run_says_where_its_evidence_is(prefect_api, cutover_env, broken_alembic_dir, conn, pilot, tmp_path):
    from prefect.settings import PREFECT_API_URL

    cutover_env.setenv("CUTOVER_ALEMBIC_DIR", str(broken_alembic_dir))
    # The test API, not a temporary server of the command's own (test_cli_startup starts one of those).
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_HOME": str(tmp_path / "prefect-home")}

    proc = cutover("run", *APPROVED, env=env)

    assert proc.returncode == 1, proc.stderr[-3000:]
    failed, where = proc.stderr.splitlines()[-2:]
    assert failed.startswith("cutover: alembic upgrade failed") and "division by zero" in failed
    assert where.startswith("cutover: run directory: ")
    # "cutover: run directory: <dir>; report: <file>" (and "; incident: <file>" had a rollback written one)
    run_dir, report = (part.split(": ")[-1] for part in where.split("; ")[:2])
    assert Path(run_dir).parent == tmp_path / "backups" / pilot and Path(run_dir).is_dir()
    assert Path(report) == Path(run_dir) / REPORT_NAME and Path(report).is_file()
    assert Manifest.model_validate_json((Path(run_dir) / MANIFEST_NAME).read_text()).status == "failed"

