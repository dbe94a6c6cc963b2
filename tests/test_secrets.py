"""Secrets in no argv and no log: the parts test_cutover_flow / test_offsite_flow do not check.

A cutover that fails on production and is rolled back, with the off-site mirror on, runs every
kind of child process the tool has (pg_dump, pg_restore, createdb, dropdb, alembic, the service
controller). A sampler reads /proc/<pid>/cmdline of each child while they run. The password and
the S3 secret are known values (trust auth and moto ignore them) that must appear nowhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from pathlib import Path

import psutil

from pg_cutover.flows.cutover import cutover
from pg_cutover.pg import db
from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.manifest import load_manifest
from tests.conftest import S3_SECRET
from tests.helpers import artifacts_of, artifacts_with_key, data_fingerprint

PASSWORD = "pw-Argv-Kn0wn-S3cret"
SECRETS = (PASSWORD, S3_SECRET)


class ArgvSampler(threading.Thread):
    """Every distinct argv of this process's descendants, read from /proc while they run."""

    def __init__(self, interval: float = 0.002):
        super().__init__(daemon=True, name="argv-sampler")
        self.interval = interval
        self.argvs: set[tuple[str, ...]] = set()
        self.stopped = threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self.stopped.is_set():
            try:
                children = me.children(recursive=True)
            except psutil.Error:
                children = []
            for child in children:
                try:
                    raw = Path(f"/proc/{child.pid}/cmdline").read_bytes()
                except OSError:
                    continue  # gone already
                if raw:
                    self.argvs.add(tuple(a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")))
            time.sleep(self.interval)

    def __enter__(self) -> "ArgvSampler":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.join(10)

    def ran(self, program: str, *args: str) -> bool:
        return any(Path(argv[0]).name == program and all(a in argv for a in args) for argv in self.argvs)


def api_logs(flow_run_ids) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async def read():
        async with get_client() as client:
            return await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=list(flow_run_ids))))

    return [log.message for log in asyncio.run(read())]


def test_secrets_in_no_argv_no_log(prefect_api, conn, pilot, offsite_env, managed_api, caplog):
    offsite_env.setenv("POSTGRES_PASSWORD", PASSWORD)
    offsite_env.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    offsite_env.setenv("CUTOVER_WRITE_SAMPLE_SECONDS", "0.2")
    # Everything the tool and Prefect log, down to DEBUG, is captured and checked.
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="prefect")
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{pilot}" SET default_transaction_read_only = on')  # stamp fails
    before = data_fingerprint(conn, pilot)

    with ArgvSampler() as sampler:
        state = cutover(approved_by="alice", checklist=Checklist.all_confirmed(), return_state=True)

    assert state.is_failed()
    m = load_manifest(next(Path(offsite_env_backup_dir()).rglob("manifest.json")))
    assert m.rollback.status == "restored" and data_fingerprint(conn, pilot) == before
    # The sampler saw the children that matter, mid-run: otherwise this test proves nothing.
    assert sampler.ran("pg_dump", "--format=custom"), sorted(sampler.argvs)
    assert sampler.ran("pg_restore", "--exit-on-error")
    # Alembic runs in warm interpreters (`alembic_driver.py --serve`): its commands come on stdin, its
    # database settings in the environment; the interpreters' argv is sampled like every other child's.
    assert any("alembic_driver.py" in " ".join(argv) and "--serve" in argv for argv in sampler.argvs)
    leaked = [argv for argv in sampler.argvs for s in SECRETS if s in " ".join(argv)]
    assert leaked == []

    # Logs: captured in this process, and as stored by the Prefect API for both flow runs.
    assert caplog.records and any(r.levelno == logging.INFO for r in caplog.records)
    captured = "\n".join(caplog.text.splitlines()) + "\n".join(
        str(r.exc_info[1]) for r in caplog.records if r.exc_info)
    assert not [s for s in SECRETS if s in captured]
    logs = api_logs([state.state_details.flow_run_id, m.rollback.flow_run_id])
    assert any("alembic stamp failed" in line for line in logs)  # the API did store this run's logs
    assert not [line for line in logs for s in SECRETS if s in line]

    # Exception texts, the manifest, the incident, every artifact of both runs.
    evidence = [state.message or "", json.dumps(m.model_dump(mode="json")), m.failure["error"], m.failure["trace"]]
    evidence += [str(v) for v in artifacts_of(state.state_details.flow_run_id).values()]
    evidence += artifacts_with_key(f"{pilot.replace('_', '-')}-incident")
    evidence += [p.read_text() for p in Path(m.backup.path).parent.glob("*.*") if p.suffix in (".md", ".json", ".sql")]
    assert not [e for e in evidence for s in SECRETS if s in e]


def offsite_env_backup_dir() -> str:
    return os.environ["CUTOVER_BACKUP_DIR"]


def test_no_object_the_flow_holds_shows_a_secret_in_its_repr(tmp_path, monkeypatch, s3_endpoint):
    """A repr lands in tracebacks, Prefect's task-input logs and debuggers: it must never print a password."""
    from pg_cutover.launcher.embedded import EXAMPLE_APP_DIR, PostgresTarget
    from pg_cutover.migrations.session import AlembicSession
    from pg_cutover.runbook.manifest import Manifest, RunRecorder
    from pg_cutover.settings import load_settings
    from pg_cutover.storage.s3 import S3Store
    from pg_cutover.toolkit import Toolkit

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    settings = load_settings(POSTGRES_DB="pilot", POSTGRES_PASSWORD=PASSWORD, CUTOVER_ALEMBIC_DIR=str(EXAMPLE_APP_DIR),
                             CUTOVER_S3_BUCKET="bk-repr", CUTOVER_S3_ENDPOINT_URL=s3_endpoint,
                             CUTOVER_SERVICE_START="servicectl start")
    kit = Toolkit.from_settings(settings)
    store = S3Store.from_settings(settings)
    store.client  # a built boto3 client holds the S3 secret
    held = [settings, kit, kit.conn, kit.runner, kit.alembic, kit.service, kit.rollback_service,
            kit.pg_client(db.probe(kit.conn, "postgres") // 10000), store,
            RunRecorder(Manifest(run_id="r", database="pilot", host="h", port=1), tmp_path, settings.secrets),
            PostgresTarget("h", 1, "u", PASSWORD, embedded=False)]
    with AlembicSession(kit.alembic, "pilot") as session:  # its interpreter's environment holds the password
        for obj in [*held, session]:
            for text in (repr(obj), str(obj)):
                assert not any(secret in text for secret in SECRETS), type(obj).__name__
    assert kit.conn.password == PASSWORD and kit.conn.libpq_env()["PGPASSWORD"] == PASSWORD  # still usable
