"""One cutover per database at a time, and no rollback under a cutover that is still alive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pg_cutover.flows.cutover import cutover
from pg_cutover.flows.rollback import rollback
from pg_cutover.pg import db
from pg_cutover.rollback.restore import RollbackFailed, run_lock_name
from pg_cutover.runbook.checklist import Checklist
from tests.conftest import HEAD
from tests.helpers import data_fingerprint, heartbeat_events, run_lock_held


def test_a_cutover_started_while_another_runs_is_refused(prefect_api, conn, pilot, cutover_env, tmp_path):
    from prefect.settings import PREFECT_API_URL

    # The first holds the database's cutover lock and then waits in its backend's stop command
    # (CUTOVER_WRITE_FREEZE=stop-service) until the second has been refused: both run at once
    # however long either takes to start.
    released = tmp_path / "second-refused"
    waiter = tmp_path / "stop_backend.py"
    waiter.write_text("import os, sys, time\nwhile not os.path.exists(sys.argv[1]):\n    time.sleep(0.05)\n")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "CUTOVER_WRITE_FREEZE": "stop-service",
           "CUTOVER_SERVICE_STOP": f"{sys.executable} {waiter} {released}", "CUTOVER_SERVICE_START": "true"}
    argv = [sys.executable, "-m", "pg_cutover.launcher.cli", "run", "--approved-by", "alice", "--confirm-checklist"]
    first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not run_lock_held(conn, pilot):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-1500:]
        time.sleep(0.1)
    second = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, refused = second.communicate(timeout=600)
    released.touch()
    printed, _ = first.communicate(timeout=600)

    assert (first.returncode, second.returncode) == (0, 1), refused[-1500:]
    assert f"Another cutover of {pilot} is running or waiting for approval; nothing was changed." in refused
    winner = json.loads(printed[printed.index("{"):])
    assert winner["status"] == "succeeded" and db.alembic_revision(conn, pilot) == HEAD
    assert len(list(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("*.dump"))) == 1
    # `cutover run` sends its flow's heartbeats itself, in place of Prefect's engine: one at the start.
    flow_run_id = json.loads(Path(winner["manifest"]).read_text())["flow_run_id"]
    assert len(heartbeat_events(flow_run_id)) == 1


def test_no_rollback_while_the_cutover_holds_its_lock(prefect_api, conn, pilot, cutover_env):
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{pilot}" SET default_transaction_read_only = on')
    state = cutover(approved_by="alice", checklist=Checklist.all_confirmed(), rollback_on_failure=False,
                    return_state=True)
    assert state.is_failed()
    before = data_fingerprint(conn, pilot)
    with db.advisory_lock(conn, run_lock_name(pilot), wait_seconds=0) as held:  # as a live cutover would
        assert held
        with pytest.raises(RollbackFailed, match="still running; not restoring under it"):
            rollback(manifest=str(state.state_details.flow_run_id))
    assert data_fingerprint(conn, pilot) == before
    assert rollback(manifest=str(state.state_details.flow_run_id))["status"] == "restored"
