"""Shared fixtures: real PostgreSQL, a real Prefect API, the example app under uvicorn.

PREFECT_HOME and analytics are set before Prefect is imported anywhere, so the
test harness's temporary server never touches a developer's ~/.prefect.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

_PREFECT_HOME = tempfile.mkdtemp(prefix="pg-cutover-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["PREFECT_SERVER_LOGGING_LEVEL"] = "WARNING"

import pytest  # noqa: E402

from pg_cutover.launcher.embedded import EXAMPLE_APP_DIR, example_api, start_postgres  # noqa: E402
from pg_cutover.pg import db  # noqa: E402
from pg_cutover.pg.db import ConnInfo  # noqa: E402

sys.path.insert(0, str(EXAMPLE_APP_DIR))
BASELINE = "0001_baseline"
HEAD = "0003_review_constraints"

# Settings the tool reads; each test starts from none of them set.
_ENV_NAMES = [
    "POSTGRES_DB", "BASELINE_REV", "CUTOVER_ALEMBIC_DIR", "CUTOVER_ALEMBIC_COMMAND", "CUTOVER_BACKUP_DIR",
    "CUTOVER_HEALTH_URL", "CUTOVER_HEALTH_PATHS", "CUTOVER_PG_BIN", "CUTOVER_SERVICE_STATUS",
    "CUTOVER_SERVICE_STOP", "CUTOVER_SERVICE_START", "CUTOVER_S3_BUCKET", "CUTOVER_S3_ENDPOINT_URL",
    "CUTOVER_S3_PART_SIZE_MB", "CUTOVER_REQUIRE_OFFSITE", "CUTOVER_S3_KEEP", "CUTOVER_S3_OBJECT_LOCK_DAYS",
    "CUTOVER_S3_CHECKSUM", "CUTOVER_S3_PREFIX", "CUTOVER_SERVICE", "CUTOVER_S3_MAX_ATTEMPTS", "BEER_APP_INCOMPATIBLE_WITH",
    "CUTOVER_LINT", "CUTOVER_BASELINE_BOOTSTRAP", "CUTOVER_PARITY_ALLOW", "CUTOVER_WRITE_FREEZE", "CUTOVER_LOCK_RETRIES",
    "CUTOVER_LOCK_RETRY_WAIT_SECONDS", "CUTOVER_LOCK_TIMEOUT", "CUTOVER_WRITE_SAMPLE_SECONDS", "CUTOVER_STRATEGY",
    "CUTOVER_ROLLBACK_SERVICE_STATUS", "CUTOVER_ROLLBACK_SERVICE_STOP", "CUTOVER_ROLLBACK_SERVICE_START",
    "CUTOVER_S3_LINKS", "CUTOVER_S3_PRESIGN_PLAINTEXT", "CUTOVER_S3_CREDENTIALS_BLOCK", "CUTOVER_PROGRESS_SECONDS",
    "CUTOVER_ENCRYPTION", "CUTOVER_ENCRYPTION_RECIPIENTS", "CUTOVER_ENCRYPTION_IDENTITY",
]


# Tiers, from what a test needs: e2e runs flows against a Prefect API (the test harness, a real server and
# workers, or the command line's own temporary server); integration needs PostgreSQL or the S3 server;
# unit needs neither. `make test` runs all; `make test-fast` leaves e2e out.
_E2E_FIXTURES = {"prefect_api", "prefect_server"}
_SERVICE_FIXTURES = {"pg_target", "conn", "s3_endpoint"}


def pytest_collection_modifyitems(config, items):
    # The longest tests (a real server and workers, minutes each) start first: with the suite spread
    # over two processes (`make test`), none of them is left to run alone at the end.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    for item in items:
        needs = set(getattr(item, "fixturenames", ()))
        if item.get_closest_marker("e2e") is None and needs & _E2E_FIXTURES:
            item.add_marker(pytest.mark.e2e)
        if item.get_closest_marker("e2e") is None:
            item.add_marker(pytest.mark.integration if needs & _SERVICE_FIXTURES else pytest.mark.unit)


@pytest.fixture(scope="session")
def pg_target(tmp_path_factory):
    target = start_postgres(tmp_path_factory.mktemp("pgdata"))
    for key, value in target.env().items():
        os.environ[key] = value
    return target


@pytest.fixture(scope="session")
def conn(pg_target) -> ConnInfo:
    return ConnInfo(pg_target.host, pg_target.port, pg_target.user, pg_target.password)


@pytest.fixture(scope="session")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


@pytest.fixture
def pilot_factory(conn):
    """Builds legacy pilot databases (create_all, no alembic_version) and drops them, scratch copies included."""
    from beer_app.seed import build_legacy_pilot

    prefixes = []

    def build(reviews: int = 400) -> str:
        name = f"pilot_{uuid.uuid4().hex[:10]}"
        prefixes.append(name)
        build_legacy_pilot(name, reviews)
        return name

    yield build
    for prefix in prefixes:
        db.drop_databases_like(conn, prefix)


@pytest.fixture
def pilot(pilot_factory) -> str:
    return pilot_factory()


@pytest.fixture
def api(pg_target, pilot):
    with example_api(pg_target.env(), pilot) as url:
        yield url


def operator_env(monkeypatch, pg_target, database: str, baseline: str, alembic_dir: Path, backups: Path):
    """The environment an operator would export for `database` of an app, and none of the other settings."""
    for name in _ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    for key, value in pg_target.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("POSTGRES_DB", database)
    monkeypatch.setenv("BASELINE_REV", baseline)
    monkeypatch.setenv("CUTOVER_ALEMBIC_DIR", str(alembic_dir))
    monkeypatch.setenv("CUTOVER_BACKUP_DIR", str(backups))
    monkeypatch.setenv("CUTOVER_HEALTH_URL", "none")
    # On a few-MB pilot the backup beside which the counter sample runs takes well under its default 2 s,
    # so every flow test would wait for it; the tests of the sample itself set their own length.
    monkeypatch.setenv("CUTOVER_WRITE_SAMPLE_SECONDS", "0.2")
    return monkeypatch


@pytest.fixture
def cutover_env(monkeypatch, tmp_path, pg_target, pilot):
    """The environment an operator would export for `pilot`, backups under tmp_path."""
    return operator_env(monkeypatch, pg_target, pilot, BASELINE, EXAMPLE_APP_DIR, tmp_path / "backups")


BROKEN_REVISION = '''"""A revision that fails halfway through its operations."""
from alembic import op
import sqlalchemy as sa

revision = "0004_broken"
down_revision = "0003_review_constraints"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("beers", sa.Column("tasting_notes", sa.Text(), nullable=True))
    op.execute("SELECT 1 / 0")


def downgrade():
    op.drop_column("beers", "tasting_notes")
'''


@pytest.fixture
def broken_alembic_dir(tmp_path) -> Path:
    """A copy of the example app whose newest revision raises after its first operation."""
    target = tmp_path / "broken_app"
    shutil.copytree(EXAMPLE_APP_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "alembic" / "versions" / "0004_broken.py").write_text(BROKEN_REVISION)
    return target


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on a free loopback port for the whole session; boto3 reaches it over HTTP."""
    from pg_cutover.launcher.embedded import s3_server

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing-key-id")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with s3_server() as url:
        yield url


# A known S3 secret that must never show up in evidence.
S3_SECRET = "s3-Kn0wn-Secret-Value"


@pytest.fixture
def bucket(s3_endpoint):
    """A fresh bucket per test, so retention and listings see only this test's objects."""
    import boto3

    name = f"bk-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture
def offsite_env(cutover_env, s3_endpoint, bucket):
    cutover_env.setenv("CUTOVER_S3_BUCKET", bucket)
    cutover_env.setenv("CUTOVER_S3_ENDPOINT_URL", s3_endpoint)
    cutover_env.setenv("CUTOVER_S3_PART_SIZE_MB", "5")
    return cutover_env


SERVICECTL = EXAMPLE_APP_DIR / "beer_app" / "servicectl.py"


@pytest.fixture
def managed_api(cutover_env, pilot, tmp_path):
    """The example API run as a service that the cutover and rollback stop and start themselves."""
    import subprocess

    from pg_cutover.launcher.embedded import free_port

    port = free_port()
    base = f"{sys.executable} {SERVICECTL} {{}} --pidfile {tmp_path / 'api.pid'} --port {port}"
    cutover_env.setenv("CUTOVER_SERVICE_START", base.format("start") + f" --log {tmp_path / 'api.log'}")
    cutover_env.setenv("CUTOVER_SERVICE_STOP", base.format("stop"))
    cutover_env.setenv("CUTOVER_SERVICE_STATUS", base.format("status"))
    cutover_env.setenv("CUTOVER_HEALTH_URL", f"http://127.0.0.1:{port}")

    def ctl(action: str) -> subprocess.CompletedProcess:
        return subprocess.run(os.environ[f"CUTOVER_SERVICE_{action.upper()}"].split(), capture_output=True,
                              text=True, timeout=60)

    assert ctl("start").returncode == 0
    yield f"http://127.0.0.1:{port}"
    ctl("stop")


SLOW_FAILING_REVISION = '''"""Fails halfway on production only: its first part is committed before the failure."""
from alembic import op
import sqlalchemy as sa

revision = "0004_half"
down_revision = "0003_review_constraints"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("beers", sa.Column("tasting_notes", sa.Text(), nullable=True))
    op.execute("UPDATE beers SET tasting_notes = 'pending'")
    with op.get_context().autocommit_block():
        op.execute("CREATE INDEX CONCURRENTLY ix_beers_tasting_notes ON beers (tasting_notes)")
    op.execute(
        "DO $$ BEGIN IF position('_scratch_' in current_database()) = 0 THEN "
        "RAISE EXCEPTION 'injected failure halfway through 0004_half'; END IF; END $$"
    )


def downgrade():
    op.drop_index("ix_beers_tasting_notes", table_name="beers")
    op.drop_column("beers", "tasting_notes")
'''


@pytest.fixture
def halfway_alembic_dir(tmp_path) -> Path:
    """A copy of the example app whose newest revision fails halfway, on production only."""
    target = tmp_path / "halfway_app"
    shutil.copytree(EXAMPLE_APP_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "alembic" / "versions" / "0004_half.py").write_text(SLOW_FAILING_REVISION)
    return target


def wait_for(what: str, check, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextlib.contextmanager
def _running_prefect_server(home: Path, log_path: Path):
    """`prefect server start` (SQLite under `home`) on a free port, until exit; yields the environment for it."""
    import signal
    import subprocess

    from pg_cutover.launcher.embedded import free_port

    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_LOGGING_LEVEL": "INFO"}
    env.pop("PREFECT_SERVER_LOGGING_LEVEL", None)
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                             str(port)], env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        wait_for("prefect server", lambda: _ok(f"http://127.0.0.1:{port}/api/health"), 90)
        yield env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()


@pytest.fixture(scope="session")
def _booted_prefect_home(tmp_path_factory) -> Path:
    """A PREFECT_HOME a server has booted once: its database migrated and its block types registered.

    Each `prefect_server` starts from a copy, in about 4 s instead of 10 on this machine."""
    home = tmp_path_factory.mktemp("prefect-home-booted")
    with _running_prefect_server(home, home.parent / "prefect-home-booted.log"):
        pass
    return home


@pytest.fixture
def prefect_server(tmp_path, _booted_prefect_home):
    """A real `prefect server` (SQLite) of this test's own on a free port; yields the environment that points at it."""
    home = tmp_path / "prefect-home"
    shutil.copytree(_booted_prefect_home, home)
    with _running_prefect_server(home, tmp_path / "server.log") as env:
        yield env


def _ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False




@contextlib.contextmanager
def deployed_worker(env: dict[str, str], workdir: Path, workers: int = 1, notify: str | None = None):
    """prefect.yaml deployed through deployments/deploy.py (with `--notify` when given), and process workers
    on its pool, until exit."""
    import signal
    import subprocess

    from pg_cutover.launcher.embedded import REPO_ROOT

    deploy = subprocess.run([sys.executable, "deployments/deploy.py", *(["--notify", notify] if notify else [])],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    procs = []
    with contextlib.ExitStack() as stack:
        for n in range(workers):
            log = stack.enter_context(open(workdir / ("worker.log" if n == 0 else f"worker{n + 1}.log"), "wb"))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "prefect", "worker", "start", "--pool", "pg-cutover", "--name", f"worker-{n + 1}"],
                cwd=workdir, env=env, stdout=log, stderr=log, start_new_session=True))
        try:
            yield procs[0] if workers == 1 else procs
        finally:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                proc.wait(30)


class WebhookReceiver:
    """A local HTTP endpoint that keeps every JSON body posted to it, as a chat or pager service would."""

    def __init__(self) -> None:
        import http.server
        import threading

        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the standard library's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, what: str, predicate, timeout: float = 120) -> dict:
        return wait_for(what, lambda: next((m for m in list(self.received) if predicate(m)), None), timeout)

    def register(self, env: dict[str, str], name: str = "ops") -> str:
        """A Prefect custom-webhook notification block pointed at this receiver; returns its reference."""
        import subprocess

        code = ("import sys; from prefect.blocks.notifications import CustomWebhookNotificationBlock as B; "
                "B(name='pg-cutover', url=sys.argv[1], json_data={'subject': '{{subject}}', 'body': '{{body}}'})"
                ".save(sys.argv[2], overwrite=True)")
        subprocess.run([sys.executable, "-c", code, self.url, name], env=env, check=True, capture_output=True,
                       timeout=120)
        return f"custom-webhook/{name}"


@pytest.fixture
def webhook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.server.shutdown()
