"""Runbook section 1 checked, not assumed: writes really paused, and enough window left."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pg_cutover.flows.cutover import cutover
from pg_cutover.pg import db
from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.manifest import load_manifest
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



def _scratch_exists(conn, pilot: str) -> str | None:
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{pilot}_scratch%",))
        row = cur.fetchone()
    return row[0] if row else None


def _scratch_stamped(conn, pilot: str) -> bool:
    name = _scratch_exists(conn, pilot)
    if name is None:
        return False
    with db.connect(conn, name) as c, c.cursor() as cur:
        cur.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL")
        return bool(cur.fetchone()[0])


def _run_with_a_late_writer(conn, pilot: str, ready):
    """The cutover, while another thread commits one write on the pilot as soon as `ready(conn, pilot)`.

    Returns the run's state and manifest; the write happened and its row is there, untouched by the run.
    """
    done, stop = threading.Event(), threading.Event()

    def write_once() -> None:
        while not ready(conn, pilot):
            if stop.wait(0.02):
                return
        with db.connect(conn, pilot) as w, w.cursor() as cur:
            cur.execute("UPDATE breweries SET city = city || ' (late)' WHERE id = 1")
        done.set()  # the session is closed: its counters are flushed

    thread = threading.Thread(target=write_once, daemon=True)
    thread.start()
    state = cutover(**APPROVED, return_state=True)
    stop.set()
    thread.join()
    assert done.is_set(), f"the writer never saw {ready.__name__}"
    with db.connect(conn, pilot) as c, c.cursor() as cur:
        cur.execute("SELECT city FROM breweries WHERE id = 1")
        assert cur.fetchone()[0].endswith("(late)")
    return state, load_manifest(next(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("manifest.json")))


def test_a_write_during_the_sample_beside_the_backup_stops_the_run_untouched(prefect_api, conn, pilot, cutover_env):
    # The sample runs beside the backup: the write lands once the scratch copy exists. The sample ends
    # at the first change it sees, so a long one covers the write however slow the machine is.
    cutover_env.setenv("CUTOVER_WRITE_SAMPLE_SECONDS", "120")

    state, m = _run_with_a_late_writer(conn, pilot, _scratch_exists)

    assert state.is_failed()
    assert "Writes are not paused" in state.message and "rows changed" in state.message
    assert m.failure["step"] == "writes-sample" and not m.production_touched
    assert m.backup is not None and Path(m.backup.path).exists()  # taken beside the sample, and kept
    assert db.alembic_revision(conn, pilot) is None
    assert f"{pilot.replace('_', '-')}-writes-paused" in artifacts_of(state.state_details.flow_run_id)


def test_a_write_after_the_sample_stops_the_run_before_production(prefect_api, conn, pilot, cutover_env):
    # A zero-second sample passes at once; the write lands once the scratch copy is stamped, after
    # the backup, where a rollback would lose it: the gate before production must see it.
    cutover_env.setenv("CUTOVER_WRITE_SAMPLE_SECONDS", "0")

    state, m = _run_with_a_late_writer(conn, pilot, _scratch_stamped)

    assert state.is_failed()
    assert "Writes resumed" in state.message and "1 rows changed" in state.message, state.message
    assert m.failure["step"] == "writes-still-paused" and not m.production_touched
    assert m.step("writes-sample").status == "succeeded"
    assert db.alembic_revision(conn, pilot) is None


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
