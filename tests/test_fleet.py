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
from pg_cutover.runbook.fleet import FINAL, max_overlap
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


def _one_summary(api: str, flow_run_id: str) -> dict:
    """The fleet run's artifacts as its Artifacts tab lists them: exactly one `fleet-summary` card, holding
    every target's final state; the live table was updated in place, so it is one artifact too."""
    found = _post(api, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
    summaries = [a for a in found if a["key"] == "fleet-summary"]
    assert len(summaries) == 1, [(a["key"], a["type"], a["created"]) for a in found]
    # (Versions of `pg-cutover-status` are filed under the run that posted them: a board, not a fleet table.)
    tables = [a for a in found if a["type"] == "table" and a["key"] != "pg-cutover-status"]
    assert len(tables) == 2 and {a["key"] for a in tables} == {"fleet-summary", None}, tables
    live = next(a for a in tables if a["key"] is None)
    assert json.loads(live["data"]) == json.loads(summaries[0]["data"])  # never left showing a stale state
    progress = [a for a in found if a["key"] == "fleet-progress"]
    assert len(progress) == 1 and progress[0]["data"] == 100.0, progress
    assert all(r["status"] in FINAL for r in json.loads(summaries[0]["data"]))
    return summaries[0]


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

    # A dry run of the two targets the halted fleet never started: production untouched, and said so.
    dry_inventory = tmp_path / "dry.toml"
    dry_inventory.write_text(
        f'[defaults]\nhost = "{conn.host}"\nport = {conn.port}\nbaseline_rev = "{BASELINE}"\n'
        + "".join(f'\n[[target]]\nname = "dry-{i}"\ndatabase = "{name}"\n' for i, name in enumerate(rest, 1)))

    def cli(path, *extra):
        return subprocess.run(
            [sys.executable, "-m", "pg_cutover.launcher.cli", "fleet", "--inventory", str(path), "--approved-by", "night shift",
             "--confirm-checklist", "--ticket", "CHG-42", *extra],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)

    with deployed_worker(env, tmp_path, workers=2):
        fleet = cli(inventory)
        halted = cli(halt_inventory)
        dry = cli(dry_inventory, "--dry-run")
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
    fleet_run, halt_run, dry_run = _post(api, "/flow_runs/filter", {"flows": {"name": {"any_": ["fleet"]}},
                                                                    "sort": "START_TIME_ASC"})
    summary = _one_summary(api, fleet_run["id"])
    rows = {r["target"]: r for r in json.loads(summary["data"])}
    assert len(rows) == 5
    assert [rows[f"tenant-{i}"]["status"] for i in range(1, 6)] == ["succeeded"] * 2 + ["rolled back"] + ["succeeded"] * 2
    assert rows["tenant-1"]["revision_before"] == "none" and rows["tenant-1"]["revision_after"] == HEAD
    assert rows["tenant-3"]["revision_after"] == "none"
    assert rows["tenant-3"]["rollback"].startswith("restored by run ")
    assert all(r["flow_run"] and r["seconds"] for r in rows.values())
    report = _post(api, "/artifacts/filter", {"artifacts": {"key": {"any_": ["fleet-report"]},
                                                            "flow_run_id": {"any_": [fleet_run["id"]]}}, "limit": 1})
    assert "4 succeeded" in report[0]["data"] and "1 rolled back" in report[0]["data"]
    halt_rows = [r["status"] for r in json.loads(_one_summary(api, halt_run["id"])["data"])]
    assert halt_rows == ["rolled back", "skipped", "skipped"]

    # The dry run says it passed, per target and for the fleet, and never that anything was cut over.
    dry_out = dry.stdout + dry.stderr
    said = [line for line in dry_out.splitlines() if line.startswith(("fleet: ", "dry-"))]  # its summary and rows
    assert dry.returncode == 0 and len(said) == 3, dry_out
    assert said[-1].startswith("fleet: Completed: Dry run passed on 2 targets") and "cut over" not in "".join(said)
    dry_summary = _one_summary(api, dry_run["id"])
    assert [r["status"] for r in json.loads(dry_summary["data"])] == ["dry run passed"] * 2
    dry_report = _post(api, "/artifacts/filter", {"artifacts": {"key": {"any_": ["fleet-report"]},
                                                                "flow_run_id": {"any_": [dry_run["id"]]}}})
    assert len(dry_report) == 1 and "2 dry run passed" in dry_report[0]["data"], dry_report
    assert "# Fleet dry run" in dry_report[0]["data"] and "cut over" not in dry_report[0]["data"]
    # The key's card (its latest version) is the last fleet's one final table.
    latest = _post(api, "/artifacts/latest/filter", {"artifacts": {"key": {"any_": ["fleet-summary"]}}})
    assert [c["latest_id"] for c in latest] == [dry_summary["id"]]
    for name in rest:
        assert db.alembic_revision(conn, name) is None and data_fingerprint(conn, name) == halt_before[name]

    # The status board: the targets the halted fleet never started were put there by the fleet's run;
    # since then their dry runs said theirs, in the board's latest version.
    versions = [json.loads(a["data"]) for a in _post(api, "/artifacts/filter", {
        "artifacts": {"key": {"any_": ["pg-cutover-status"]}}, "sort": "CREATED_DESC"})]
    board_rows = {r["database"]: r for r in versions[0]}
    for name in rest:
        assert board_rows[name]["result"] == "dry run passed", board_rows[name]
        assert board_rows[name]["host"] == f"{conn.host}:{conn.port}"
        halted = [r for rows in versions for r in rows if r["database"] == name and r["last_run"] == halt_run["name"]]
        assert halted and halted[0]["result"] == "not started: the fleet halted after canary failed", halted

    # The password travelled by reference only: in no parameter and no artifact the API holds.
    everything = json.dumps(_post(api, "/flow_runs/filter", {})) + json.dumps(_post(api, "/artifacts/filter", {}))
    assert "env:FLEET_PGPASSWORD" in everything and PASSWORD not in everything
    assert PASSWORD not in out
