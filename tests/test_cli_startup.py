"""`cutover run` start-up (issue 8): the temporary Prefect server the command starts itself when no
Prefect API is configured."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from pg_cutover.launcher.prefect_internals import LOG_NAME
from tests.helpers import databases_like, processes_with_home


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
    assert processes_with_home(prefect_home) == []  # the server is gone with the command

    # The run's evidence is in this PREFECT_HOME's database, read without starting anything.
    with sqlite3.connect(prefect_home / "prefect.db") as evidence:
        runs = evidence.execute(
            "SELECT flow_run.id, flow_run.state_type, flow_run.start_time FROM flow_run "
            "JOIN flow ON flow.id = flow_run.flow_id WHERE flow.name = 'cutover'").fetchall()
        assert [state for _, state, _ in runs] == ["COMPLETED"]
        run_id = runs[0][0]
        artifacts = dict(evidence.execute("SELECT key, description FROM artifact WHERE flow_run_id = ?", (run_id,)))
    assert len(artifacts) >= 3, artifacts
    assert databases_like(conn, f"{pilot}_baseline") == []  # the baseline's database dropped

