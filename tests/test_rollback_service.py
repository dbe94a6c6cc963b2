"""The rollback's backend commands: its own (CUTOVER_ROLLBACK_SERVICE_*), else the cutover's, named in the evidence.

After a rollback production holds the old schema again; the cutover's new release may refuse it,
so the backend the rollback starts can be a different one.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import httpx
import pytest

from pg_cutover.errors import ConfigError
from pg_cutover.flows.cutover import cutover
from pg_cutover.pg import db
from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.manifest import load_manifest
from pg_cutover.settings import load_settings
from pg_cutover.toolkit import Toolkit
from tests.conftest import _ENV_NAMES
from tests.helpers import data_fingerprint

APPROVED = dict(approved_by="alice", checklist=Checklist.all_confirmed())


@pytest.fixture
def bare_env(monkeypatch):
    """Settings only, no database: these tests never connect anywhere."""
    for name in _ENV_NAMES + ["POSTGRES_PASSWORD"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POSTGRES_DB", "pilot")
    return monkeypatch


def test_rollback_commands_default_to_the_cutovers_and_an_explicit_one_wins(bare_env):
    bare_env.setenv("CUTOVER_SERVICE", "compose:api")
    bare_env.setenv("CUTOVER_SERVICE_START", "new-release start")
    settings = load_settings()
    assert settings.rollback_service_argv("start") == ["new-release", "start"]
    assert settings.rollback_service_argv("stop") == ["docker", "compose", "stop", "api"]
    assert "the cutover's, as CUTOVER_ROLLBACK_SERVICE_START is not set" in \
        Toolkit.from_settings(settings).rollback_service.describe("start")

    bare_env.setenv("CUTOVER_ROLLBACK_SERVICE_START", "old-release start --port 8000")
    kit = Toolkit.from_settings(load_settings())
    assert kit.rollback_service.start_argv == ["old-release", "start", "--port", "8000"]
    assert kit.service.start_argv == ["new-release", "start"]  # the cutover keeps its own
    assert kit.rollback_service.describe("start") == (
        "service start: `old-release start --port 8000` (from CUTOVER_ROLLBACK_SERVICE_START, the rollback's own)")


def test_no_command_is_said_and_secrets_are_redacted(bare_env):
    bare_env.setenv("POSTGRES_PASSWORD", "pw-Kn0wn-Value")
    bare_env.setenv("CUTOVER_ROLLBACK_SERVICE_START", "old-release start --token pw-Kn0wn-Value")
    kit = Toolkit.from_settings(load_settings())
    assert kit.rollback_service.describe("stop").startswith("no service command configured")
    assert kit.rollback_service.describe("start") == (
        "service start: `old-release start --token ***` (from CUTOVER_ROLLBACK_SERVICE_START, the rollback's own)")


def test_unbalanced_quotes_are_one_sentence_naming_the_setting(bare_env):
    bare_env.setenv("CUTOVER_ROLLBACK_SERVICE_START", "old-release 'start")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith("CUTOVER_ROLLBACK_SERVICE_START is invalid") and "balanced quotes" in message
    assert "\n" not in message


def test_rollback_starts_its_own_backend_not_the_cutovers(prefect_api, conn, pilot, cutover_env, managed_api,
                                                          halfway_alembic_dir, tmp_path):
    # The cutover's start is a new release that refuses the legacy schema; it leaves a marker if run.
    marker = tmp_path / "cutover-start-ran"
    refusing = (f"{sys.executable} -c 'import pathlib, sys; pathlib.Path(sys.argv[1]).touch(); "
                f"sys.exit(\"refuses the legacy schema\")' {marker}")
    rollback_start = os.environ["CUTOVER_SERVICE_START"]  # managed_api's servicectl: the old release
    cutover_env.setenv("CUTOVER_ROLLBACK_SERVICE_START", rollback_start)
    cutover_env.setenv("CUTOVER_SERVICE_START", refusing)
    cutover_env.setenv("CUTOVER_ALEMBIC_DIR", str(halfway_alembic_dir))  # fails on production, after touching it
    cutover_env.setenv("CUTOVER_WRITE_FREEZE", "stop-service")  # so its partial changes are provably its own
    pid_before = (tmp_path / "api.pid").read_text()
    before = data_fingerprint(conn, pilot)

    state = cutover(**APPROVED, return_state=True)

    assert state.is_failed()
    m = load_manifest(next(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("manifest.json")))
    assert m.failure["step"] == "production-upgrade" and m.rollback.status == "restored", m.rollback
    assert data_fingerprint(conn, pilot) == before and db.alembic_revision(conn, pilot) is None
    # The rollback stopped the old process (the cutover's stop, by default) and started a new one with its own start.
    assert not marker.exists()
    assert (tmp_path / "api.pid").read_text() != pid_before
    reply = httpx.get(managed_api + "/", timeout=10)
    assert reply.status_code == 200 and reply.json()["revision"] is None
    steps = {s.name: s for s in m.rollback.steps}
    command = shlex.join(shlex.split(rollback_start))
    assert steps["start-backend"].detail["summary"] == (
        f"service start: `{command}` (from CUTOVER_ROLLBACK_SERVICE_START, the rollback's own); "
        "2 health paths answered")
    assert "CUTOVER_SERVICE_STOP, the cutover's, as CUTOVER_ROLLBACK_SERVICE_STOP is not set" in \
        steps["stop-backend"].detail["summary"]
    incident = (Path(m.backup.path).parent / "incident.md").read_text()
    start_row = next(line for line in incident.splitlines() if line.startswith("| start-backend |"))
    assert command in start_row and "CUTOVER_ROLLBACK_SERVICE_START" in start_row and str(marker) not in incident
