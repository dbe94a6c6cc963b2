"""The worker you can ship (Dockerfile, .dockerignore, deployments/worker-entrypoint.sh, docker-compose.yml's worker
service), without a Docker engine.

The image is built as the Dockerfile says, instruction by instruction, into a directory standing for its root
filesystem: the build context is the checkout with .dockerignore applied, COPY copies from it, the RUN line that
installs the project runs as written (in a fresh venv at <root>/usr/local, where the python image keeps its Python),
ENV and WORKDIR apply. The RUN lines for system packages and the user cannot run here: the PostgreSQL client is the
host's /usr/lib/postgresql/<PG_MAJOR>/bin, which is where Debian's postgresql-client-<PG_MAJOR> puts it. Then the
CMD runs against a real `prefect server` and real PostgreSQL, with the environment the compose file gives the worker
(its in-network addresses replaced by this machine's), and a dry run of the example app goes through that worker.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from pg_cutover.launcher.embedded import REPO_ROOT
from pg_cutover.pg import db
from pg_cutover.runbook.manifest import load_manifest
from tests.conftest import BASELINE, wait_for
from tests.helpers import data_fingerprint
from tests.test_operations import FORM, Api

DEPLOYMENTS = {"cutover/cutover", "cutover/fleet-target", "fleet/fleet", "finalize/finalize", "rollback/rollback",
               "restore-drill/restore-drill"}
# The python image's PATH, under which its Python lives in /usr/local/bin.
IMAGE_PATH = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
VARIABLE = re.compile(r"\$\{(\w+)(?::-(.*)|:\?(.+))?\}")


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each Dockerfile instruction, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), " ".join(rest.split())))
    return found


def dockerignore() -> list[re.Pattern]:
    """.dockerignore's patterns as Docker reads them: from the context's root, `**` any number of directories."""
    patterns = []
    for line in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        # A `!` exception would need Docker's last-match-wins order; none is used, and this reader does not model it.
        assert not line.startswith("!"), line
        regex = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?)", line.strip("/")):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
        patterns.append(re.compile(regex))
    return patterns


def ignored(relative: str, patterns: list[re.Pattern]) -> bool:
    """A path is left out when it or any directory above it matches."""
    parts = relative.split("/")
    return any(p.fullmatch("/".join(parts[:n])) for p in patterns for n in range(1, len(parts) + 1))


def build_context(target: Path) -> list[str]:
    """The checkout as `docker build .` sends it; returns the paths sent."""
    patterns, sent = dockerignore(), []
    for directory, subdirs, files in os.walk(REPO_ROOT):
        here = Path(directory).relative_to(REPO_ROOT)
        subdirs[:] = [d for d in subdirs if not ignored((here / d).as_posix(), patterns)]
        for name in files:
            relative = (here / name).as_posix()
            if not ignored(relative, patterns):
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(directory) / name, target / relative)
                sent.append(relative)
    return sent


@dataclass
class Image:
    root: Path
    env: dict[str, str]
    workdir: Path
    cmd: list[str]
    base: str = ""
    args: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    context: list[str] = field(default_factory=list)

    def path(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")


def expand(value: str, scope: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: scope[m.group(1) or m.group(2)], value)


def build_image(root: Path) -> Image:
    """The image's root filesystem and environment, built from the Dockerfile's own instructions."""
    image = Image(root=root, env={"PATH": IMAGE_PATH, "HOME": "/root"}, workdir=root, cmd=[])
    context = root.parent / "context"
    image.context = build_context(context)
    subprocess.run([sys.executable, "-m", "venv", str(image.path("/usr/local"))], check=True, timeout=120)
    workdir = "/"
    for keyword, rest in instructions((REPO_ROOT / "Dockerfile").read_text()):
        if keyword == "FROM":
            image.base = rest
        elif keyword == "ARG":
            name, _, default = rest.partition("=")
            image.args[name] = default
        elif keyword == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                image.env[name] = expand(value, {**image.env, **image.args})
        elif keyword == "WORKDIR":
            workdir = rest if rest.startswith("/") else f"{workdir.rstrip('/')}/{rest}"
            image.path(workdir).mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, dest = shlex.split(rest)
            dest_dir = image.path(dest if dest.startswith("/") else f"{workdir}/{dest}")
            for source in sources:
                src = context / source
                if src.is_dir():
                    shutil.copytree(src, dest_dir, dirs_exist_ok=True)
                else:
                    dest_dir.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dest_dir / src.name)
        elif keyword == "RUN" and rest.startswith("python -m pip install"):
            # Container paths named on the line (/src) are this root's; `python` is the venv's, first on PATH.
            # A path may carry the extras to install ("/src[aws]"): only the path part is this root's.
            def here(t: str) -> str:
                path, bracket, extras = t.partition("[")
                return str(image.path(path)) + bracket + extras if t.startswith("/") else t

            command = " && ".join(shlex.join(here(t) for t in shlex.split(part)) for part in rest.split("&&"))
            env = {**image.env, "PATH": f"{image.path('/usr/local/bin')}:{image.env['PATH']}"}
            proc = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=900,
                                  check=False)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        elif keyword == "RUN":
            image.skipped.append(rest)
        elif keyword == "CMD":
            image.cmd = json.loads(rest)
    image.workdir = image.path(workdir)
    # The image's directories on PATH are this root's; the client's directory is the host's own installation.
    image.env["PATH"] = ":".join(str(image.path(p)) if p.startswith("/usr/local") else p
                                 for p in image.env["PATH"].split(":"))
    image.env["HOME"] = str(image.path("/home/cutover"))
    image.path("/home/cutover").mkdir(parents=True, exist_ok=True)
    return image


def compose_worker() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]["worker"]


def example_variables() -> tuple[set[str], set[str]]:
    """deployments/worker.env.example's variables: those set, and those left commented out (`# NAME=`)."""
    text = (REPO_ROOT / "deployments" / "worker.env.example").read_text()
    return (set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, re.MULTILINE)),
            set(re.findall(r"^# ?([A-Z][A-Z0-9_]*)=", text, re.MULTILINE)))


# Values the compose file writes itself: addresses inside the compose network and paths inside the image.
IN_IMAGE = {"PREFECT_API_URL": "http://prefect-server:4200/api", "POSTGRES_HOST": "postgres", "POSTGRES_PORT": "5432",
            "CUTOVER_ALEMBIC_DIR": "examples/beer_backend_api", "CUTOVER_HEALTH_URL": "http://beer_backend_api:8000",
            "CUTOVER_BACKUP_DIR": "/backups"}


def test_the_compose_worker_service_builds_the_image_and_runs_the_entrypoint():
    services = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    assert compose_worker() == {
        "build": {"context": ".", "args": {"PG_MAJOR": "${PG_MAJOR:-15}"}},
        "command": ["deployments/worker-entrypoint.sh"],
        "environment": IN_IMAGE | {
            "PREFECT_UI_URL": "${PREFECT_UI_URL:-http://127.0.0.1:4200}",
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "${PREFECT_FLOWS_HEARTBEAT_FREQUENCY:-30}",
            "CUTOVER_NOTIFY_BLOCK": "${CUTOVER_NOTIFY_BLOCK:-}",
            "POSTGRES_USER": "${POSTGRES_USER:-postgres}",
            "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}",
            "POSTGRES_DB": "${POSTGRES_DB:-beer_pilot}",
            "BASELINE_REV": "${BASELINE_REV:-0001_baseline}",
        },
        "volumes": ["backups:/backups"],
        "depends_on": {"postgres": {"condition": "service_healthy"},
                       "prefect-server": {"condition": "service_healthy"}},
        "restart": "unless-stopped",
    }
    env = compose_worker()["environment"]
    # Everything but the in-network addresses and in-image paths comes from the environment; the password is
    # required there, with no default written in the file.
    assert all(VARIABLE.fullmatch(value) for name, value in env.items() if name not in IN_IMAGE)
    assert VARIABLE.fullmatch(env["POSTGRES_PASSWORD"]).group(3)
    # The worker's settings are worker.env.example's.
    set_there, commented = example_variables()
    assert set_there | {"POSTGRES_PASSWORD"} <= set(env) <= set_there | commented
    # What the worker waits for exists, with a healthcheck.
    assert {"postgres", "prefect-server"} <= set(services)
    assert all(services[name].get("healthcheck") for name in ("postgres", "prefect-server"))
    assert "backups" in yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["volumes"]
    # The image's command is the compose service's; the script runs deploy.py once, then becomes the worker.
    (cmd,) = [json.loads(rest) for keyword, rest in instructions((REPO_ROOT / "Dockerfile").read_text())
              if keyword == "CMD"]
    assert cmd == compose_worker()["command"]
    script = [line for line in (REPO_ROOT / cmd[0]).read_text().splitlines() if line and not line.startswith("#")]
    assert script[-2:] == ['python deployments/deploy.py ${CUTOVER_NOTIFY_BLOCK:+--notify "$CUTOVER_NOTIFY_BLOCK"}',
                           'exec prefect worker start --pool pg-cutover "$@"']
    assert os.access(REPO_ROOT / cmd[0], os.X_OK)


def test_the_build_context_leaves_out_secrets_data_and_the_checkout_environment():
    patterns = dockerignore()
    for path in ("worker.env", ".env", "deployments/prod.env", "backups/pilot/2026/pilot.dump", ".venv/bin/python",
                 ".git/HEAD", "pg_cutover/__pycache__/settings.cpython-311.pyc", "pg_cutover.egg-info/PKG-INFO"):
        assert ignored(path, patterns), path
    for path in ("pyproject.toml", "README.md", "prefect.yaml", "deployments/worker.env.example",
                 "deployments/worker-entrypoint.sh", "pg_cutover/pg/tools.py", "flows/cutover.py", "tasks/backup.py",
                 "examples/beer_backend_api/alembic.ini"):
        assert not ignored(path, patterns), path


@pytest.mark.slow
def test_the_image_deploys_once_then_its_worker_runs_a_dry_run(conn, pg_target, pilot, tmp_path, prefect_server,
                                                             webhook):
    if pg_target.embedded:
        pytest.skip("the image's client pairs with a server over TCP; this machine's tests use the embedded one")
    image = build_image(tmp_path / "rootfs")
    major = image.args["PG_MAJOR"]
    if not Path(f"/usr/lib/postgresql/{major}/bin/pg_dump").exists():
        pytest.skip(f"no postgresql-client-{major} on this machine, the image's client")
    # The image's Python is the one these tests run on, and what could not run here is system packages and users.
    assert image.base.startswith(f"python:{sys.version_info.major}.{sys.version_info.minor}-"), image.base
    assert [rest.split()[0] for rest in image.skipped] == ["apt-get", "useradd"], image.skipped
    assert "pyproject.toml" in image.context
    assert not [path for path in image.context if path.endswith(".env") or path.split("/")[0] in {
        ".git", ".venv", "backups", "tests"} or "__pycache__" in path]

    # The working directory holds the files read as files, not the package's source; the package is installed.
    app = image.workdir
    assert (app / "prefect.yaml").is_file() and (app / "examples/beer_backend_api/alembic.ini").is_file()
    assert not (app / "pg_cutover").exists() and not image.path("/src").exists()
    where = subprocess.run(["python", "-c", "import pg_cutover.flows.cutover, pg_cutover; print(pg_cutover.__file__)"],
                           cwd=app, env=image.env, capture_output=True, text=True, timeout=120, check=False)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(image.path("/usr/local/lib")), where.stdout
    client = subprocess.run(["pg_dump", "--version"], env=image.env, capture_output=True, text=True, timeout=30,
                            check=False)
    assert f"(PostgreSQL) {major}." in client.stdout, client.stdout

    # The compose file's environment, its in-network addresses and in-image paths replaced by this machine's.
    here = {"PREFECT_API_URL": prefect_server["PREFECT_API_URL"], "POSTGRES_HOST": pg_target.host,
            "POSTGRES_PORT": str(pg_target.port), "CUTOVER_HEALTH_URL": "none",
            "CUTOVER_BACKUP_DIR": str(image.path("/backups"))}
    given = {"POSTGRES_USER": pg_target.user, "POSTGRES_PASSWORD": pg_target.password or "unused-under-trust-auth",
             "POSTGRES_DB": pilot}
    env = dict(image.env)
    for name, value in compose_worker()["environment"].items():
        if name in here:
            env[name] = here[name]
        elif (var := VARIABLE.fullmatch(value)) and name in given:
            env[name] = given[name]
        else:
            env[name] = var.group(2) if var else value
    assert env["BASELINE_REV"] == BASELINE and env["CUTOVER_ALEMBIC_DIR"] == "examples/beer_backend_api"
    # Faster polling and a shorter write sample than production's, so the test waits less; nothing else added.
    env |= {"PREFECT_WORKER_QUERY_SECONDS": "2", "CUTOVER_WRITE_SAMPLE_SECONDS": "1"}
    assert env["CUTOVER_NOTIFY_BLOCK"] == ""  # unset by default: no notifications wired
    env["CUTOVER_NOTIFY_BLOCK"] = webhook.register(prefect_server)  # an operator's notification block
    image.path("/backups").mkdir(mode=0o700)

    files_before = sorted(p.relative_to(app) for p in app.rglob("*"))
    api = Api(env["PREFECT_API_URL"])
    before = data_fingerprint(conn, pilot)
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(image.cmd, cwd=app, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        def workers() -> list[dict]:
            response = api.http.post("/work_pools/pg-cutover/workers/filter", json={})
            return response.json() if response.status_code == 200 else []

        wait_for("the image's worker to poll the pg-cutover pool", lambda: proc.poll() is not None or workers(), 300)
        assert proc.poll() is None, log_path.read_text()[-4000:]
        # deploy.py ran, once, before the worker: the pool and every deployment of prefect.yaml are on the server.
        assert log_path.read_text().count(": ready.") == 1, log_path.read_text()[-4000:]
        assert api.http.get("/work_pools/pg-cutover").json()["type"] == "process"
        for name in DEPLOYMENTS:
            assert api.http.get(f"/deployments/name/{name}").status_code == 200, name
        automations = api.post("/automations/filter", json={}).json()
        assert {"pg-cutover-zombie-detection", "pg-cutover-notifications"} <= {a["name"] for a in automations}

        run = api.run_deployment("cutover/cutover", {
            "dry_run": True, "approved_by": "image test", "ticket": "CHG-22",
            "checklist": {k: True for k in FORM if k not in ("operator", "reviewer", "rollback_owner", "ticket")}})
        end = api.wait_state(run, {"FAILED", "CANCELLED", "COMPLETED", "CRASHED"}, 300)
        assert end["type"] == "COMPLETED", (end, log_path.read_text()[-4000:])
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)

    # Through the image's worker: it was the only one polling, and it logged the run.
    assert len(workers()) == 1 and run in log_path.read_text()
    # A dry run: the scratch copy upgraded, production untouched, the evidence in the backup directory.
    assert db.alembic_revision(conn, pilot) is None and data_fingerprint(conn, pilot) == before
    (manifest,) = [m for m in map(load_manifest, image.path("/backups").rglob("manifest.json")) if m.flow_run_id == run]
    assert manifest.status == "dry-run", manifest.status
    assert (Path(manifest.backup.path).parent / "report.md").is_file()
    # Nothing was written into the working directory, which the image's user cannot write to.
    assert sorted(p.relative_to(app) for p in app.rglob("*")) == files_before
