"""The server-side rollback trigger, for real: a `prefect server`, a process worker, the
deployments from prefect.yaml (through deployments/deploy.py), and the cutover's process
killed with SIGKILL during the production upgrade."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from pg_cutover.launcher.embedded import EXAMPLE_APP_DIR
from pg_cutover.pg import db
from pg_cutover.runbook.manifest import load_manifest
from tests.conftest import BASELINE, deployed_worker, wait_for
from tests.helpers import data_fingerprint, databases_like

pytestmark = pytest.mark.slow

SLOW_REVISION = '''"""Takes long on production (not on scratch): time to kill the cutover mid-upgrade."""
from alembic import op

revision = "0004_slow"
down_revision = "0003_review_constraints"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("UPDATE breweries SET city = upper(city)")
    op.execute(
        "DO $$ BEGIN IF position('_scratch_' in current_database()) = 0 THEN "
        "PERFORM pg_sleep(60); END IF; END $$"
    )


def downgrade():
    pass
'''


def flow_run_process(flow_run_id: str) -> psutil.Process | None:
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("PREFECT__FLOW_RUN_ID") == flow_run_id:
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return None


def test_killed_cutover_is_rolled_back_by_the_server_trigger(conn, pilot, tmp_path, prefect_server, webhook):
    app = tmp_path / "slow_app"
    shutil.copytree(EXAMPLE_APP_DIR, app, ignore=shutil.ignore_patterns("__pycache__"))
    (app / "alembic" / "versions" / "0004_slow.py").write_text(SLOW_REVISION)
    backups = tmp_path / "backups"
    env = {**prefect_server, "POSTGRES_DB": pilot, "BASELINE_REV": BASELINE, "CUTOVER_ALEMBIC_DIR": str(app),
           "CUTOVER_BACKUP_DIR": str(backups), "CUTOVER_HEALTH_URL": "none", "PREFECT_WORKER_QUERY_SECONDS": "2"}
    for name in ("CUTOVER_S3_BUCKET", "CUTOVER_SERVICE_START", "CUTOVER_SERVICE_STOP", "CUTOVER_SERVICE_STATUS"):
        env.pop(name, None)
    before = data_fingerprint(conn, pilot)

    with deployed_worker(env, tmp_path, notify=webhook.register(env)):
        params = {"approved_by": "night shift", "checklist": {k: True for k in (
            "window_approved", "writes_paused", "operator_and_reviewer_present", "backup_storage_confirmed",
            "rollback_owner_assigned")}}
        started = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "cutover/cutover",
                                  "--params", json.dumps(params)], env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stderr
        run_id = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1)

        def upgrading():
            found = list(backups.rglob("manifest.json"))
            if not found:
                return None
            step = load_manifest(found[0]).step("production-upgrade")
            return found[0] if step is not None and step.status == "running" else None

        manifest_path = wait_for("the production upgrade to start", upgrading, 180)
        time.sleep(1)
        engine = wait_for("the cutover's flow-run process", lambda: flow_run_process(run_id), 30)
        engine.send_signal(signal.SIGKILL)

        def rolled_back():
            m = load_manifest(manifest_path)
            return m if m.rollback is not None and m.rollback.status == "restored" else None

        m = wait_for("the rollback to restore production", rolled_back, 240, interval=1)
        api = env["PREFECT_API_URL"]
        # Whoever is on call hears it: the database, what the rollback did, and the rollback run's page.
        told = webhook.wait_for("the rollback notification", lambda m: "pg-cutover.rollback.restored" in m["body"])
        assert pilot in told["subject"] and "Restored" in told["body"] and "/runs/flow-run/" in told["body"]

        def rollbacks_finished():
            response = httpx.post(f"{api}/flow_runs/filter", json={"deployments": {"name": {"any_": ["rollback"]}}})
            if response.status_code == 503:  # SQLite busy on a loaded machine: ask again
                return None
            found = response.raise_for_status().json()
            return found if found and all(r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED") for r in found) else None

        rollbacks = wait_for("the rollback runs to finish", rollbacks_finished, 120, interval=1)

    m = load_manifest(manifest_path)
    # The cutover never got to say anything; the rollback, finding its lock free, records the crash.
    assert m.status == "crashed" and m.production_touched and m.finished_at
    # One rollback run for the crash: the trigger's (the worker's on_crashed hook leaves a crash to it).
    assert [a["outcome"] for a in m.rollback.attempts] == ["restored from the backup"]
    assert data_fingerprint(conn, pilot) == before
    assert db.alembic_revision(conn, pilot) is None
    assert databases_like(conn, f"{pilot}_failed_") == [m.rollback.failed_database]
    runs = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}}).json()
    assert runs[0]["state"]["type"] == "CRASHED"
    # Created by the server-side trigger itself, with the rendered id; named and ended so a person can tell.
    assert len(rollbacks) == 1 and (rollbacks[0].get("created_by") or {}).get("type") == "AUTOMATION"
    assert rollbacks[0]["parameters"] == {"manifest": run_id, "automatic": True}
    assert rollbacks[0]["state"]["type"] == "COMPLETED" and rollbacks[0]["state"]["name"] == "Restored"
    assert rollbacks[0]["name"].startswith(f"rollback-{pilot}-of-")
