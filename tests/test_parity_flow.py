"""Proof before stamping, in the cutover flow: drift stops the run before the backup; a
reviewed allowlist lets it through; a session in the way stops it before production."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pg_cutover.flows.cutover import cutover
from pg_cutover.pg import db
from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.manifest import load_manifest
from tests.conftest import HEAD
from tests.helpers import artifacts_of, data_fingerprint

APPROVED = dict(approved_by="alice", checklist=Checklist.all_confirmed())

DRIFTS = {
    "hand-added column": ("ALTER TABLE beers ADD COLUMN notes text", "column", "public.beers.notes"),
    "missing index": ("DROP INDEX ix_beers_style", "index", "public.beers USING btree (style)"),
    "changed default": ("ALTER TABLE breweries ALTER COLUMN city SET DEFAULT 'Unknown'", "column",
                        "public.breweries.city"),
}


def drift(conn, pilot, statement):
    with db.connect(conn, pilot) as c, c.cursor() as cur:
        cur.execute(statement)


def the_manifest():
    return load_manifest(next(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("manifest.json")))


@pytest.mark.parametrize("name", list(DRIFTS))
def test_drift_from_the_baseline_stops_before_the_backup(prefect_api, conn, pilot, cutover_env, name):
    statement, kind, obj = DRIFTS[name]
    drift(conn, pilot, statement)
    before = data_fingerprint(conn, pilot)

    state = cutover(**APPROVED, return_state=True)

    assert state.is_failed() and "differs from the baseline" in state.message
    m = the_manifest()
    assert m.failure["step"] == "baseline-parity" and m.backup is None and not m.production_touched
    assert db.alembic_revision(conn, pilot) is None and data_fingerprint(conn, pilot) == before
    report = artifacts_of(state.state_details.flow_run_id)[f"{pilot.replace('_', '-')}-baseline-parity"]
    assert f"| {kind} | {obj} |" in report


def test_reviewed_differences_in_the_allowlist_pass(prefect_api, conn, pilot, cutover_env):
    drift(conn, pilot, DRIFTS["hand-added column"][0])
    drift(conn, pilot, DRIFTS["changed default"][0])
    cutover_env.setenv("CUTOVER_PARITY_ALLOW", "column:public.beers.notes, column:public.breweries.city:default")

    state = cutover(**APPROVED, return_state=True)

    assert state.is_completed(), state.message
    assert db.alembic_revision(conn, pilot) == HEAD
    arts = artifacts_of(state.state_details.flow_run_id)
    key = pilot.replace("_", "-")
    assert "No differences: the pilot is exactly the baseline." in arts[f"{key}-baseline-parity"]
    assert "Accepted by CUTOVER_PARITY_ALLOW" in arts[f"{key}-baseline-parity"]
    assert "public.beers.notes" in arts[f"{key}-baseline-parity"]
    # The rest of the proof is in the evidence too.
    assert all(r["equal"] for r in json.loads(arts[f"{key}-data-parity"]))
    assert all(r["ok"] for r in json.loads(arts[f"{key}-scratch-amcheck"]))
    sql = arts[f"{key}-upgrade-sql"]
    assert "ALTER TABLE breweries ADD COLUMN slug" in sql and "Squawk findings" in sql
    assert "lock_timeout=10s" in sql
    assert "No differences." in arts[f"{key}-schema-parity"]


def test_a_session_holding_a_lock_stops_the_run_before_production(prefect_api, conn, pilot, cutover_env):
    before = data_fingerprint(conn, pilot)
    with db.connect(conn, pilot, autocommit=False) as holder, holder.cursor() as cur:
        cur.execute("SET application_name = 'report-job'")
        cur.execute("LOCK TABLE reviews IN ACCESS SHARE MODE")  # a long read: no writes, but it blocks ALTER TABLE

        state = cutover(**APPROVED, return_state=True)

        holder.rollback()
    assert state.is_failed() and "would block the upgrade" in state.message and "report-job" in state.message
    m = the_manifest()
    assert m.failure["step"] == "blocking-sessions" and not m.production_touched
    assert db.alembic_revision(conn, pilot) is None and data_fingerprint(conn, pilot) == before
    rows = json.loads(artifacts_of(state.state_details.flow_run_id)[f"{pilot.replace('_', '-')}-blocking-sessions"])
    assert rows[0]["application_name"] == "report-job" and "public.reviews" in str(rows[0]["locked_relations"])


def test_amcheck_that_cannot_run_is_a_warning_not_a_success(prefect_api, conn, pilot, cutover_env):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    # A pilot whose own function takes amcheck's name: CREATE EXTENSION amcheck fails on its restored copy,
    # as it does where the extension is not installed or the role may not create it.
    drift(conn, pilot, "CREATE FUNCTION public.bt_index_check(regclass, boolean) RETURNS void "
                       "LANGUAGE sql AS 'SELECT NULL::void'")

    state = cutover(**APPROVED, dry_run=True, return_state=True)

    assert state.is_completed(), state.message
    m = the_manifest()
    step = m.step("scratch-amcheck")
    assert step.status == "warning" and "no index checked: amcheck is unavailable" in step.error
    report = (Path(m.backup.path).parent / "report.md").read_text()
    assert "| scratch-amcheck | warning |" in report and "amcheck is unavailable" in report
    with get_client(sync_client=True) as client:
        progress = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[f"{pilot.replace('_', '-')}-progress"]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    (description,) = [a.description for a in progress]
    assert "WARNING scratch-amcheck: no index checked: amcheck is unavailable" in description


def _ddl_on_stop(env, conn, pilot, statement: str) -> None:
    """The backend's stop command (after the approval, before the stamp) also runs `statement` on the pilot:
    DDL by someone else while the form waited, seen by the run only through the schema."""
    import shlex
    import sys

    code = ("import sys, psycopg2; c = psycopg2.connect(host=sys.argv[1], port=sys.argv[2], user=sys.argv[3], "
            "dbname=sys.argv[4]); c.autocommit = True; c.cursor().execute(sys.argv[5])")
    env.setenv("CUTOVER_WRITE_FREEZE", "stop-service")
    env.setenv("CUTOVER_SERVICE_STOP", shlex.join([sys.executable, "-c", code, conn.host, str(conn.port), conn.user,
                                                    pilot, statement]))
    env.setenv("CUTOVER_SERVICE_START", "true")


def test_schema_changed_after_baseline_parity_stops_the_run_before_the_stamp(prefect_api, conn, pilot, cutover_env):
    _ddl_on_stop(cutover_env, conn, pilot, DRIFTS["hand-added column"][0])

    state = cutover(**APPROVED, return_state=True)

    assert state.is_failed()
    assert ("schema changed after baseline parity, before the stamp (1 changes, first: column public.beers.notes "
            "(object)), and no longer passes it") in state.message, state.message
    m = the_manifest()
    assert [s.status for s in m.steps if s.name == "baseline-parity"] == ["succeeded"]  # before the approval
    assert m.failure["step"] == "baseline-unchanged" and not m.production_touched
    assert db.alembic_revision(conn, pilot) is None
    arts = artifacts_of(state.state_details.flow_run_id)
    changed = arts[f"{pilot.replace('_', '-')}-baseline-unchanged"]
    assert "| column | public.beers.notes | (object) | absent |" in changed, changed


def test_a_schema_change_since_baseline_parity_that_still_passes_it_lets_the_stamp_go_ahead(prefect_api, conn, pilot,
                                                                                             cutover_env):
    _ddl_on_stop(cutover_env, conn, pilot, DRIFTS["hand-added column"][0])
    cutover_env.setenv("CUTOVER_PARITY_ALLOW", "column:public.beers.notes")  # reviewed: the proof holds again

    state = cutover(**APPROVED, return_state=True)

    assert state.is_completed(), state.message
    assert db.alembic_revision(conn, pilot) == HEAD
    [step] = [s for s in the_manifest().steps if s.name == "baseline-unchanged"]
    assert step.status == "succeeded"
    assert step.detail["summary"].startswith("1 schema changes since baseline parity, proven again: equal to the "
                                             "baseline"), step.detail
