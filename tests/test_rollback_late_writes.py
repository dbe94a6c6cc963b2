"""A rollback never silently discards rows written after the cutover let go of production (issue 18).

A cutover succeeds; the app then writes (inserts, updates that keep the row count, or deletes);
a rollback asked for later restores nothing, names each table and kind of change, and says how to
go on. With the override it restores, lists what it discarded, and the database renamed aside
still holds it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pg_cutover.errors import ConfigError
from pg_cutover.flows.cutover import cutover
from pg_cutover.flows.rollback import rollback
from pg_cutover.launcher.cli import main as cli_main
from pg_cutover.pg import db
from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.manifest import load_manifest
from tests.conftest import HEAD
from tests.helpers import data_fingerprint, execute, rollback_runs_of

APPROVED = dict(approved_by="alice (OPS-18)", checklist=Checklist.all_confirmed())

LATE = {
    "inserts": ("INSERT INTO breweries (name, city, slug) SELECT 'late ' || i, 'Ghent', 'late-' || i "
                "FROM generate_series(1, 50) AS i", "public.breweries: 50 rows added."),
    "updates": ("UPDATE beers SET name = name || ' (late)' WHERE id <= 7", "public.beers: 7 rows updated."),
    "deletes": ("DELETE FROM reviews WHERE id <= 5", "public.reviews: 5 rows deleted."),
}


def succeeded_cutover(conn, pilot) -> Path:
    state = cutover(**APPROVED, return_state=True)
    assert state.is_completed(), state.message
    assert db.alembic_revision(conn, pilot) == HEAD
    return Path(state.result()["run_dir"])


@pytest.mark.parametrize("kind", list(LATE))
def test_late_writes_after_a_succeeded_cutover_are_never_discarded_silently(prefect_api, conn, pilot, cutover_env,
                                                                            kind, capsys):
    before_cutover = data_fingerprint(conn, pilot)
    run_dir = succeeded_cutover(conn, pilot)
    statement, sentence = LATE[kind]
    execute(conn, pilot, statement)  # the app, after the window
    written = data_fingerprint(conn, pilot)

    # By hand, as an operator would the next morning: refused, exit status 1, one sentence per table.
    assert cli_main(["rollback", "--manifest", str(run_dir)]) == 1
    said = capsys.readouterr().err
    assert sentence in said and "--discard-changes-since-cutover" in said and "Nothing was restored" in said
    assert data_fingerprint(conn, pilot) == written and db.alembic_revision(conn, pilot) == HEAD
    m = load_manifest(run_dir / "manifest.json")
    assert m.rollback.status == "refused" and m.rollback.changes_since == [sentence]
    incident = (run_dir / "incident.md").read_text()
    assert "REFUSED" in incident and sentence in incident and "Production still holds them." in incident
    if kind != "deletes":
        return

    # The operator decides to go back anyway: restored, and what was discarded is listed and kept aside.
    result = rollback(manifest=str(run_dir), discard_changes_since_cutover=True)
    assert result["status"] == "restored"
    assert data_fingerprint(conn, pilot) == before_cutover and db.alembic_revision(conn, pilot) is None
    m = load_manifest(run_dir / "manifest.json")
    failed = m.rollback.failed_database
    assert m.rollback.discarded_changes and m.rollback.changes_since == [sentence]
    assert {t: v for t, v in data_fingerprint(conn, failed).items() if t != "public.alembic_version"} == \
        {t: v for t, v in written.items() if t != "public.alembic_version"}
    incident = (run_dir / "incident.md").read_text()
    assert "DISCARDED" in incident and sentence in incident and f"They are kept in `{failed}`." in incident
    # The restored production's own state is recorded in turn.
    assert m.rollback.production_state is not None and m.rollback.production_state.database == pilot


def test_a_rollback_with_no_change_since_restores_and_says_so(prefect_api, conn, pilot, cutover_env):
    before = data_fingerprint(conn, pilot)
    run_dir = succeeded_cutover(conn, pilot)

    result = rollback(manifest=str(run_dir))

    assert result["status"] == "restored" and data_fingerprint(conn, pilot) == before
    m = load_manifest(run_dir / "manifest.json")
    step = next(s for s in m.rollback.steps if s.name == "changes-since-cutover")
    assert step.status == "succeeded" and "no row of production changed" in step.detail["summary"]
    assert m.production_state.moment.startswith("after its upgrade")


def test_discarding_is_refused_for_a_cutover_that_never_touched_production(prefect_api, conn, pilot, cutover_env):
    state = cutover(**APPROVED, dry_run=True, return_state=True)
    run_dir = Path(state.result()["run_dir"])
    before = data_fingerprint(conn, pilot)

    with pytest.raises(ConfigError, match=r"^--discard-changes-since-cutover .* never did"):
        rollback(manifest=str(run_dir), discard_changes_since_cutover=True)
    cutover_env.setenv("POSTGRES_DB", "some_other_db")
    with pytest.raises(ConfigError, match=r"is a cutover of .* but POSTGRES_DB is 'some_other_db'"):
        rollback(manifest=str(run_dir))
    assert data_fingerprint(conn, pilot) == before


# The backend's start command writes a row as it comes up (as an app's startup job might); its health
# check then fails, so the cutover fails after production was touched and its hook rolls back at once.
STARTS_AND_WRITES = """
import os, psycopg2
c = psycopg2.connect(host=os.environ["POSTGRES_HOST"], port=os.environ["POSTGRES_PORT"],
                     user=os.environ["POSTGRES_USER"], dbname=os.environ["POSTGRES_DB"])
c.autocommit = True
c.cursor().execute("INSERT INTO breweries (name, slug) VALUES ('written at start-up', 'written-at-start-up')")
"""


def test_an_automatic_rollback_restores_nothing_after_the_backend_came_back_and_wrote(prefect_api, conn, pilot,
                                                                                      cutover_env, tmp_path):
    script = tmp_path / "start_backend.py"
    script.write_text(STARTS_AND_WRITES)
    cutover_env.setenv("CUTOVER_WRITE_FREEZE", "stop-service")
    cutover_env.setenv("CUTOVER_SERVICE_STOP", "true")
    cutover_env.setenv("CUTOVER_SERVICE_START", f"{sys.executable} {script}")
    cutover_env.setenv("CUTOVER_HEALTH_URL", "http://127.0.0.1:9")  # nothing answers: validation fails
    cutover_env.setenv("CUTOVER_HEALTH_TIMEOUT", "2")

    state = cutover(**APPROVED, return_state=True)

    assert state.is_failed()
    m = load_manifest(next(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("manifest.json")))
    assert m.failure["step"] == "validate" and m.production_touched
    # The row the backend wrote is still in production, at the upgraded revision: nothing was restored.
    assert m.rollback.status == "refused"
    assert db.alembic_revision(conn, pilot) == HEAD
    with db.connect(conn, pilot) as c, c.cursor() as cur:
        cur.execute("SELECT count(*) FROM breweries WHERE name = 'written at start-up'")
        assert cur.fetchone()[0] == 1
    incident = (Path(m.backup.path).parent / "incident.md").read_text()
    assert "REFUSED" in incident and "public.breweries: 1 rows added." in incident
    # Its rollback run ends Failed, so an automation on failures can page someone.
    (run,) = rollback_runs_of(state.state_details.flow_run_id)
    assert run.state.is_failed() and "changed since the cutover let go of it" in run.state.message



def test_a_failed_upgrades_own_changes_that_cannot_be_told_from_the_apps_are_not_restored_over(
        prefect_api, conn, pilot, cutover_env, halfway_alembic_dir):
    # 0004_half commits part of its work on production, then fails; writes were checked paused, not stopped
    # by the cutover: nobody can prove the application did not write to those tables meanwhile.
    cutover_env.setenv("CUTOVER_ALEMBIC_DIR", str(halfway_alembic_dir))

    state = cutover(**APPROVED, return_state=True)

    assert state.is_failed()
    m = load_manifest(next(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("manifest.json")))
    assert m.failure["step"] == "production-upgrade" and m.rollback.status == "refused"
    assert "cannot be told apart from the application's writes" in m.rollback.error
    assert any(line.startswith("public.beers: ") for line in m.rollback.changes_since)
    # Production is as the failed upgrade left it, under its own name: nothing restored, nothing renamed.
    with db.connect(conn, pilot) as c, c.cursor() as cur:
        cur.execute("SELECT count(*) FROM beers WHERE tasting_notes = 'pending'")
        assert cur.fetchone()[0] > 0
    assert m.rollback.failed_database is None
    incident = (Path(m.backup.path).parent / "incident.md").read_text()
    assert "REFUSED" in incident and "--discard-changes-since-cutover" in incident
