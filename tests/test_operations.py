"""Operating pg-cutover as an operator does: a real `prefect server`, the deployments from
prefect.yaml, a process worker, runs created through the API as the UI's Run button does,
and the checklist form answered through the API as the UI's Resume form does."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from pg_cutover.launcher.embedded import EXAMPLE_APP_DIR
from pg_cutover.pg import db
from pg_cutover.runbook.manifest import load_manifest
from tests.conftest import BASELINE, HEAD, deployed_worker, wait_for
from tests.helpers import data_fingerprint

pytestmark = pytest.mark.slow

FORM = {"window_approved": True, "writes_paused": True, "operator_and_reviewer_present": True,
        "backup_storage_confirmed": True, "rollback_owner_assigned": True,
        "operator": "Olga Operator", "reviewer": "Rita Reviewer", "rollback_owner": "Rob Rollback"}


class Api:
    def __init__(self, url: str):
        self.url = url
        # The SQLite-backed server answers 503 while its database is busy (a loaded CI machine):
        # retried, as a person would press the button again.
        self.http = httpx.Client(base_url=url, timeout=30, transport=httpx.HTTPTransport(retries=3))

    def post(self, path: str, **kw) -> httpx.Response:
        for _ in range(10):
            response = self.http.post(path, **kw)
            if response.status_code != 503:
                return response.raise_for_status()
            time.sleep(1)
        return response.raise_for_status()

    def deployment_id(self, name: str) -> str:
        return self.http.get(f"/deployments/name/{name}").raise_for_status().json()["id"]

    def run_deployment(self, name: str, parameters: dict, state: dict | None = None) -> str:
        body = {"parameters": parameters} | ({"state": state} if state else {})
        return self.post(f"/deployments/{self.deployment_id(name)}/create_flow_run", json=body).json()["id"]

    def state(self, run_id: str) -> dict:
        response = self.http.get(f"/flow_runs/{run_id}")
        return {} if response.status_code == 503 else response.raise_for_status().json()["state"]

    def wait_state(self, run_id: str, types: set[str], timeout: float) -> dict:
        return wait_for(f"flow run {run_id} to reach {types}",
                        lambda: (s := self.state(run_id)) and s["type"] in types and s, timeout, interval=1)

    def artifacts(self, run_id: str) -> dict[str, object]:
        arts = self.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}).json()
        return {a["key"]: a["data"] for a in arts if a.get("key")}


def test_operator_path_form_refusal_and_late_start(conn, pilot, tmp_path, prefect_server):
    backups = tmp_path / "backups"
    env = {**prefect_server, "POSTGRES_DB": pilot, "BASELINE_REV": BASELINE, "CUTOVER_ALEMBIC_DIR": str(EXAMPLE_APP_DIR),
           "CUTOVER_BACKUP_DIR": str(backups), "CUTOVER_HEALTH_URL": "none", "PREFECT_WORKER_QUERY_SECONDS": "2",
           "CUTOVER_WRITE_SAMPLE_SECONDS": "1"}
    for name in [k for k in env if k.startswith(("CUTOVER_S3", "CUTOVER_SERVICE", "CUTOVER_WINDOW"))]:
        env.pop(name)
    api = Api(env["PREFECT_API_URL"])
    before = data_fingerprint(conn, pilot)
    with deployed_worker(env, tmp_path):
        # 1. Nobody answers the form: the run ends without touching anything.
        refused = api.run_deployment("cutover/cutover", {"approval_timeout_seconds": 15})
        assert api.wait_state(refused, {"PAUSED"}, 120)["name"] == "Paused"
        end = api.wait_state(refused, {"FAILED", "CANCELLED", "COMPLETED", "CRASHED"}, 120)
        # Whichever notices first words it: the server (pause expired) or the flow (its own timeout).
        assert end["type"] == "FAILED"
        assert "never resumed" in end["message"] or "nobody answered the checklist form" in end["message"]
        # The server may fail the expired pause before the flow's own process writes why.
        checklist = wait_for("the refusal evidence", lambda: api.artifacts(refused).get(f"{pilot.replace('_', '-')}-checklist"), 60)
        assert "nobody answered the checklist form" in checklist
        assert data_fingerprint(conn, pilot) == before and db.alembic_revision(conn, pilot) is None

        # 2. A scheduled run that starts two hours late in a one-hour window is deferred.
        late = api.run_deployment("cutover/cutover", {"window_minutes": 60, "approved_by": "scheduler",
                                                      "checklist": {k: True for k in FORM if not k.endswith(("operator", "reviewer", "owner"))}},
                                  state={"type": "SCHEDULED", "state_details": {"scheduled_time": (
                                      datetime.now(timezone.utc) - timedelta(hours=2)).isoformat()}})
        end = api.wait_state(late, {"FAILED", "CANCELLED", "COMPLETED", "CRASHED"}, 120)
        assert end["type"] == "CANCELLED" and end["name"] == "Deferred", end
        assert "after the window closed" in end["message"]
        window = json.loads(api.artifacts(late)[f"{pilot.replace('_', '-')}-window-start"])
        assert window[0]["ok"] is False
        assert data_fingerprint(conn, pilot) == before and db.alembic_revision(conn, pilot) is None

        # 3. The operator's path: Run, answer the form (Resume), read the evidence.
        run = api.run_deployment("cutover/cutover", {})
        paused = api.wait_state(run, {"PAUSED"}, 120)
        keyset = paused["state_details"]["run_input_keyset"]
        # The server may report Paused a moment before the form's inputs are readable.
        description = wait_for("the form's description", lambda: (lambda r: r.text if r.status_code == 200 else None)(
            api.http.get(f"/flow_runs/{run}/input/{keyset['description']}")), 60)
        assert pilot in description and HEAD in description
        api.post(f"/flow_runs/{run}/resume", json={"run_input": FORM})
        end = api.wait_state(run, {"FAILED", "CANCELLED", "COMPLETED", "CRASHED"}, 300)
        assert end["type"] == "COMPLETED", end

    assert db.alembic_revision(conn, pilot) == HEAD
    arts = api.artifacts(run)
    key = pilot.replace("_", "-")
    expected = {"checklist", "window-start", "writes-paused", "backup", "backup-contents", "scratch-alembic",
                "window-production", "production-current", "service-status", "api-health", "db-objects",
                "cutover-report", "progress"}
    assert {f"{key}-{name}" for name in expected} <= set(arts)
    checklist = arts[f"{key}-checklist"]
    assert "Olga Operator" in checklist and "Rita Reviewer" in checklist and "Rob Rollback" in checklist
    assert "Approved." in checklist
    assert float(arts[f"{key}-progress"]) == 100.0
    m = load_manifest(next(Path(backups).rglob("manifest.json")))
    assert m.status == "succeeded" and m.checklist["reviewer"] == "Rita Reviewer"
    assert arts[f"{key}-cutover-report"] == (Path(m.backup.path).parent / "report.md").read_text()
