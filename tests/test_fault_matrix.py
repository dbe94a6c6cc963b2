"""The fault matrix: a real fault in a real component, then the end state an operator cares about.

Every case ends with production's data equal to before, row for row (per-table checksums of
every row), at its original revision (none: the pilot is legacy), production never dropped,
the backend answering unless a failed rollback says loudly that it stopped it, and an
artifact in the Prefect API saying what happened. `docs/RELIABILITY.md` is this file as a table.

Faults are made real, not simulated: pg_restore is SIGKILLed while it works (a CUTOVER_PG_BIN
wrapper that runs the real one), the S3 server's connection is cut mid-upload (a TCP proxy in
front of moto), the backup directory is a full tmpfs, the backup file is truncated on disk.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import boto3
import httpx
import pytest

from pg_cutover.flows.cutover import cutover
from pg_cutover.flows.rollback import rollback
from pg_cutover.pg import db
from pg_cutover.pg.tools import TOOLS, locate_bin_dir
from pg_cutover.process import Runner
from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.manifest import Manifest, load_manifest
from tests.helpers import artifacts_with_key, data_fingerprint, databases_like, rollback_runs_of

APPROVED = dict(approved_by="alice (fault matrix)", checklist=Checklist.all_confirmed())

# The real pg_restore, SIGKILLed (its whole process group) once it is connected to a target
# database whose name matches FAULT_KILL_PG_RESTORE; then the wrapper kills itself, so the tool
# sees exactly what it would see if the OOM killer took pg_restore.
KILLING_PG_RESTORE = '''#!{python}
import os, re, signal, subprocess, sys, time
import psycopg2

REAL = {real!r}
args = sys.argv[1:]
target = args[args.index("--dbname") + 1] if "--dbname" in args else ""
pattern = os.environ.get("FAULT_KILL_PG_RESTORE", "")
if not pattern or "--list" in args or not re.fullmatch(pattern, target):
    os.execv(REAL, [REAL, *args])
child = subprocess.Popen([REAL, *args], start_new_session=True)
watch = psycopg2.connect(dbname="postgres", application_name="fault-injector")
watch.autocommit = True
cur = watch.cursor()
outcome = "pg_restore exited before it could be killed"
while child.poll() is None:
    cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name <> 'fault-injector'",
                (target,))
    if cur.fetchone()[0]:
        os.killpg(child.pid, signal.SIGKILL)
        outcome = "pg_restore killed while restoring"
        break
    time.sleep(0.002)
with open(os.environ["FAULT_LOG"], "a") as log:
    log.write(f"{{target}}: {{outcome}}\\n")
os.kill(os.getpid(), signal.SIGKILL)
'''


@dataclass
class World:
    """What a case arranges and acts on: the pilot, its environment, and where faults report."""

    conn: db.ConnInfo
    pilot: str
    env: pytest.MonkeyPatch
    tmp: Path
    api: str
    s3_endpoint: str
    bucket: str
    fault_log: Path
    before: dict = field(default_factory=dict)
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    proof: dict = field(default_factory=dict)  # what the fault itself reports, checked by the case


@dataclass
class Outcome:
    cutover_state: object
    manifest: Manifest
    rollback_state: object | None = None  # a rollback run by hand, when the case runs one


@dataclass(frozen=True)
class Fault:
    id: str
    step: str  # the step the fault strikes (cutover or rollback)
    injected: str  # how it is made real
    arrange: Callable[[World], None]
    act: Callable[[World], Outcome]
    expect: str  # "untouched" | "restored" | "rollback-failed"
    proof: Callable[[World, Outcome], None]


# -- ways to inject -------------------------------------------------------------------------


def killing_pg_bin(world: World, pattern: str) -> None:
    """CUTOVER_PG_BIN: the real tools, pg_restore wrapped to be killed when restoring into `pattern`."""
    real, _ = locate_bin_dir(None, db.probe(world.conn, "postgres") // 10000, Runner())
    bin_dir = world.tmp / "pg-bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        if tool != "pg_restore":
            (bin_dir / tool).symlink_to(real / tool)
    wrapper = bin_dir / "pg_restore"
    wrapper.write_text(KILLING_PG_RESTORE.format(python=sys.executable, real=str(real / "pg_restore")))
    wrapper.chmod(0o755)
    world.env.setenv("CUTOVER_PG_BIN", str(bin_dir))
    world.env.setenv("FAULT_KILL_PG_RESTORE", pattern)


class CuttingProxy:
    """A TCP proxy in front of the S3 server that cuts a connection once its client sent `limit` bytes.

    Small requests (bucket checks) pass; an upload bigger than the limit never arrives whole.
    """

    def __init__(self, upstream: str, limit: int):
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname, parsed.port)
        self.limit = limit
        self.cut = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.upstream)
        threading.Thread(target=self._pipe_back, args=(upstream, client), daemon=True).start()
        sent = 0
        try:
            while chunk := client.recv(65536):
                if sent + len(chunk) > self.limit:
                    upstream.sendall(chunk[: self.limit - sent])
                    self.cut += 1
                    # RST, not FIN: the client learns at once that the connection is gone.
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    break
                upstream.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                try:
                    s.close()
                except OSError:
                    pass

    @staticmethod
    def _pipe_back(upstream: socket.socket, client: socket.socket) -> None:
        try:
            while chunk := upstream.recv(65536):
                client.sendall(chunk)
        except OSError:
            pass

    def close(self) -> None:
        self.server.close()


@contextmanager
def full_tmpfs(mountpoint: Path, free_bytes: int):
    """A 2 MiB tmpfs filled until `free_bytes` are left: the backup directory's disk is full."""
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({mounted.stderr.strip()}); run as root for this case")
    try:
        with open(mountpoint / "filler", "wb") as filler:
            while True:
                st = os.statvfs(mountpoint)
                left = st.f_bavail * st.f_frsize - free_bytes
                if left <= 0:
                    break
                filler.write(b"\0" * min(left, 256 * 1024))
                filler.flush()
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def read_only_production(world: World) -> None:
    """Production refuses writes; the scratch copy does not: `alembic stamp` fails on production."""
    db_execute(world.conn, "postgres", f'ALTER DATABASE "{world.pilot}" SET default_transaction_read_only = on')


def db_execute(conn, dbname: str, statement: str) -> None:
    with db.connect(conn, dbname) as c, c.cursor() as cur:
        cur.execute(statement)


def truncate_backup(m: Manifest) -> None:
    path = Path(m.backup.path)
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


def the_manifest() -> Manifest:
    return load_manifest(next(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("manifest.json")))


# -- the acts -------------------------------------------------------------------------------


def run_cutover(world: World, **params) -> Outcome:
    state = cutover(**{**APPROVED, **params}, return_state=True)
    return Outcome(state, the_manifest())


def fail_on_production(world: World):
    """The cutover fails at `alembic stamp` on production, its automatic rollback off: production touched."""
    read_only_production(world)
    state = cutover(**APPROVED, rollback_on_failure=False, return_state=True)
    assert state.is_failed() and the_manifest().production_touched
    assert the_manifest().rollback.status == "not-started"
    return state


def roll_back(state, **params):
    return rollback(manifest=str(state.state_details.flow_run_id), **params, return_state=True)


def backend_answers(url: str) -> dict | None:
    try:
        reply = httpx.get(url + "/", timeout=5)
    except httpx.HTTPError:
        return None
    return reply.json() if reply.status_code == 200 else {"status": reply.status_code}


def incident_of(world: World) -> str:
    return artifacts_with_key(f"{world.pilot.replace('_', '-')}-incident")[0]


def assert_failed_loudly(world: World, rolled, m: Manifest) -> None:
    """A rollback that could not restore: Failed, production in place and intact, a human paged."""
    assert rolled is None or rolled.is_failed()
    assert m.production_touched and m.rollback.status == "failed"
    incident = incident_of(world)
    assert "ROLLBACK FAILED" in incident and "not dropped" in incident and "a human is needed" in incident
    assert db.database_exists(world.conn, world.pilot)
    assert databases_like(world.conn, f"{world.pilot}_failed_") == []  # production kept its name
    assert databases_like(world.conn, f"{world.pilot}_restore_") == []  # the half restore was dropped
    assert data_fingerprint(world.conn, world.pilot) == world.before
    assert db.alembic_revision(world.conn, world.pilot) is None
    # The backend was stopped for the restore and stays stopped, as the incident says.
    assert "the backend is stopped" in incident and backend_answers(world.api) is None


def truncated_then_restored_from_s3(world: World) -> Outcome:
    """The local dump truncated; a rollback that cannot reach the S3 copy refuses, one that can restores."""
    state = fail_on_production(world)
    m = the_manifest()
    truncate_backup(m)
    world.env.delenv("CUTOVER_S3_BUCKET")  # e.g. run by hand from a shell without the S3 settings
    refused = roll_back(state)
    m = the_manifest()
    assert m.rollback.error.startswith("fetch-backup: No verified backup for")
    assert "has SHA-256" in m.rollback.error and "set CUTOVER_S3_BUCKET" in m.rollback.error
    assert [s.name for s in m.rollback.steps] == ["changes-since-cutover", "stop-backend", "fetch-backup"]
    assert_failed_loudly(world, refused, m)
    world.proof["refused"] = m.rollback.error

    world.env.setenv("CUTOVER_S3_BUCKET", world.bucket)
    restored = roll_back(state)
    return Outcome(state, the_manifest(), restored)


def drop_recreate_killed_then_again(world: World) -> Outcome:
    """drop-recreate with its restore killed leaves production in place; run again, it restores."""
    state = fail_on_production(world)
    failed = roll_back(state, strategy="drop-recreate")
    m = the_manifest()
    assert [s.name for s in m.rollback.steps] == ["changes-since-cutover", "stop-backend", "fetch-backup", "drop-recreate"]
    assert "renamed back" in m.rollback.error and "killed by SIGKILL" in m.rollback.error
    assert_failed_loudly(world, failed, m)

    world.env.delenv("FAULT_KILL_PG_RESTORE")
    restored = roll_back(state, strategy="drop-recreate")
    return Outcome(state, the_manifest(), restored)


# -- the cases ------------------------------------------------------------------------------


def arrange_scratch_kill(world: World) -> None:
    killing_pg_bin(world, r".*_scratch_.*")


def arrange_rollback_restore_kill(world: World) -> None:
    killing_pg_bin(world, r".*_restore_.*")
    read_only_production(world)


def arrange_drop_recreate_kill(world: World) -> None:
    killing_pg_bin(world, world.pilot)  # drop-recreate restores under production's own name


def arrange_cut_s3(world: World) -> None:
    proxy = CuttingProxy(world.s3_endpoint, limit=8 * 1024)  # the dump is ~30 KiB; a bucket check < 1 KiB
    world.cleanups.append(proxy.close)
    world.proof["proxy"] = proxy
    world.env.setenv("CUTOVER_S3_BUCKET", world.bucket)
    world.env.setenv("CUTOVER_S3_ENDPOINT_URL", proxy.url)
    world.env.setenv("CUTOVER_S3_MAX_ATTEMPTS", "2")
    world.env.setenv("CUTOVER_REQUIRE_OFFSITE", "true")


def arrange_full_disk(world: World) -> None:
    disk = full_tmpfs(world.tmp / "tiny-disk", free_bytes=24 * 1024)  # room for the manifest, not the dump
    mount = disk.__enter__()
    world.cleanups.append(lambda: disk.__exit__(None, None, None))
    world.env.setenv("CUTOVER_BACKUP_DIR", str(mount / "backups"))


def arrange_offsite(world: World) -> None:
    world.env.setenv("CUTOVER_S3_BUCKET", world.bucket)
    world.env.setenv("CUTOVER_S3_ENDPOINT_URL", world.s3_endpoint)


def killed_while_restoring(world: World, target_prefix: str) -> None:
    log = world.fault_log.read_text().splitlines()
    assert [line for line in log if line.startswith(target_prefix) and line.endswith("pg_restore killed while restoring")], log


def scratch_kill_proof(world: World, outcome: Outcome) -> None:
    killed_while_restoring(world, world.pilot + "_scratch_")
    assert "pg_restore into the scratch copy was killed by SIGKILL" in outcome.manifest.failure["error"]


def cut_s3_proof(world: World, outcome: Outcome) -> None:
    assert world.proof["proxy"].cut >= 2  # every attempt of the upload was cut
    error = outcome.manifest.failure["error"]
    assert "CUTOVER_REQUIRE_OFFSITE is on" in error and "does not answer" in error
    stored = boto3.client("s3", endpoint_url=world.s3_endpoint, region_name="us-east-1").list_objects_v2(
        Bucket=world.bucket).get("Contents", [])
    assert [o["Key"] for o in stored] == []  # no half object passes for the backup


def full_disk_proof(world: World, outcome: Outcome) -> None:
    assert "No space left on device" in outcome.manifest.failure["error"]
    backups = Path(os.environ["CUTOVER_BACKUP_DIR"])
    # The partial dump was removed, so the manifest and the report still had room.
    assert not list(backups.rglob("*.dump"))
    assert len(list(backups.glob("*/*/report.md"))) == 1


def truncated_proof(world: World, outcome: Outcome) -> None:
    assert outcome.manifest.rollback.restored_from.startswith(f"s3://{world.bucket}/")
    assert databases_like(world.conn, f"{world.pilot}_failed_") == [outcome.manifest.rollback.failed_database]
    assert [s.name for s in outcome.manifest.rollback.steps][-5:] == ["restore", "database-properties", "swap", "verify", "start-backend"]


def rollback_restore_kill_proof(world: World, outcome: Outcome) -> None:
    killed_while_restoring(world, world.pilot + "_restore_")
    runs = rollback_runs_of(outcome.cutover_state.state_details.flow_run_id)
    assert [r.state.type.value for r in runs] == ["FAILED"]
    assert "pg_restore was killed by SIGKILL" in outcome.manifest.rollback.error


def drop_recreate_proof(world: World, outcome: Outcome) -> None:
    killed_while_restoring(world, world.pilot + ":")
    # The literal runbook's end state: one database, restored; the failed copy dropped only once
    # the restore under production's name was verified and the backend was back.
    assert databases_like(world.conn, f"{world.pilot}_failed_") == []
    assert [s.name for s in outcome.manifest.rollback.steps][-6:] == [
        "fetch-backup", "drop-recreate", "database-properties", "verify", "start-backend", "drop-failed-copy"]


FAULTS = [
    Fault("scratch-restore-killed", "scratch-restore", "pg_restore SIGKILLed mid-restore (CUTOVER_PG_BIN wrapper)",
          arrange_scratch_kill, run_cutover, "untouched", scratch_kill_proof),
    Fault("s3-cut-mid-upload", "offsite-mirror", "TCP proxy in front of moto resets the upload after 8 KiB",
          arrange_cut_s3, run_cutover, "untouched", cut_s3_proof),
    Fault("backup-disk-full", "backup-full", "backup directory on a full 2 MiB tmpfs",
          arrange_full_disk, run_cutover, "untouched", full_disk_proof),
    Fault("backup-truncated", "rollback fetch-backup", "local dump truncated to half before the rollback",
          arrange_offsite, truncated_then_restored_from_s3, "restored", truncated_proof),
    Fault("rollback-restore-killed", "rollback restore", "pg_restore SIGKILLed mid-restore (CUTOVER_PG_BIN wrapper)",
          arrange_rollback_restore_kill, run_cutover, "rollback-failed", rollback_restore_kill_proof),
    Fault("drop-recreate-restore-killed", "rollback drop-recreate",
          "pg_restore SIGKILLed while restoring under production's name",
          arrange_drop_recreate_kill, drop_recreate_killed_then_again, "restored", drop_recreate_proof),
]


@pytest.fixture
def world(prefect_api, conn, pilot, cutover_env, managed_api, s3_endpoint, bucket, tmp_path):
    # Faster, and beside the point here: the write sample and the squawk lint.
    cutover_env.setenv("CUTOVER_WRITE_SAMPLE_SECONDS", "0.2")
    cutover_env.setenv("CUTOVER_LINT", "off")
    log = tmp_path / "faults.log"
    log.touch()
    cutover_env.setenv("FAULT_LOG", str(log))
    w = World(conn, pilot, cutover_env, tmp_path, managed_api, s3_endpoint, bucket, log)
    w.before = data_fingerprint(conn, pilot)
    yield w
    for cleanup in reversed(w.cleanups):
        cleanup()


@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_fault_leaves_production_as_it_was(world, fault):
    fault.arrange(world)
    outcome = fault.act(world)
    m = outcome.manifest

    assert outcome.cutover_state.is_failed()
    report = artifacts_with_key(f"{world.pilot.replace('_', '-')}-cutover-report")[0]
    assert f"Step `{m.failure['step']}`" in report
    if fault.expect == "rollback-failed":
        assert_failed_loudly(world, outcome.rollback_state, m)
    else:
        # Never dropped, and every row as before the cutover, at the original revision.
        assert data_fingerprint(world.conn, world.pilot) == world.before
        assert db.alembic_revision(world.conn, world.pilot) is None
        assert (backend_answers(world.api) or {}).get("revision", "down") is None
        if fault.expect == "untouched":
            assert m.failure["step"] == fault.step and not m.production_touched
            assert "Production was not touched: nothing to roll back." in report
            # Nothing to restore, so no rollback run and no incident: the cutover's own report says why.
            assert m.rollback is None and rollback_runs_of(m.flow_run_id) == []
            assert artifacts_with_key(f"{world.pilot.replace('_', '-')}-incident") == []
        else:
            incident = incident_of(world)
            assert outcome.rollback_state.is_completed()
            assert m.production_touched and m.rollback.status == "restored"
            assert "restored from the backup" in incident and m.rollback.restored_from in incident
            assert databases_like(world.conn, f"{world.pilot}_restore_") == []
    if m.backup is not None and m.rollback is not None:
        assert (Path(m.backup.path).parent / "incident.md").read_text() == incident_of(world)
    fault.proof(world, outcome)
