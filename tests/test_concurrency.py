"""One cutover per database at a time, and no rollback under a cutover that is still alive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cutover import db
from cutover.rollback import RollbackFailed, run_lock_name
from flows.cutover import cutover
from flows.rollback import rollback
from tasks.checklist import Checklist
from tests.conftest import HEAD
from tests.helpers import data_fingerprint


def test_two_cutovers_started_together_exactly_one_proceeds(prefect_api, conn, pilot, cutover_env):
    from prefect.settings import PREFECT_API_URL

    # A write sample longer than a whole 5 MB cutover: whichever takes the lock holds it for at least
    # 8 s from its start, so on a loaded machine the other cannot arrive after it has finished (a noop).
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "CUTOVER_WRITE_SAMPLE_SECONDS": "8"}
    argv = [sys.executable, "-m", "cutover.cli", "run", "--approved-by", "alice", "--confirm-checklist"]
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]

    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], [o[1][-1500:] for o in outs]
    loser = outs[[p.returncode for p in procs].index(1)]
    assert f"Another cutover of {pilot} is running or waiting for approval; nothing was changed." in loser[1]
    printed = outs[[p.returncode for p in procs].index(0)][0]
    winner = json.loads(printed[printed.index("{"):])
    assert winner["status"] == "succeeded" and db.alembic_revision(conn, pilot) == HEAD
    assert len(list(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("*.dump"))) == 1


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
