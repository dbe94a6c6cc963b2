"""The cutover flow end to end: real PostgreSQL, real pg tools, real Alembic subprocesses,
the example API under uvicorn, and the Prefect test harness's API for the evidence."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from pg_cutover.digest import sha256_file
from pg_cutover.flows.cutover import cutover
from pg_cutover.launcher.embedded import EXAMPLE_APP_DIR
from pg_cutover.pg import db
from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.manifest import load_manifest
from tests.conftest import BASELINE, HEAD
from tests.helpers import artifacts_of, data_fingerprint, databases_like

SECRET = "pw-Kn0wn-S3cret"
APPROVED = dict(approved_by="alice (ticket OPS-1)", checklist=Checklist.all_confirmed())


def run(**params):
    state = cutover(**{**APPROVED, **params}, return_state=True)
    return state, state.state_details.flow_run_id


def brewery_rows_without_slug(conn, dbname):
    with db.connect(conn, dbname) as c, c.cursor() as cur:
        cur.execute("SELECT id, name, city, founded_year, is_active, created_at FROM breweries ORDER BY id")
        return cur.fetchall()


def test_happy_path_legacy_pilot_reaches_head_with_every_row(prefect_api, conn, pilot, api, cutover_env):
    from beer_app.slug import expected_slugs

    cutover_env.setenv("CUTOVER_HEALTH_URL", api)
    # Trust auth ignores it, so it can be a known value that must appear in no evidence.
    cutover_env.setenv("POSTGRES_PASSWORD", SECRET)
    before = data_fingerprint(conn, pilot)
    breweries_before = brewery_rows_without_slug(conn, pilot)
    assert db.alembic_revision(conn, pilot) is None

    state, run_id = run()

    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["status"] == "succeeded"
    # The revision, from the database itself.
    assert db.alembic_revision(conn, pilot) == HEAD
    # Every row still there; tables the migrations do not transform are byte-for-byte equal.
    after = data_fingerprint(conn, pilot)
    assert {t: n for t, (n, _) in after.items()} == {t: n for t, (n, _) in before.items()}
    assert after["public.beers"] == before["public.beers"]
    assert after["public.reviews"] == before["public.reviews"]
    # breweries: every original column unchanged, slug backfilled as 0002 says.
    assert brewery_rows_without_slug(conn, pilot) == breweries_before
    with db.connect(conn, pilot) as c, c.cursor() as cur:
        cur.execute("SELECT id, slug FROM breweries ORDER BY id")
        slugs = dict(cur.fetchall())
    assert slugs == expected_slugs([(r[0], r[1]) for r in breweries_before])
    assert len(set(slugs.values())) == len(slugs)

    # The backup and its evidence on disk, private.
    manifest = load_manifest(Path(summary["manifest"]))
    assert manifest.status == "succeeded" and manifest.production_touched
    assert manifest.revision_before is None and manifest.revision_after == HEAD
    backup = Path(manifest.backup.path)
    assert backup.stat().st_size == manifest.backup.size_bytes > 0
    assert sha256_file(backup) == manifest.backup.sha256
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(backup.parent.stat().st_mode) == 0o700
    assert manifest.row_counts == {t: n for t, (n, _) in before.items()}
    assert [s.name for s in manifest.steps] == [
        "baseline-parity", "upgrade-sql", "approval", "writes-paused", "row-counts", "backup-full", "backup-schema",
        "backup-verify", "scratch-restore", "writes-sample", "data-parity", "scratch-amcheck", "scratch-migrate",
        "window-check", "writes-still-paused", "baseline-unchanged", "blocking-sessions", "production-stamp", "production-upgrade", "production-current", "validate", "scratch-drop",
    ]
    assert all(s.status == "succeeded" for s in manifest.steps)
    assert "CREATE TABLE public.breweries" in Path(manifest.backup.schema_path).read_text()
    # The scratch copy is gone (runbook 7).
    assert databases_like(conn, f"{pilot}_scratch") == []

    # The evidence, read back from the Prefect API.
    arts = artifacts_of(run_id)
    key = pilot.replace("_", "-")
    listing = json.loads(arts[f"{key}-backup"])
    assert listing[0]["sha256"] == manifest.backup.sha256 and listing[0]["bytes"] == manifest.backup.size_bytes
    scratch = arts[f"{key}-scratch-alembic"]
    assert f"stamp {BASELINE}" in scratch and "upgrade" in scratch and f"{HEAD} (head)" in scratch
    assert f"{HEAD} (head)" in arts[f"{key}-production-current"]
    health = json.loads(arts[f"{key}-api-health"])
    assert [(h["url"], h["status"]) for h in health] == [(api + "/", 200), (api + "/docs", 200)]
    assert HEAD in health[0]["response"]
    assert "breweries" in arts[f"{key}-db-objects"] and "missing in production: none" in arts[f"{key}-db-objects"]
    report = arts[f"{key}-cutover-report"]
    assert report == (backup.parent / "report.md").read_text()
    assert "| production-upgrade | succeeded |" in report and manifest.backup.sha256 in report
    assert "alice (ticket OPS-1)" in arts[f"{key}-checklist"] and "Approved." in arts[f"{key}-checklist"]
    assert float(arts[f"{key}-progress"]) == 100.0
    # The password reached the tools through the environment only.
    evidence = [str(v) for v in arts.values()] + [p.read_text() for p in backup.parent.glob("*.*") if p.suffix != ".dump"]
    assert not [e for e in evidence if SECRET in e]


def test_failing_revision_is_caught_on_scratch_and_production_is_untouched(
    prefect_api, conn, pilot, cutover_env, broken_alembic_dir
):
    cutover_env.setenv("CUTOVER_ALEMBIC_DIR", str(broken_alembic_dir))
    before = data_fingerprint(conn, pilot)

    state, run_id = run()

    assert state.is_failed()
    assert db.alembic_revision(conn, pilot) is None
    assert data_fingerprint(conn, pilot) == before
    with db.connect(conn, pilot) as c, c.cursor() as cur:
        cur.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 'beers' AND column_name = 'tasting_notes'")
        assert cur.fetchone()[0] == 0
    manifest_path = next(Path(cutover_env_backup_dir()).rglob("manifest.json"))
    manifest = load_manifest(manifest_path)
    assert manifest.status == "failed" and not manifest.production_touched
    assert manifest.failure["step"] == "scratch-migrate"
    assert "division by zero" in manifest.failure["error"]
    assert "production-stamp" not in [s.name for s in manifest.steps]
    # The failed scratch copy is kept for inspection.
    assert databases_like(conn, f"{pilot}_scratch") == [manifest.scratch_db]
    arts = artifacts_of(run_id)
    key = pilot.replace("_", "-")
    assert "division by zero" in arts[f"{key}-scratch-alembic"]
    assert "Production was not touched" in arts[f"{key}-cutover-report"]


def cutover_env_backup_dir() -> str:
    return os.environ["CUTOVER_BACKUP_DIR"]


def test_rerun_at_head_changes_nothing(prefect_api, conn, pilot, cutover_env):
    from pg_cutover.migrations.runner import AlembicRunner
    from pg_cutover.process import Runner

    alembic = AlembicRunner(["alembic"], EXAMPLE_APP_DIR, conn, Runner())
    alembic.stamp(pilot, BASELINE)
    alembic.upgrade(pilot, "head")
    before = data_fingerprint(conn, pilot)

    state, run_id = run()

    assert state.is_completed(), state.message
    assert state.result()["status"] == "noop"
    assert db.alembic_revision(conn, pilot) == HEAD
    assert data_fingerprint(conn, pilot) == before
    manifest = load_manifest(next(Path(cutover_env_backup_dir()).rglob("manifest.json")))
    assert manifest.backup is None and not manifest.production_touched
    assert [s.name for s in manifest.steps] == ["validate-unchanged"]
    assert databases_like(conn, f"{pilot}_scratch") == []
    assert f"{HEAD} (head)" in artifacts_of(run_id)[f"{pilot.replace('_', '-')}-production-current"]


def test_dry_run_stops_after_scratch(prefect_api, conn, pilot, cutover_env):
    before = data_fingerprint(conn, pilot)

    state, _ = run(dry_run=True, approved_by=None, checklist=Checklist())

    assert state.is_completed(), state.message
    assert state.result()["status"] == "dry-run"
    assert db.alembic_revision(conn, pilot) is None
    assert data_fingerprint(conn, pilot) == before
    assert databases_like(conn, f"{pilot}_scratch") == []
