"""Apps whose first revision alters tables that create_all made (issue 17): the baseline built from
nothing needs the app's first schema, laid down by CUTOVER_BASELINE_BOOTSTRAP."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from pg_cutover.checks import baseline
from pg_cutover.errors import ConfigError, PreflightError
from pg_cutover.flows.cutover import cutover
from pg_cutover.migrations.runner import AlembicRunner
from pg_cutover.pg import db
from pg_cutover.process import Runner
from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.manifest import load_manifest
from pg_cutover.settings import load_settings
from tests.apps import LATE_BASELINE, LATE_BOOTSTRAP, LATE_DIR, LATE_HEAD, build_late_pilot
from tests.conftest import operator_env
from tests.helpers import artifacts_of, data_fingerprint, databases_like


@pytest.fixture
def alembic(conn) -> AlembicRunner:
    return AlembicRunner(["alembic"], LATE_DIR, conn, Runner())


def test_without_the_setting_the_baseline_fails_in_one_sentence_naming_it(conn, alembic):
    name = f"late_base_{uuid.uuid4().hex[:8]}"
    with pytest.raises(PreflightError) as caught:
        baseline.build(conn, None, alembic, LATE_BASELINE, name)
    message = str(caught.value)
    assert "CUTOVER_BASELINE_BOOTSTRAP" in message and "'item'" in message and LATE_BASELINE in message
    assert "\n" not in message and message.count(". ") == 0
    assert databases_like(conn, name) == []


def test_a_failing_bootstrap_command_is_one_sentence_naming_the_setting(conn, alembic):
    name = f"late_base_{uuid.uuid4().hex[:8]}"
    with pytest.raises(PreflightError, match=r"^CUTOVER_BASELINE_BOOTSTRAP \(.*no_such_module.*\) failed"):
        baseline.build(conn, None, alembic, LATE_BASELINE, name, [os.sys.executable, "-m", "no_such_module"])
    assert databases_like(conn, name) == []


def test_a_malformed_bootstrap_setting_is_refused_before_anything_runs():
    with pytest.raises(ConfigError, match="^CUTOVER_BASELINE_BOOTSTRAP is invalid.*balanced quotes"):
        load_settings(POSTGRES_DB="x", CUTOVER_BASELINE_BOOTSTRAP="python -c 'unbalanced")


def test_with_the_bootstrap_the_cutover_succeeds_and_says_it_was_used(prefect_api, conn, pg_target, monkeypatch,
                                                                         tmp_path):
    name = f"late_{uuid.uuid4().hex[:10]}"
    build_late_pilot(conn, name, pg_target.env())
    try:
        operator_env(monkeypatch, pg_target, name, LATE_BASELINE, LATE_DIR, tmp_path / "backups")
        monkeypatch.setenv("CUTOVER_BASELINE_BOOTSTRAP", LATE_BOOTSTRAP)
        before = data_fingerprint(conn, name)

        state = cutover(approved_by="alice", checklist=Checklist.all_confirmed(), return_state=True)

        assert state.is_completed(), state.message
        assert db.alembic_revision(conn, name) == LATE_HEAD
        assert data_fingerprint(conn, name) == before  # 0002 adds an index only
        m = load_manifest(next(Path(tmp_path / "backups").rglob("manifest.json")))
        assert m.status == "succeeded"
        assert m.step("baseline-parity").detail["bootstrap"].endswith("-m late_app.bootstrap")
        text = artifacts_of(state.state_details.flow_run_id)[f"{name.replace('_', '-')}-baseline-parity"]
        assert "No differences" in text and "CUTOVER_BASELINE_BOOTSTRAP" in text and "initial schema created" in text
    finally:
        db.drop_databases_like(conn, name)
