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
        "operator": "Olga Operator", "reviewer": "Rita Reviewer", "rollback_owner": "Rob Rollback", "ticket": "CHG-1234"}


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

    def run_deployment(self, name: str, parameters: dict, state: dict | None = None, env: dict | None = None) -> str:
        body = {"parameters": parameters} | ({"state": state} if state else {}) | (
            {"job_variables": {"env": env}} if env else {})
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


def test_operator_path_form_refusal_and_late_start(conn, pilot, tmp_path, prefect_server, webhook):
    backups = tmp_path / "backups"
    env = {**prefect_server, "POSTGRES_DB": pilot, "BASELINE_REV": BASELINE, "CUTOVER_ALEMBIC_DIR": str(EXAMPLE_APP_DIR),
           "CUTOVER_BACKUP_DIR": str(backups), "CUTOVER_HEALTH_URL": "none", "PREFECT_WORKER_QUERY_SECONDS": "2",
           "CUTOVER_WRITE_SAMPLE_SECONDS": "1"}
    for name in [k for k in env if k.startswith(("CUTOVER_S3", "CUTOVER_SERVICE", "CUTOVER_WINDOW"))]:
        env.pop(name)
    api = Api(env["PREFECT_API_URL"])
    before = data_fingerprint(conn, pilot)
    with deployed_worker(env, tmp_path, notify=webhook.register(env)):
        # Every parameter of the Run and Custom run forms has its help.
        for name in ("cutover/cutover", "rollback/rollback", "fleet/fleet", "finalize/finalize"):
            schema = api.http.get(f"/deployments/{api.deployment_id(name)}").json()["parameter_openapi_schema"]
            assert all(p.get("description") for p in schema["properties"].values()), (name, schema)

        # 1. Nobody answers the form: the run ends without touching anything.
        refused = api.run_deployment("cutover/cutover", {"approval_timeout_seconds": 15})
        assert api.wait_state(refused, {"PAUSED"}, 120)["name"] == "Paused"
        # Whoever is on call hears that a run waits for approval: which database, and the run's page.
        waiting = webhook.wait_for("the approval-waiting notification",
                                   lambda m: "pg-cutover.approval.waiting" in m["body"] and refused in m["body"])
        assert pilot in waiting["subject"] and pilot in waiting["body"] and "/runs/flow-run/" in waiting["body"]
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
        # What the approver signs is already there: the plan, baseline parity, the upgrade SQL with its lint.
        signed = api.artifacts(run)
        key = pilot.replace("_", "-")
        assert {f"{key}-{name}" for name in ("plan", "baseline-parity", "upgrade-sql")} <= set(signed), set(signed)
        assert "Squawk findings" in signed[f"{key}-upgrade-sql"] and HEAD in signed[f"{key}-plan"]
        # The server may report Paused a moment before the form's inputs are readable.
        description = wait_for("the form's description", lambda: (lambda r: r.text if r.status_code == 200 else None)(
            api.http.get(f"/flow_runs/{run}/input/{keyset['description']}")), 60)
        assert pilot in description and HEAD in description and len(description) < 600
        # Every field of the form is required: the UI will not submit it half-filled.
        form = api.http.get(f"/flow_runs/{run}/input/{keyset['schema']}").json()
        form = json.loads(form) if isinstance(form, str) else form
        assert set(form["required"]) == set(FORM), form
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
    assert "CHG-1234" in checklist
    assert "Approved." in checklist
    assert float(arts[f"{key}-progress"]) == 100.0
    # The refused run left its own manifest (not approved, nothing touched); this is the approved one's.
    m = next(m for m in map(load_manifest, Path(backups).rglob("manifest.json")) if m.flow_run_id == run)
    assert m.status == "succeeded" and m.checklist["reviewer"] == "Rita Reviewer"
    assert arts[f"{key}-cutover-report"] == (Path(m.backup.path).parent / "report.md").read_text()


def test_one_rollback_run_per_failure_and_none_for_a_preflight(conn, pilot, tmp_path, prefect_server, webhook):
    backups = tmp_path / "backups"
    env = {**prefect_server, "PREFECT_WORKER_QUERY_SECONDS": "2", "CUTOVER_WRITE_SAMPLE_SECONDS": "1"}
    for name in [k for k in env if k.startswith(("CUTOVER_S3", "CUTOVER_SERVICE", "CUTOVER_WINDOW", "POSTGRES_DB",
                                                 "BASELINE_REV", "CUTOVER_ALEMBIC_DIR", "CUTOVER_BACKUP_DIR"))]:
        env.pop(name)
    # The app's settings come with the cutover run (job variables); its rollback run must find them itself.
    app = {"POSTGRES_DB": pilot, "BASELINE_REV": BASELINE, "CUTOVER_BACKUP_DIR": str(backups),
           "CUTOVER_ALEMBIC_DIR": str(EXAMPLE_APP_DIR), "CUTOVER_HEALTH_URL": "none"}
    api = Api(env["PREFECT_API_URL"])
    approved = {"approved_by": "night shift", "ticket": "CHG-9", "checklist": {k: True for k in FORM if k not in (
        "operator", "reviewer", "rollback_owner", "ticket")}}
    before = data_fingerprint(conn, pilot)
    key = pilot.replace("_", "-")

    def rollbacks_of(run_id: str) -> list[dict]:
        runs = api.post("/flow_runs/filter", json={"flows": {"name": {"any_": ["rollback"]}}}).json()
        return [r for r in runs if r["parameters"].get("manifest") == run_id]

    with deployed_worker(env, tmp_path, notify=webhook.register(env)):
        # A preflight failure (a baseline the migrations do not know): the run says why, no rollback run.
        early = api.run_deployment("cutover/cutover", {**approved, "baseline_rev": "0001_nope"}, env=app)
        end = api.wait_state(early, {"FAILED", "CANCELLED", "COMPLETED", "CRASHED"}, 180)
        assert end["type"] == "FAILED" and "0001_nope" in end["message"], end

        # Production refuses writes (the scratch copy, restored without database settings, does not), so the
        # dry run passes and `alembic stamp` fails on production: exactly one rollback run, named and ended to be read.
        with db.connect(conn, "postgres") as c, c.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{pilot}" SET default_transaction_read_only = on')
        failed = api.run_deployment("cutover/cutover", approved, env=app)
        end = api.wait_state(failed, {"FAILED", "CANCELLED", "COMPLETED", "CRASHED"}, 300)
        assert end["type"] == "FAILED", end
        rollback = wait_for("the rollback run to end", lambda: (lambda runs: runs if runs and all(
            r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED") for r in runs) else None)(rollbacks_of(failed)),
            300, interval=1)
        told = webhook.wait_for("the rollback notification", lambda m: "pg-cutover.rollback.restored" in m["body"])
        failed_told = webhook.wait_for("the failure notification", lambda m: "pg-cutover.cutover.failed" in m["body"]
                                       and failed in m["body"])
        assert rollbacks_of(early) == []

    assert len(rollback) == 1 and rollback[0]["state"]["name"] == "Restored", rollback
    cutover_name = api.http.get(f"/flow_runs/{failed}").json()["name"]
    assert rollback[0]["name"] == f"rollback-{pilot}-of-{cutover_name}"
    assert pilot in told["subject"] and rollback[0]["id"] in told["body"]
    assert "after touching production" in failed_told["body"] and failed in failed_told["body"]
    assert data_fingerprint(conn, pilot) == before and db.alembic_revision(conn, pilot) is None
    # The incident names the migration's own error; the cutover's run links to its rollback and says restored.
    incident = api.artifacts(rollback[0]["id"])[f"{key}-incident"]
    assert "read-only transaction" in incident.split("## What the failing command said")[1]
    arts = api.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [failed]}},
                                              "sort": "CREATED_DESC"}).json()
    newest = {}
    for a in arts:
        newest.setdefault(a["key"], a["data"])
    assert json.loads(newest[f"{key}-outcome"])[0]["rollback"] == "restored"
    assert rollback[0]["id"] in newest[f"{key}-rollback-run"] and "Restored" in newest[f"{key}-rollback-run"]


def documented_worker_env() -> dict[str, str]:
    """deployments/worker.env.example, as the README tells an operator to load it."""
    text = (Path(__file__).resolve().parents[1] / "deployments" / "worker.env.example").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_a_worker_started_as_the_readme_says_runs_the_example_app(conn, pilot, tmp_path, prefect_server):
    documented = documented_worker_env()
    app = {"POSTGRES_DB", "BASELINE_REV", "CUTOVER_ALEMBIC_DIR", "CUTOVER_HEALTH_URL", "CUTOVER_BACKUP_DIR"}
    assert app <= set(documented) and documented["BASELINE_REV"] == BASELINE
    # The worker knows only the server and Prefect; the app's settings come with the run as job variables
    # (the deployment's job_variables.env, or the UI's Custom run), so one worker serves several apps.
    base = {k: v for k, v in prefect_server.items() if not k.startswith(("CUTOVER_", "POSTGRES_", "BASELINE_"))}
    env = {**base, **{k: v for k, v in documented.items() if k not in app},
           "PREFECT_API_URL": prefect_server["PREFECT_API_URL"], "PREFECT_WORKER_QUERY_SECONDS": "2"}
    job_env = {k: documented[k] for k in app} | {"POSTGRES_DB": pilot, "CUTOVER_BACKUP_DIR": str(tmp_path / "backups"),
                                                 "CUTOVER_WRITE_SAMPLE_SECONDS": "1"}
    api = Api(env["PREFECT_API_URL"])
    before = data_fingerprint(conn, pilot)
    with deployed_worker(env, tmp_path):
        body = {"parameters": {"approved_by": "night shift", "ticket": "CHG-7", "checklist": {k: True for k in FORM if k
                               not in ("operator", "reviewer", "rollback_owner", "ticket")}},
                "job_variables": {"env": job_env}}
        run = api.post(f"/deployments/{api.deployment_id('cutover/cutover')}/create_flow_run", json=body).json()["id"]
        end = api.wait_state(run, {"FAILED", "CANCELLED", "COMPLETED", "CRASHED"}, 300)
    assert end["type"] == "COMPLETED", end
    assert db.alembic_revision(conn, pilot) == HEAD
    after = data_fingerprint(conn, pilot)
    assert {t: n for t, (n, _) in after.items()} == {t: n for t, (n, _) in before.items()}
    assert list((tmp_path / "backups" / pilot).glob("*/report.md"))
