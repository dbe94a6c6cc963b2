"""Runbook section 1 checked, not assumed: writes really paused, and enough window left."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cutover import db
from cutover.manifest import load_manifest
from flows.cutover import cutover
from tasks.checklist import Checklist
from tests.helpers import artifacts_of, data_fingerprint, databases_like

APPROVED = dict(approved_by="alice", checklist=Checklist.all_confirmed())


def test_an_open_write_transaction_stops_the_run_before_the_backup(prefect_api, conn, pilot, cutover_env):
    before = data_fingerprint(conn, pilot)
    with db.connect(conn, pilot, autocommit=False) as writer, writer.cursor() as cur:
        cur.execute("SET application_name = 'night-batch'")
        cur.execute("UPDATE breweries SET city = city WHERE id = 1")  # holds a transaction id, uncommitted

        state = cutover(**APPROVED, return_state=True)

        writer.rollback()
    assert state.is_failed()
    assert "Writes are not paused" in state.message and "night-batch" in state.message
    m = load_manifest(next(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("manifest.json")))
    assert m.failure["step"] == "writes-paused" and not m.production_touched and m.backup is None
    assert data_fingerprint(conn, pilot) == before and db.alembic_revision(conn, pilot) is None
    rows = json.loads(artifacts_of(state.state_details.flow_run_id)[f"{pilot.replace('_', '-')}-writes-paused"])
    assert [r["application"] for r in rows] == ["night-batch"]


def test_a_run_starting_after_its_window_is_deferred_untouched(prefect_api, conn, pilot, cutover_env):
    cutover_env.setenv("CUTOVER_WINDOW_END", (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat())
    before = data_fingerprint(conn, pilot)

    state = cutover(**APPROVED, return_state=True)

    assert state.is_cancelled() and state.name == "Deferred"
    assert "after the window closed" in state.message
    assert data_fingerprint(conn, pilot) == before and db.alembic_revision(conn, pilot) is None
    assert not list(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("*.dump"))


def test_too_little_window_left_defers_before_production(prefect_api, conn, pilot, cutover_env):
    # Ends in 40 s: enough for backup and scratch, not for the upgrade plus a full rollback (>= 45 s).
    cutover_env.setenv("CUTOVER_WINDOW_END", (datetime.now(timezone.utc) + timedelta(seconds=40)).isoformat())
    before = data_fingerprint(conn, pilot)

    state = cutover(**APPROVED, return_state=True)

    assert state.is_cancelled() and state.name == "Deferred", state.message
    assert "needed for the upgrade and a full rollback" in state.message
    assert data_fingerprint(conn, pilot) == before and db.alembic_revision(conn, pilot) is None
    m = load_manifest(next(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("manifest.json")))
    assert m.status == "deferred" and not m.production_touched and m.backup is not None
    check = m.step("window-check").detail
    assert check["needed_seconds"] > check["seconds_left"] and check["upgrade_estimate"] > 0
    assert databases_like(conn, f"{pilot}_scratch") == []
    rows = json.loads(artifacts_of(state.state_details.flow_run_id)[f"{pilot.replace('_', '-')}-window-production"])
    assert rows[0]["ok"] is False
