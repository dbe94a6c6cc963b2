"""A production upgrade that loses a race for a lock is tried again when it changed nothing (issue 18).

Revision 0004 of a copy of the example app alters `beers` (which 0002 and 0003, in the same upgrade
transaction, leave alone). A session of the app holds a lock on `beers`; every migration session runs with a 1 s lock_timeout. Timing is driven by events, not
sleeps: the revision first waits (with no lock_timeout) on an advisory lock the test holds, so the
test takes its table lock only once the migration is past the blocking-sessions gate and about to
alter the table.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import psycopg2
import pytest

from pg_cutover.flows.cutover import cutover
from pg_cutover.launcher.embedded import EXAMPLE_APP_DIR
from pg_cutover.pg import db
from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.manifest import load_manifest
from tests.conftest import HEAD, wait_for
from tests.helpers import artifacts_of, data_fingerprint

GATE = 4242
LOCKED_REVISION = f'''"""Waits at the test's gate, then alters a table an app session may hold a lock on."""
from alembic import op
import sqlalchemy as sa

revision = "0004_tasting_notes"
down_revision = "{HEAD}"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("SET LOCAL lock_timeout = 0")
    op.execute("SELECT pg_advisory_xact_lock_shared({GATE})")
    op.execute("RESET lock_timeout")
    op.add_column("beers", sa.Column("tasting_notes", sa.Text(), nullable=True))


def downgrade():
    op.drop_column("beers", "tasting_notes")
'''


@pytest.fixture
def locked_app(tmp_path, cutover_env) -> Path:
    target = tmp_path / "locked_app"
    shutil.copytree(EXAMPLE_APP_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "alembic" / "versions" / "0004_tasting_notes.py").write_text(LOCKED_REVISION)
    cutover_env.setenv("CUTOVER_ALEMBIC_DIR", str(target))
    cutover_env.setenv("CUTOVER_LOCK_TIMEOUT", "1s")
    cutover_env.setenv("CUTOVER_LOCK_RETRY_WAIT_SECONDS", "1")
    return target


def session(conn, dbname: str, app: str):
    c = psycopg2.connect(host=conn.host, port=conn.port, user=conn.user, password=conn.password or None,
                         dbname=dbname, application_name=app)
    c.autocommit = True
    return c


def waiting_on(conn, dbname: str, locktype: str, what: str) -> int:
    """Sessions on dbname waiting for an advisory lock (what = key) or a relation lock (what = table)."""
    with db.connect(conn, dbname) as c, c.cursor() as cur:
        if locktype == "advisory":
            cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND NOT granted "
                        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                        (int(what),))
        else:
            cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND relation = %s::regclass "
                        "AND NOT granted AND database = (SELECT oid FROM pg_database "
                        "WHERE datname = current_database())", (what,))
        return cur.fetchone()[0]


def run_with_app_lock(conn, pilot, *, release_after_first_timeout: bool):
    """The cutover, while the gate session and the app's session act on what they see in pg_locks."""
    gate, app = session(conn, pilot, "test-gate"), session(conn, pilot, "billing-app")
    gate.cursor().execute("SELECT pg_advisory_lock(%s)", (GATE,))
    outcome = {}

    def drive():
        try:
            wait_for("the migration at the gate", lambda: waiting_on(conn, pilot, "advisory", str(GATE)), 120, 0.05)
            app.cursor().execute("BEGIN; LOCK TABLE beers IN ACCESS SHARE MODE")  # the app's long report
            gate.cursor().execute("SELECT pg_advisory_unlock(%s)", (GATE,))
            wait_for("the ALTER waiting for the app's lock", lambda: waiting_on(conn, pilot, "relation", "beers"), 60,
                     0.02)
            wait_for("the first attempt's lock timeout", lambda: not waiting_on(conn, pilot, "relation", "beers"), 60,
                     0.02)
            if release_after_first_timeout:
                # Released once the next attempt waits for it: the first attempt's evidence is read by then.
                wait_for("the next attempt", lambda: waiting_on(conn, pilot, "relation", "beers"), 60, 0.02)
                app.cursor().execute("COMMIT")
            outcome["driven"] = True
        finally:
            gate.cursor().execute("SELECT pg_advisory_unlock_all()")  # never leave the migration at the gate

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    try:
        state = cutover(approved_by="alice", checklist=Checklist.all_confirmed(), return_state=True)
    finally:
        driver.join(120)
        app.close()
        gate.close()
    assert outcome.get("driven"), "the test's sessions never saw the migration wait"
    return state


def attempts_of(state, pilot) -> list[dict]:
    return json.loads(artifacts_of(state.state_details.flow_run_id)[f"{pilot.replace('_', '-')}-production-upgrade-attempts"])


def test_a_lock_released_after_the_first_timeout_lets_a_later_attempt_succeed(prefect_api, conn, pilot, locked_app):
    state = run_with_app_lock(conn, pilot, release_after_first_timeout=True)

    assert state.is_completed(), state.message
    assert db.alembic_revision(conn, pilot) == "0004_tasting_notes"
    attempts = attempts_of(state, pilot)
    assert attempts[0]["outcome"].startswith("lock timeout, nothing changed; trying again in 1 s")
    assert "billing-app" in attempts[0]["holders"] and "public.beers AccessShareLock" in attempts[0]["holders"]
    assert attempts[-1]["outcome"] == "succeeded" and len(attempts) >= 2
    m = load_manifest(Path(state.result()["manifest"]))
    assert m.step("production-upgrade").detail["attempts"][-1]["outcome"] == "succeeded"


def test_a_lock_never_released_fails_after_the_retries_and_the_rollback_restores(prefect_api, conn, pilot, locked_app,
                                                                                 cutover_env):
    cutover_env.setenv("CUTOVER_LOCK_RETRIES", "2")
    before = data_fingerprint(conn, pilot)

    state = run_with_app_lock(conn, pilot, release_after_first_timeout=False)

    assert state.is_failed()
    m = load_manifest(next(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("manifest.json")))
    attempts = m.step("production-upgrade").detail["attempts"]
    assert [a["outcome"].split(";")[0] for a in attempts] == ["lock timeout, nothing changed"] * 2 + \
        ["lock timeout"]
    assert m.rollback.status == "restored"
    assert data_fingerprint(conn, pilot) == before and db.alembic_revision(conn, pilot) is None

