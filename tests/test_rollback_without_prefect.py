"""The rollback works when Prefect cannot (issue 18): with PREFECT_API_URL at a closed port,
`cutover rollback` runs the same steps without Prefect, restores, writes the incident, exits 0, and
says that the evidence was not posted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pg_cutover.flows.cutover import cutover
from pg_cutover.launcher.embedded import free_port
from pg_cutover.pg import db
from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.manifest import load_manifest
from tests.helpers import data_fingerprint


def left_touched(conn, pilot, cutover_env, halfway_alembic_dir):
    """A cutover that failed halfway on production, its automatic rollback off: production is left touched."""
    cutover_env.setenv("CUTOVER_ALEMBIC_DIR", str(halfway_alembic_dir))
    cutover_env.setenv("CUTOVER_WRITE_FREEZE", "stop-service")  # the failed upgrade's changes are its own
    cutover_env.setenv("CUTOVER_SERVICE_STOP", "true")
    cutover_env.setenv("CUTOVER_SERVICE_START", "true")
    before = data_fingerprint(conn, pilot)
    state = cutover(approved_by="alice", checklist=Checklist.all_confirmed(), rollback_on_failure=False,
                    return_state=True)
    assert state.is_failed()
    run_dir = next(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("manifest.json")).parent
    assert load_manifest(run_dir / "manifest.json").rollback.status == "not-started"
    assert data_fingerprint(conn, pilot) != before
    return state, run_dir, before


def api_down(tmp_path) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",  # nothing listens there
            "PREFECT_HOME": str(tmp_path / "prefect-home")}


def test_cutover_rollback_restores_with_the_prefect_api_down(prefect_api, conn, pilot, cutover_env, halfway_alembic_dir,
                                                            tmp_path):
    state, run_dir, before = left_touched(conn, pilot, cutover_env, halfway_alembic_dir)

    proc = subprocess.run([sys.executable, "-m", "pg_cutover.launcher.cli", "rollback", "--manifest", str(run_dir)],
                          env=api_down(tmp_path), capture_output=True, text=True, timeout=300)

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"status": "restored"' in proc.stdout
    assert "the Prefect API could not be reached" in proc.stderr and "not posted to Prefect" in proc.stderr
    assert data_fingerprint(conn, pilot) == before and db.alembic_revision(conn, pilot) is None
    m = load_manifest(run_dir / "manifest.json")
    assert m.rollback.status == "restored" and m.rollback.flow_run_id is None
    incident = (run_dir / "incident.md").read_text()
    assert "restored from the backup" in incident and m.rollback.failed_database in incident


# The cutover's own failure hook, as its process runs it when the run fails, with the API gone meanwhile.
HOOK = """
import sys
from uuid import UUID, uuid4
from prefect.client.schemas.objects import FlowRun
from prefect.states import Failed
from pg_cutover.flows.cutover import cutover, start_rollback
run = FlowRun(id=UUID(sys.argv[1]), flow_id=uuid4(), name="failed-cutover", parameters={})
start_rollback(cutover, run, Failed(message="production-upgrade failed"))
"""


def test_the_failing_cutovers_own_rollback_restores_with_the_prefect_api_down(prefect_api, conn, pilot, cutover_env,
                                                                             halfway_alembic_dir, tmp_path):
    state, run_dir, before = left_touched(conn, pilot, cutover_env, halfway_alembic_dir)
    # As if the run had allowed its automatic rollback: the hook, not a human, rolls back.
    manifest = load_manifest(run_dir / "manifest.json")
    manifest.auto_rollback = True
    (run_dir / "manifest.json").write_text(manifest.model_dump_json(indent=2))

    proc = subprocess.run([sys.executable, "-c", HOOK, str(state.state_details.flow_run_id)], env=api_down(tmp_path),
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rolling back in this process without it" in proc.stderr
    assert data_fingerprint(conn, pilot) == before and db.alembic_revision(conn, pilot) is None
    m = load_manifest(run_dir / "manifest.json")
    assert m.rollback.status == "restored" and "restored from the backup" in (run_dir / "incident.md").read_text()
