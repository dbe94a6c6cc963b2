"""The cutover on an app shaped like real ones (issue 17), end to end with the Prefect test API.

The ledger's pilot was built by create_all; its varchar IN checks print differently once
pg_restore has rebuilt them, which made validation roll back a good upgrade. Its data
migration cannot be rendered as offline SQL.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from pg_cutover.flows.cutover import cutover
from pg_cutover.pg import db
from pg_cutover.pg.tools import PgClient, locate_bin_dir
from pg_cutover.process import Runner
from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.manifest import load_manifest
from tests.apps import LEDGER_BASELINE, LEDGER_DIR, LEDGER_HEAD, build_ledger_pilot
from tests.conftest import operator_env
from tests.helpers import artifacts_of, data_fingerprint, execute

APPROVED = dict(approved_by="alice (ticket OPS-17)", checklist=Checklist.all_confirmed())


@pytest.fixture
def ledger(conn, pg_target, monkeypatch, tmp_path):
    """A ledger pilot built by create_all, and the environment an operator would export for it."""
    name = f"ledger_{uuid.uuid4().hex[:10]}"
    build_ledger_pilot(conn, name)
    operator_env(monkeypatch, pg_target, name, LEDGER_BASELINE, LEDGER_DIR, tmp_path / "backups")
    yield name
    db.drop_databases_like(conn, name)


def lifecycle(conn, dbname) -> dict[str, int]:
    with db.connect(conn, dbname) as c, c.cursor() as cur:
        cur.execute("SELECT lifecycle_stage, count(*) FROM account GROUP BY 1")
        return dict(cur.fetchall())


def the_manifest():
    return load_manifest(next(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("manifest.json")))


def test_varchar_in_checks_upgraded_in_place_pass_validation(prefect_api, conn, ledger):
    before = data_fingerprint(conn, ledger)
    stages = lifecycle(conn, ledger)

    state = cutover(**APPROVED, return_state=True)

    assert state.is_completed(), state.message
    assert db.alembic_revision(conn, ledger) == LEDGER_HEAD
    after = data_fingerprint(conn, ledger)
    assert {t: n for t, (n, _) in after.items()} == {t: n for t, (n, _) in before.items()}
    # 0002's data migration archived half of the deleted accounts, and nothing else.
    archived = stages["deleted"] // 2
    assert lifecycle(conn, ledger) == {"active": stages["active"], "deleted": stages["deleted"] - archived,
                                       "archived": archived}
    m = the_manifest()
    assert m.status == "succeeded" and m.revision_after == LEDGER_HEAD
    # Production (built by DDL) and scratch (rebuilt by pg_restore) differed as read, and not in meaning.
    parity_text = artifacts_of(state.state_details.flow_run_id)[f"{ledger.replace('_', '-')}-schema-parity"]
    assert "No differences." in parity_text and "where 0 remain" in parity_text
    assert "ck_account_kind" in parity_text  # the differences as read are shown, not hidden
    assert "in meaning" in m.step("validate").detail["summary"]
    # The data migration cannot be rendered offline: under CUTOVER_LINT=warn that is a warning, not a success.
    sql_step = m.step("upgrade-sql")
    assert sql_step.status == "warning" and "could not be rendered offline" in sql_step.error


def test_a_dump_restored_pilot_equals_its_baseline_and_strict_lint_blocks_unreviewable_sql(
        prefect_api, conn, ledger, monkeypatch, tmp_path):
    # The pilot's history: moved once with pg_dump / pg_restore, as many legacy databases were.
    moved = f"{ledger}_moved"
    pg = PgClient(*locate_bin_dir(None, db.probe(conn, "postgres") // 10000, Runner()), conn, Runner())
    subprocess.run(pg.dump_argv(ledger, tmp_path / "moved.dump"), env=pg.env(), check=True, capture_output=True)
    execute(conn, "postgres", f'CREATE DATABASE "{moved}"')
    pg.restore(moved, tmp_path / "moved.dump")
    monkeypatch.setenv("POSTGRES_DB", moved)
    monkeypatch.setenv("CUTOVER_LINT", "strict")
    before = data_fingerprint(conn, moved)

    state = cutover(**APPROVED, return_state=True)

    assert state.is_failed()
    assert "CUTOVER_LINT=strict and the upgrade SQL could not be rendered offline" in state.message
    m = the_manifest()
    assert m.step("baseline-parity").status == "succeeded"
    assert "0 in meaning" in m.step("baseline-parity").detail["summary"]
    assert m.failure["step"] == "upgrade-sql" and not m.production_touched
    assert db.alembic_revision(conn, moved) is None and data_fingerprint(conn, moved) == before
