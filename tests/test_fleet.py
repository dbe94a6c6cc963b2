"""The fleet for real: a `prefect server`, two process workers on one pool, five pilot databases,
`cutover fleet --inventory` on the command line, at most two cutovers at once on the host."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

import httpx
import pytest

from pg_cutover.launcher.embedded import EXAMPLE_APP_DIR, REPO_ROOT
from pg_cutover.pg import db
from pg_cutover.runbook.fleet import max_overlap
from tests.conftest import BASELINE, HEAD, deployed_worker
from tests.helpers import data_fingerprint, databases_like

pytestmark = pytest.mark.slow

PASSWORD = "fleet-pw-Zq9-never-shown"


def _post(api: str, path: str, body: dict) -> list[dict]:
    for _ in range(20):  # SQLite answers 503 now and then on a loaded machine
        response = httpx.post(f"{api}{path}", json=body, timeout=30)
        if response.status_code != 503:
            return response.raise_for_status().json()
    raise AssertionError(f"{path}: the API kept answering 503")


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_five_databases_two_workers_limit_two_per_host(conn, pilot_factory, halfway_alembic_dir, tmp_path,
                                                       prefect_server):
    pilots = [pilot_factory(reviews=150) for _ in range(5)]
    failing = pilots[2]
    before = {name: data_fingerprint(conn, name) for name in pilots}
    counts_before = {name: db.row_counts(conn, name, db.list_tables(conn, name)) for name in pilots}
    inventory = tmp_path / "cutover.toml"
    entries = "\n".join(
        f'[[target]]\nname = "tenant-{i}"\ndatabase = "{name}"\n'
        + (f'alembic_dir = "{halfway_alembic_dir}"\n' if name == failing else "")
        for i, name in enumerate(pilots, 1))
    inventory.write_text(
        "[fleet]\npolicy = \"continue\"\nper_host_limit = 2\nmax_parallel = 4\n\n"
        f'[defaults]\nhost = "{conn.host}"\nport = {conn.port}\nuser = "{conn.user}"\n'
        f'password = "env:FLEET_PGPASSWORD"\nbaseline_rev = "{BASELINE}"\nhealth_url = "none"\n\n{entries}')
    env = {**prefect_server, "CUTOVER_ALEMBIC_DIR": str(EXAMPLE_APP_DIR), "CUTOVER_BACKUP_DIR": str(tmp_path / "backups"),
           "CUTOVER_HEALTH_URL": "none", "CUTOVER_WRITE_SAMPLE_SECONDS": "0", "PREFECT_WORKER_QUERY_SECONDS": "2",
           "FLEET_PGPASSWORD": PASSWORD, "POSTGRES_DB": "postgres"}
    for name in ("CUTOVER_S3_BUCKET", "CUTOVER_SERVICE_START", "CUTOVER_SERVICE_STOP", "CUTOVER_SERVICE_STATUS",
                 "POSTGRES_PASSWORD"):
        env.pop(name, None)
    # Each cutover stops its (here, pretend) backend itself, so what a failed upgrade committed is provably
    # its own and the automatic rollback restores it.
    env.update(CUTOVER_WRITE_FREEZE="stop-service", CUTOVER_SERVICE_STOP="true", CUTOVER_SERVICE_START="true")
    api = env["PREFECT_API_URL"]

    # Policy halt, one at a time, the canary (listed first) failing: the others are never started.
    canary, *rest = [pilot_factory(reviews=50) for _ in range(3)]
    halt_before = {name: data_fingerprint(conn, name) for name in (canary, *rest)}
    halt_inventory = tmp_path / "halt.toml"
    halt_inventory.write_text(
        f'[fleet]\npolicy = "halt"\nper_host_limit = 1\n\n[defaults]\nhost = "{conn.host}"\nport = {conn.port}\n'
        f'baseline_rev = "{BASELINE}"\n\n[[target]]\nname = "canary"\ndatabase = "{canary}"\n'
        f'alembic_dir = "{halfway_alembic_dir}"\n'
        + "".join(f'\n[[target]]\nname = "later-{i}"\ndatabase = "{name}"\n' for i, name in enumerate(rest, 1)))

    def cli(path):
        return subprocess.run(
            [sys.executable, "-m", "pg_cutover.launcher.cli", "fleet", "--inventory", str(path), "--approved-by", "night shift",
             "--confirm-checklist", "--ticket", "CHG-42"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)

    with deployed_worker(env, tmp_path, workers=2):
        fleet = cli(inventory)
        halted = cli(halt_inventory)
    out = fleet.stdout + fleet.stderr
    print(out)
    halt_out = halted.stdout + halted.stderr
    assert halted.returncode == 1 and "3 of 3 targets did not cut over: canary, later-1, later-2" in halt_out, halt_out
    for name in (canary, *rest):
        assert db.alembic_revision(conn, name) is None and data_fingerprint(conn, name) == halt_before[name]
    assert [line.split()[1] for line in halted.stdout.splitlines()[-3:]] == ["rolled", "skipped", "skipped"], halt_out

    # One target failed and was rolled back: the fleet says so and exits non-zero.
    assert fleet.returncode == 1, out
    assert "1 of 5 targets did not cut over: tenant-3" in out, out

    # Four at head with every row kept; the failing one exactly as it was, its failed state kept aside.
    for name in pilots:
        if name == failing:
            assert db.alembic_revision(conn, name) is None
            assert data_fingerprint(conn, name) == before[name]
            assert len(databases_like(conn, f"{name}_failed_")) == 1
        else:
            assert db.alembic_revision(conn, name) == HEAD
            assert db.row_counts(conn, name, db.list_tables(conn, name)) == counts_before[name]
            after = data_fingerprint(conn, name)
            assert [after[t] for t in after if t.endswith("reviews")] == [before[name][t] for t in after if t.endswith("reviews")]

    # Each target was its own run of the fleet-target deployment; none of them ran beside more than one other.
    runs = _post(api, "/flow_runs/filter", {"flow_runs": {"tags": {"all_": ["pg-cutover-fleet"]}}})
    cutovers = {r["parameters"]["target"]["database"]: r for r in runs
                if (r.get("parameters") or {}).get("target", {}).get("database") in pilots}
    assert sorted(cutovers) == sorted(pilots)
    rollbacks = _post(api, "/flow_runs/filter", {"flows": {"name": {"any_": ["rollback"]}}})
    busy = {}
    for name, run in cutovers.items():
        end = _ts(run["end_time"])
        for rb in rollbacks:
            if rb["parameters"].get("manifest") == run["id"] and rb.get("end_time"):
                end = max(end, _ts(rb["end_time"]))  # the restore works on the same host
        busy[name] = (_ts(run["start_time"]), end)
    assert {r["state"]["type"] for n, r in cutovers.items() if n != failing} == {"COMPLETED"}
    assert cutovers[failing]["state"]["type"] == "FAILED"
    assert max_overlap(list(busy.values())) == 2, busy  # the limit held, and was used

    # The summary artifact: five rows, four succeeded, one rolled back with the revisions.
    fleet_run = _post(api, "/flow_runs/filter", {"flows": {"name": {"any_": ["fleet"]}}, "sort": "START_TIME_ASC"})[0]
    summaries = _post(api, "/artifacts/filter", {"artifacts": {"key": {"any_": ["fleet-summary"]},
                                                               "flow_run_id": {"any_": [fleet_run["id"]]}},
                                                  "sort": "CREATED_DESC", "limit": 1})
    rows = {r["target"]: r for r in json.loads(summaries[0]["data"])}
    assert len(rows) == 5
    assert [rows[f"tenant-{i}"]["status"] for i in range(1, 6)] == ["succeeded"] * 2 + ["rolled back"] + ["succeeded"] * 2
    assert rows["tenant-1"]["revision_before"] == "none" and rows["tenant-1"]["revision_after"] == HEAD
    assert rows["tenant-3"]["revision_after"] == "none"
    assert rows["tenant-3"]["rollback"].startswith("restored by run ")
    assert all(r["flow_run"] and r["seconds"] for r in rows.values())
    report = _post(api, "/artifacts/filter", {"artifacts": {"key": {"any_": ["fleet-report"]},
                                                            "flow_run_id": {"any_": [fleet_run["id"]]}}, "limit": 1})
    assert "4 succeeded" in report[0]["data"] and "1 rolled back" in report[0]["data"]

    # The password travelled by reference only: in no parameter and no artifact the API holds.
    everything = json.dumps(_post(api, "/flow_runs/filter", {})) + json.dumps(_post(api, "/artifacts/filter", {}))
    assert "env:FLEET_PGPASSWORD" in everything and PASSWORD not in everything
    assert PASSWORD not in out
