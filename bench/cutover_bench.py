"""Cutover benchmark: the runbook by hand (A) against `cutover run` (B), on the same pilot.

One command:

    /work/main/.venv/bin/python bench/cutover_bench.py --size-mb 1000 --pairs 3 > /tmp/bench_cutover_1000.md

    --size-mb N     pilot size in MiB, built with the example app's seeder (examples/beer_backend_api)
    --pairs N       alternating rounds (default 3; 1 with --sizes)
    --sizes a,b,..  scaling series (e.g. 250,500,1000,2000): every size in turn, then a table of B's
                    wall time per size and time(2000)/time(1000)
    --rebuild       rebuild the golden pilot even if one of that size exists
    --variants      what to time beside A: ephemeral (B with the default Prefect setup: a temporary
                    server per run), server (B-srv: one `prefect server start` reused, PREFECT_API_URL
                    set), clone (C: `cutover run --strategy clone` against the reused server);
                    default ephemeral,server,clone
    --json PATH     also write every run's raw figures as JSON
    --keep-work     keep the work directory (run logs, manifests)

The markdown report goes to stdout; progress goes to stderr.

What it does:
  * builds the pilot once per size into `bench_golden_<size>` (`python -m beer_app.seed --size-mb`),
    reused while its recorded size matches; before every run the working database `bench_pilot`
    is dropped (sessions terminated) and re-created with `CREATE DATABASE ... TEMPLATE` from it;
  * starts moto's S3 server, the example API on `bench_pilot`, and (variant "server") one Prefect
    server, once for the whole benchmark;
  * times, alternating within each round (A, B, B-srv then B-srv, B, A, ...):
      A      bench/runbook_manual.sh: the runbook's commands, sequential, STEP markers per step;
      B      .venv/bin/cutover run --approved-by bench --confirm-checklist (temporary Prefect server);
      B-srv  the same against the reused Prefect server;
      C      the clone strategy against the reused server (CUTOVER_WRITE_FREEZE=stop-service: its own
             example API under beer_app.servicectl, stopped and started by the run), then a timed
             `cutover rollback` of that run (the swap back);
    for each: wall time, the write-pause window (A: pg_dump start to the end of `psql \\dt`;
    B: the manifest's first backup step start to the end of `validate`; C: the end of `writes-paused`,
    its backend stopped, to the end of `validate`), per-step seconds
    (A: STEP markers; B: manifest.json), and for B the peak RSS of the `cutover` process
    (psutil, every 0.1 s; its whole process tree reported alongside);
  * prints medians, per-step medians, B/A ratios per round (median, min, max), the orchestration
    overhead of B (wall time minus the seconds of its subprocess-backed steps) and the targets.

Everything it starts is stopped at the end; `bench_pilot` and every scratch copy are dropped,
only the `bench_golden_<size>` databases stay. Needs PostgreSQL on POSTGRES_HOST:POSTGRES_PORT
(default 127.0.0.1:5432, user postgres) and pg_dump & co. on PATH.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pg_cutover.launcher.embedded import free_port  # noqa: E402

APP_DIR = REPO / "examples" / "beer_backend_api"
VENV_BIN = Path(sys.executable).parent
CUTOVER = VENV_BIN / "cutover"
PREFECT = VENV_BIN / "prefect"
ALEMBIC = VENV_BIN / "alembic"
MANUAL = REPO / "bench" / "runbook_manual.sh"
PILOT = "bench_pilot"
BUCKET = "bench-cutover"
BASELINE = "0001_baseline"
MIB = 1024 * 1024

# B's steps whose time is a subprocess (pg tools, alembic) plus the work around it: the rest of
# B's wall time (interpreter start, Prefect, preflight, row counts in Python, waiting for the
# mirror, reporting) is what "orchestration overhead" counts.
# B's write-pause checks: the instant one before the backup, the sample's wait (beside the backup),
# the gate before production.
WRITE_CHECKS = ("writes-paused", "writes-sample", "writes-still-paused")
SUBPROCESS_STEPS = (
    "backup-full", "backup-schema", "backup-verify", "scratch-restore", "scratch-migrate",
    "production-stamp", "production-upgrade", "production-current", "validate", "scratch-drop",
    "clone", "clone-migrate", "original-dump", "original-verify", "original-restore-check",
)
SERVICECTL = APP_DIR / "beer_app" / "servicectl.py"
# The rollback's steps that touch the database (the backend's stop and start and its health wait left out).
ROLLBACK_DB_STEPS = ("changes-since-cutover", "swap-back", "verify")
B_WINDOW_START = ("row-counts", "backup-full")
# Phases, to set A's steps beside B's.
PHASES = (
    ("write-pause checks, window check (B only)", (), WRITE_CHECKS + ("window-check",)),
    ("backup (dump, schema, check)", ("dump", "schema", "ls"),
     ("row-counts", "backup-full", "backup-schema", "backup-verify")),
    ("scratch restore", ("createdb", "restore"), ("scratch-restore",)),
    ("scratch alembic", ("scratch-stamp", "scratch-upgrade", "scratch-current"), ("scratch-migrate",)),
    ("off-site copy (B: wait for it)", ("upload",), ("offsite-mirror",)),
    ("production alembic", ("prod-stamp", "prod-upgrade", "prod-current"),
     ("production-stamp", "production-upgrade", "production-current")),
    ("validation", ("curl-root", "curl-docs", "psql-dt"), ("validate",)),
    ("cleanup", ("dropdb",), ("scratch-drop", "offsite-prune")),
    ("C: clone, its parity and upgrade", (), ("clone", "data-parity", "clone-amcheck", "clone-migrate",
                                              "clone-schema-parity")),
    ("C: swap", (), ("swap",)),
    ("C: after the window (dump, verify, restore check, off-site)", (),
     ("original-dump", "original-verify", "original-restore-check", "original-offsite")),
)


def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- PostgreSQL


@dataclass
class Pg:
    host: str
    port: int
    user: str
    password: str | None

    def env(self) -> dict[str, str]:
        env = {"POSTGRES_HOST": self.host, "POSTGRES_PORT": str(self.port), "POSTGRES_USER": self.user}
        if self.password:
            env["POSTGRES_PASSWORD"] = self.password
        return env

    def connect(self, dbname: str = "postgres"):
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=dbname, application_name="cutover_bench")
        conn.autocommit = True
        return conn

    def query(self, sql: str, params: tuple = (), dbname: str = "postgres") -> list[tuple]:
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def execute(self, sql: str, params: tuple = ()) -> None:
        self.query(sql, params)


def golden_name(size_mb: float) -> str:
    return "bench_golden_" + (str(int(size_mb)) if float(size_mb).is_integer() else str(size_mb).replace(".", "_"))


def golden_marker(size_mb: float) -> str:
    return f"pg-cutover bench golden pilot size_mb={float(size_mb):g}"


def ensure_golden(pg: Pg, size_mb: float, rebuild: bool) -> dict:
    """The golden pilot of that size: reused when its comment records the same size, else (re)built."""
    name = golden_name(size_mb)
    rows = pg.query("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (name,))
    if rows and rows[0][0] == golden_marker(size_mb) and not rebuild:
        log(f"reusing golden pilot {name}")
        built_seconds = None
    else:
        log(f"building golden pilot {name} ({size_mb:g} MiB) with beer_app.seed")
        started = time.monotonic()
        env = {**os.environ, **pg.env(), "POSTGRES_DB": name}
        subprocess.run([sys.executable, "-m", "beer_app.seed", "--db", name, "--size-mb", f"{size_mb:g}",
                        "--drop-existing"], cwd=APP_DIR, env=env, check=True, timeout=7200,
                       stdout=sys.stderr)
        pg.execute(f'COMMENT ON DATABASE "{name}" IS %s', (golden_marker(size_mb),))
        built_seconds = time.monotonic() - started
        log(f"built {name} in {built_seconds:.1f}s")
    size = pg.query("SELECT pg_database_size(%s)", (name,))[0][0]
    counts = dict(pg.query("SELECT relname, n_live_tup FROM pg_stat_user_tables ORDER BY relname", dbname=name))
    return {"name": name, "bytes": size, "built_seconds": built_seconds, "rows_estimate": counts}


def drop_bench_databases(pg: Pg) -> None:
    """bench_pilot and everything derived from it (scratch copies, rollback leftovers)."""
    names = [r[0] for r in pg.query(
        "SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s", (PILOT, PILOT + r"\_%"))]
    for name in names:
        pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reset_pilot(pg: Pg, golden: str) -> None:
    drop_bench_databases(pg)
    # FILE_COPY checkpoints around the copy: every run starts with nothing dirty left by the previous one.
    pg.execute(f'CREATE DATABASE "{PILOT}" TEMPLATE "{golden}" STRATEGY = FILE_COPY')
    pg.execute("CHECKPOINT")


# ---------------------------------------------------------------- process monitoring


class RssMonitor:
    """Peak RSS of a process (and of its whole tree), polled every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.1):
        import psutil

        self._psutil = psutil
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.main_peak = 0
        self.tree_peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        psutil = self._psutil
        while not self._stop.is_set():
            try:
                main = self.proc.memory_info().rss
                children = self.proc.children(recursive=True)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                return
            tree = main
            for child in children:
                try:
                    tree += child.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.main_peak = max(self.main_peak, main)
            self.tree_peak = max(self.tree_peak, tree)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


# Where the CPU of a run goes, by process group: on a 2-core machine the run and the services it
# talks to share the cores, so a variant that needs more CPU seconds cannot be faster than its
# share of them allows.
CPU_GROUPS = ("run", "postgres", "s3", "prefect-server", "api")


class CpuMeter:
    """CPU seconds (user + system) spent during a run, per group.

    `run`: the benchmark's waited-for children (the run's process and every descendant it reaped).
    The services: every live process of the group plus the children it reaped (PostgreSQL's
    postmaster reaps its backends, so pg_dump's and pg_restore's backends count once they exit).
    """

    def __init__(self, services: dict[str, int]):
        self.services = services  # group -> pid of its root process (its descendants count too)
        self.before: dict[str, float] = {}
        self.spent: dict[str, float] = {}

    @staticmethod
    def _children_cpu() -> float:
        import resource

        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def _reading(self) -> dict[str, float]:
        import psutil

        reading = {"run": self._children_cpu()}
        for group, pid in self.services.items():
            total = 0.0
            if group == "postgres":  # not ours: every process named postgres
                procs = [pr for pr in psutil.process_iter() if _is_postgres(pr)]
            else:
                try:
                    root = psutil.Process(pid)
                    procs = [root, *root.children(recursive=True)]
                except psutil.Error:
                    procs = []
            for pr in procs:
                try:
                    t = pr.cpu_times()
                    total += t.user + t.system + t.children_user + t.children_system
                except psutil.Error:
                    pass
            reading[group] = total
        return reading

    def __enter__(self) -> Self:
        self.before = self._reading()
        return self

    def __exit__(self, *exc) -> None:
        after = self._reading()
        self.spent = {g: round(max(0.0, after[g] - self.before.get(g, 0.0)), 2) for g in after}


def listener_pid(url: str) -> int:
    """The pid of the process listening on the URL's port (0 when none is found)."""
    from urllib.parse import urlsplit

    import psutil

    port = urlsplit(url).port
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            proc = psutil.Process(c.pid)
            # Up to the process this benchmark started: a server's launcher and workers count together.
            while (parent := proc.parent()) is not None and parent.pid != os.getpid() and parent.pid != 1:
                proc = parent
            return proc.pid
    return 0


def _is_postgres(pr) -> bool:
    try:
        return pr.name() == "postgres"
    except Exception:
        return False


def wait_or_end(proc: subprocess.Popen) -> int:
    """The run's exit code; if the benchmark itself is stopped meanwhile, the run's whole session goes too."""
    try:
        return proc.wait(timeout=4 * 3600)
    except BaseException:
        end_session(proc)
        raise


def stop_on_sigterm() -> None:
    """SIGTERM (a timeout, a CI kill) unwinds like Ctrl-C: moto, the API and the Prefect server are stopped."""
    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def end_session(proc: subprocess.Popen) -> None:
    """Stop whatever is left in the session we started `proc` in (its own id as process group)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    time.sleep(0.5)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------- the runs


@dataclass
class Run:
    kind: str  # A | B | B-srv | C
    round: int
    ok: bool
    wall: float
    window: float | None = None
    steps: dict[str, float] = field(default_factory=dict)
    rss_main_mb: float | None = None
    rss_tree_mb: float | None = None
    dump_bytes: int | None = None
    overhead: float | None = None  # wall - subprocess-backed steps
    unrecorded: float | None = None  # wall - every recorded step
    startup: float | None = None  # process start -> first step start
    gaps: float | None = None  # between recorded steps
    tail: float | None = None  # last step end -> process exit
    upload_seconds: float | None = None
    window_from_check: float | None = None  # B: from the `writes-paused` check's start, when the flow has it
    phases: dict[str, float] = field(default_factory=dict)  # B: where the time outside subprocess steps goes
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per group (CpuMeter)
    code: str = ""  # fingerprint of pg_cutover/, flows/, tasks/ when the run started
    rollback_db: float | None = None  # C: the swap back's database steps (ROLLBACK_DB_STEPS), seconds
    rollback_wall: float | None = None  # C: the whole `cutover rollback` process
    error: str | None = None


@dataclass
class Context:
    pg: Pg
    golden: str
    s3_url: str
    api_url: str
    work: Path
    prefect_homes: dict[str, Path]
    prefect_api_url: str | None
    services: dict[str, int] = field(default_factory=dict)  # CpuMeter groups -> root pid
    counter: int = 0

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and not k.startswith("CUTOVER_")}
        env.update(self.pg.env())
        env["POSTGRES_DB"] = PILOT
        return env

    def next_dir(self, kind: str) -> Path:
        self.counter += 1
        path = self.work / f"run{self.counter:02d}_{kind}"
        path.mkdir()
        return path


def tail_of(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_manual(ctx: Context, rnd: int) -> Run:
    run_dir = ctx.next_dir("A")
    backup_dir = run_dir / "backup"
    backup_dir.mkdir(mode=0o700)
    env = {
        **ctx.base_env(),
        "BASELINE_REV": BASELINE,
        "BACKUP_DIR": str(backup_dir),
        "APP_DIR": str(APP_DIR),
        "ALEMBIC": str(ALEMBIC),
        "PYTHON": sys.executable,
        "API_URL": ctx.api_url,
        "S3_ENDPOINT_URL": ctx.s3_url,
        "S3_BUCKET": BUCKET,
    }
    out = run_dir / "output.log"
    with open(out, "wb") as fh:
        started = time.monotonic()
        with CpuMeter(ctx.services) as cpu:
            proc = subprocess.Popen(["bash", str(MANUAL)], env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=REPO, start_new_session=True)
            rc = wait_or_end(proc)
            wall = time.monotonic() - started
    end_session(proc)
    marks = [(m.group(1), float(m.group(2)))
             for m in re.finditer(r"^STEP (\S+) ([0-9.]+)$", out.read_text(errors="replace"), re.MULTILINE)]
    steps = {name: t2 - t1 for (name, t1), (_, t2) in itertools.pairwise(marks)}
    at = dict(marks)
    dumps = list(backup_dir.glob("*.dump"))
    run = Run("A", rnd, ok=rc == 0 and "end" in at, wall=wall, steps=steps,
              dump_bytes=dumps[0].stat().st_size if dumps else None, cpu=cpu.spent)
    if run.ok:
        run.window = at["upload"] - at["dump"]
    else:
        run.error = f"exit {rc}: {tail_of(out)}"
    return run


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


_LOG_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) \| \w+\s*\| (.*)$", re.MULTILINE)


def log_milestones(text: str, t0: float) -> dict[str, float]:
    """Epoch times of Prefect's console lines that mark the phases of a run (local wall clock)."""
    day = datetime.fromtimestamp(t0).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    found: dict[str, float] = {}
    for m in _LOG_LINE.finditer(text):
        when = day + int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3)) + int(m.group(4)) / 1000
        if when < t0 - 60:  # past midnight
            when += 86400
        msg = m.group(5)
        found.setdefault("first_log", when)
        if "Starting temporary server" in msg:
            found.setdefault("server_starting", when)
        elif "Beginning flow run" in msg:
            found.setdefault("flow_begin", when)
        elif msg.startswith("Flow run") and "Finished in state" in msg:
            found["flow_end"] = when
        elif "Stopping temporary server" in msg:
            found["server_stopping"] = when
    return found


KIND = {"ephemeral": "B", "server": "B-srv", "clone": "C"}


def run_cutover(ctx: Context, rnd: int, variant: str) -> Run:
    kind = KIND[variant]
    run_dir = ctx.next_dir(kind)
    backup_dir = run_dir / "backups"
    env = {
        **ctx.base_env(),
        "BASELINE_REV": BASELINE,
        "CUTOVER_ALEMBIC_DIR": str(APP_DIR),
        "CUTOVER_BACKUP_DIR": str(backup_dir),
        "CUTOVER_HEALTH_URL": ctx.api_url,
        "CUTOVER_S3_BUCKET": BUCKET,
        "CUTOVER_S3_ENDPOINT_URL": ctx.s3_url,
        "PREFECT_HOME": str(ctx.prefect_homes[variant]),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    if variant in ("server", "clone") and ctx.prefect_api_url:
        env["PREFECT_API_URL"] = ctx.prefect_api_url
    argv = [str(CUTOVER), "run", "--approved-by", "bench", "--confirm-checklist"]
    if variant == "clone":
        # A clone needs no session on the database: the run stops its own backend, and starts it again.
        port = free_port()
        ctl = f"{sys.executable} {SERVICECTL} {{}} --pidfile {run_dir / 'api.pid'} --port {port}"
        env.update({"CUTOVER_STRATEGY": "clone", "CUTOVER_WRITE_FREEZE": "stop-service",
                    "CUTOVER_SERVICE_START": ctl.format("start") + f" --log {run_dir / 'api.log'}",
                    "CUTOVER_SERVICE_STOP": ctl.format("stop"), "CUTOVER_SERVICE_STATUS": ctl.format("status"),
                    "CUTOVER_HEALTH_URL": f"http://127.0.0.1:{port}"})
        subprocess.run(env["CUTOVER_SERVICE_START"].split(), env=env, check=True, timeout=120,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = run_dir / "output.log"
    with open(out, "wb") as fh:
        t0 = time.time()
        started = time.monotonic()
        with CpuMeter(ctx.services) as cpu:
            proc = subprocess.Popen(argv,
                                    env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=run_dir, start_new_session=True)
            with RssMonitor(proc.pid) as mon:
                rc = wait_or_end(proc)
            wall = time.monotonic() - started
        t1 = t0 + wall
    end_session(proc)
    run = Run(kind, rnd, ok=rc == 0, wall=wall, rss_main_mb=mon.main_peak / MIB, rss_tree_mb=mon.tree_peak / MIB,
              cpu=cpu.spent)
    manifests = sorted(backup_dir.glob("*/*/manifest.json"))
    if not manifests:
        run.ok = False
        run.error = f"exit {rc}, no manifest: {tail_of(out)}"
        return run
    manifest = json.loads(manifests[-1].read_text())
    if manifest.get("status") != "succeeded":
        run.ok = False
        run.error = f"exit {rc}, manifest status {manifest.get('status')}: {tail_of(out)}"
    steps = [s for s in manifest.get("steps", []) if s.get("seconds") is not None]
    run.steps = {s["name"]: s["seconds"] for s in steps}
    if manifest.get("backup"):
        run.dump_bytes = manifest["backup"].get("size_bytes")
    if manifest.get("offsite"):
        run.upload_seconds = manifest["offsite"].get("seconds")
    by_name = {s["name"]: s for s in steps}
    first = next((by_name[n] for n in B_WINDOW_START if n in by_name), None)
    if kind == "C" and "writes-paused" in by_name and "validate" in by_name:
        # From the moment the backend is stopped (its stop command returned) and writes are checked paused.
        run.window = _ts(by_name["validate"]["ended_at"]) - _ts(by_name["writes-paused"]["ended_at"])
    elif first and "validate" in by_name:
        run.window = _ts(by_name["validate"]["ended_at"]) - _ts(first["started_at"])
        if "writes-paused" in by_name:
            run.window_from_check = _ts(by_name["validate"]["ended_at"]) - _ts(by_name["writes-paused"]["started_at"])
    if steps:
        run.overhead = wall - sum(run.steps.get(n, 0.0) for n in SUBPROCESS_STEPS)
        run.unrecorded = wall - sum(run.steps.values())
        starts = [_ts(s["started_at"]) for s in steps]
        ends = [_ts(s["ended_at"]) for s in steps]
        run.startup = min(starts) - t0
        run.tail = t1 - max(ends)
        run.gaps = run.unrecorded - run.startup - run.tail
        marks = log_milestones(out.read_text(errors="replace"), t0)
        if "flow_begin" in marks:
            server = marks["flow_begin"] - marks["server_starting"] if "server_starting" in marks else 0.0
            ph = run.phases
            ph["process start to flow run start (interpreter, imports, settings, flow run creation)"] = (
                marks["flow_begin"] - t0 - server)
            ph["temporary Prefect server start"] = server
            ph["flow run start to first step (window, preflight, approval, manifest)"] = min(starts) - marks["flow_begin"]
            writes = sum(run.steps.get(n, 0.0) for n in WRITE_CHECKS)
            ph["write-pause steps (`writes-paused`, waiting for `writes-sample`, `writes-still-paused`)"] = writes
            ph["other recorded steps without a subprocess (row-counts, mirror wait, checks; see the step table)"] = (
                sum(run.steps.values()) - sum(run.steps.get(n, 0.0) for n in SUBPROCESS_STEPS) - writes)
            ph["between recorded steps (task orchestration, manifest saves, artifacts)"] = run.gaps
            end = marks.get("flow_end", t1)
            ph["last step end to flow run end (report, artifacts)"] = end - max(ends)
            ph["flow run end to process exit (server stop, teardown)"] = t1 - end
    if variant == "clone":
        if run.ok:
            time_rollback(run, env, manifests[-1], run_dir)
        subprocess.run(env["CUTOVER_SERVICE_STOP"].split(), env=env, timeout=120, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    return run


def time_rollback(run: Run, env: dict[str, str], manifest: Path, run_dir: Path) -> None:
    """C's rollback after its swap, by hand: the original gets its name back."""
    with open(run_dir / "rollback.log", "wb") as fh:
        started = time.monotonic()
        rc = subprocess.run([str(CUTOVER), "rollback", "--manifest", str(manifest)], env=env, stdout=fh,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=run_dir, timeout=3600).returncode
        run.rollback_wall = time.monotonic() - started
    rolled = json.loads(manifest.read_text()).get("rollback") or {}
    if rc != 0 or rolled.get("status") != "restored":
        run.ok, run.error = False, f"rollback exit {rc}, status {rolled.get('status')}: {tail_of(run_dir / 'rollback.log')}"
        return
    run.rollback_db = sum(s["seconds"] or 0.0 for s in rolled.get("steps", []) if s["name"] in ROLLBACK_DB_STEPS)


def after_run(ctx: Context, s3) -> None:
    """Leave nothing behind between runs: off-site objects (moto keeps them), backups, scratch copies."""
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in page.get("Contents", [])]
    for i in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
    # Backups go (a dump per run adds up); manifests and reports were copied out by keep_evidence.
    for path in ctx.work.glob("run*/backup*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def keep_evidence(run_dir: Path) -> None:
    for manifest in run_dir.glob("backups/*/*/manifest.json"):
        shutil.copy2(manifest, run_dir / "manifest.json")
    for report in run_dir.glob("backups/*/*/report.md"):
        shutil.copy2(report, run_dir / "report.md")


# ---------------------------------------------------------------- services


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group, a grace period, then whatever is left is killed."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        pass
    end_session(proc)


def start_prefect_server(stack: ExitStack, home: Path, work: Path) -> str:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    log_file = stack.enter_context(open(work / "prefect-server.log", "wb"))  # noqa: SIM115 (lives as long as the stack)
    proc = subprocess.Popen([str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    stack.callback(stop_server, proc)
    import httpx

    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}: {tail_of(work / 'prefect-server.log')}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("prefect server did not answer within 120 s")
        time.sleep(0.5)


WARMUP = """
from prefect import flow
@flow(name="bench-warmup")
def warmup():
    return 1
warmup()
"""


def warm_up(home: Path, api_url: str | None) -> None:
    """One trivial flow run, untimed: the first run in a PREFECT_HOME creates its database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    if api_url:
        env["PREFECT_API_URL"] = api_url
    subprocess.run([sys.executable, "-c", WARMUP], env=env, check=True, timeout=300,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------- report


def machine_info(pg: Pg) -> str:
    import psutil

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    version = pg.query("SHOW server_version")[0][0]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} cores ({model or platform.processor()}), "
            f"{psutil.virtual_memory().total / 1024 ** 3:.1f} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, PostgreSQL {version} (local, 127.0.0.1), "
            f"load average at start {load}")


class LoadSampler:
    """The 1-minute load average every few seconds while the benchmark runs: a shared machine is visible in it."""

    def __init__(self, interval: float = 5.0):
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self.interval)

    def summary(self) -> str:
        if not self.samples:
            return ""
        values = sorted(self.samples)
        cores = os.cpu_count() or 1
        busy = statistics.median(values) > 1.0 + 0.25 * cores  # more than this benchmark's own share
        return (f"Load average (1 min) during the runs: min {values[0]:.2f}, median {statistics.median(values):.2f}, "
                f"max {values[-1]:.2f} on {cores} cores"
                + ("; above this benchmark's usual share, so other work may have been running (the run's own "
                   "PostgreSQL, moto, Prefect and API processes count too): the per-round ratios are the "
                   "figures to read." if busy else "."))


LOAD = LoadSampler()


def code_fingerprint() -> str:
    """SHA-256 (12 hex) of the Python sources a cutover run executes: other people edit them meanwhile."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for d in ("pg_cutover", "flows", "tasks") for p in (REPO / d).rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode())
        try:
            digest.update(path.read_bytes())
        except OSError:
            pass
    return digest.hexdigest()[:12]


def code_state() -> str:
    """Which code was measured: the commit, and whether the working tree had uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "pg_cutover", "flows", "tasks"], check=False, cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    if not dirty:
        return f"commit {head}, clean"
    return (f"commit {head} plus uncommitted changes in {len(dirty)} file(s) of pg_cutover/, flows/, tasks/ "
            "(the working tree as it was during the run)")


def human(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 1024 ** 3), ("MiB", MIB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def med(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def runs_list(values) -> str:
    return ", ".join(fmt(v, 1) for v in values)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**NOT met**")


def ratios(runs: list[Run], kind: str, attr: str) -> list[float]:
    out = []
    for rnd in sorted({r.round for r in runs}):
        a = next((r for r in runs if r.round == rnd and r.kind == "A" and r.ok), None)
        b = next((r for r in runs if r.round == rnd and r.kind == kind and r.ok), None)
        if a and b and getattr(a, attr) and getattr(b, attr) is not None:
            out.append(getattr(b, attr) / getattr(a, attr))
    return out


def report(size_mb: float, golden: dict, runs: list[Run], kinds: list[str], command: str, machine: str,
           order: list[str]) -> tuple[str, dict]:
    lines: list[str] = []
    p = lines.append
    ok = {k: [r for r in runs if r.kind == k and r.ok] for k in ["A", *kinds]}
    label = {"A": "A: runbook by hand", "B": "B: cutover run (temporary Prefect server)",
             "B-srv": "B-srv: cutover run (reused Prefect server)",
             "C": "C: cutover run --strategy clone (reused Prefect server)"}
    rounds = len({r.round for r in runs})
    dumps = [r.dump_bytes for r in runs if r.dump_bytes]
    p(f"## Cutover benchmark: runbook by hand vs `cutover run`, {size_mb:g} MiB pilot "
      f"({datetime.now(UTC):%Y-%m-%d})\n")
    p(f"Machine: {machine}. Other work may be running on this machine; the alternating order "
      f"spreads its effect over A and B. {LOAD.summary()}\n")
    p(f"Command: `{command}`\n")
    codes = list(dict.fromkeys(r.code for r in runs if r.kind != "A"))
    p(f"Code: {code_state()}; source fingerprint (SHA-256 of pg_cutover/, flows/, tasks/ *.py) "
      f"`{codes[0] if len(codes) == 1 else ', '.join(codes) or '-'}`\n")
    if len(codes) > 1:
        p("**The cutover code changed during this benchmark** (others were editing it): "
          + "; ".join(f"{r.kind} round {r.round + 1}: `{r.code}`" for r in runs if r.kind != "A")
          + ". Medians mix these versions.\n")
    p(f"Pilot: `{golden['name']}` ({golden['bytes'] / MIB:.0f} MiB on disk, ~{golden['rows_estimate'].get('reviews', 0):,} "
      f"reviews), copied to `{PILOT}` before every run; dump (-Fc) {human(med(dumps))}. "
      f"S3: moto server on loopback; API: the example app under uvicorn. {rounds} round(s), order per round "
      f"alternating: {' / '.join(order)}.\n")
    failed = [r for r in runs if not r.ok]
    if failed:
        p(f"**{len(failed)} run(s) failed and are left out of the figures:** "
          + "; ".join(f"{r.kind} round {r.round + 1}" for r in failed) + "\n")

    p("| | " + " | ".join(label[k] for k in ["A", *kinds]) + " |")
    p("|---|" + "---:|" * (1 + len(kinds)))
    p("| wall time, median s | " + " | ".join(fmt(med(r.wall for r in ok[k])) for k in ["A", *kinds]) + " |")
    p("| wall time, runs s | " + " | ".join(runs_list(r.wall for r in ok[k]) for k in ["A", *kinds]) + " |")
    p("| write-pause window, median s | " + " | ".join(fmt(med(r.window for r in ok[k])) for k in ["A", *kinds]) + " |")
    p("| write-pause window, runs s | " + " | ".join(runs_list(r.window for r in ok[k]) for k in ["A", *kinds]) + " |")
    if any(r.window_from_check is not None for k in kinds for r in ok[k]):
        p("| window from the start of B's `writes-paused` check, median s | - | "
          + " | ".join(fmt(med(r.window_from_check for r in ok[k])) for k in kinds) + " |")
    p("| peak RSS of the `cutover` process, MB (max of runs) | - | "
      + " | ".join(fmt(max((r.rss_main_mb for r in ok[k]), default=None), 0) for k in kinds) + " |")
    p("| peak RSS of its process tree, MB (max of runs) | - | "
      + " | ".join(fmt(max((r.rss_tree_mb for r in ok[k]), default=None), 0) for k in kinds) + " |")
    if "C" in kinds:
        p("| rollback after the swap: its database steps (changes-since-cutover, swap-back, verify), median s | - | "
          + " | ".join(fmt(med(r.rollback_db for r in ok[k])) if k == "C" else "-" for k in kinds) + " |")
        p("| rollback after the swap: the whole `cutover rollback` process, median s | - | "
          + " | ".join(fmt(med(r.rollback_wall for r in ok[k])) if k == "C" else "-" for k in kinds) + " |")
    p("")
    p("A's window is pg_dump's start to the end of `psql \\dt` (its S3 upload comes after, outside the window); "
      "B's is the manifest's first backup step (`row-counts`) start to the end of `validate`, and includes "
      "waiting for the off-site copy to be proven, which B requires before touching production. C's is the "
      "end of `writes-paused` (its backend stopped, writes checked paused) to the end of `validate`; its dump, restore check "
      "and off-site copy come after, with the backend serving, and count in its wall time only.\n")

    cores = os.cpu_count() or 1
    if any(r.cpu for r in runs):
        names = {"run": "the run's own processes (and every child it waited for)", "postgres": "PostgreSQL (backends, checkpointer, WAL writer)",
                 "s3": "S3 server (moto)", "prefect-server": "Prefect server (reused; B's temporary one is in the run's own)",
                 "api": "example API (uvicorn)"}
        p(f"CPU seconds (user + system) spent during each run, median per group; the machine has {cores} cores, "
          f"so a run of wall time W can use at most {cores}·W:\n")
        p("| CPU s, median | " + " | ".join(k for k in ["A", *kinds]) + " |")
        p("|---|" + "---:|" * (1 + len(kinds)))
        for group in CPU_GROUPS:
            p(f"| {names[group]} | " + " | ".join(fmt(med(r.cpu.get(group) for r in ok[k] if r.cpu)) for k in ["A", *kinds]) + " |")
        p("| **total** | " + " | ".join(fmt(med(sum(r.cpu.values()) for r in ok[k] if r.cpu)) for k in ["A", *kinds]) + " |")
        p(f"| total / ({cores} × wall) | " + " | ".join(
            fmt(med(sum(r.cpu.values()) / (cores * r.wall) for r in ok[k] if r.cpu)) for k in ["A", *kinds]) + " |")
        p("")

    summary: dict = {"size_mb": size_mb}
    is_1gb = 900 <= size_mb <= 1100
    small = size_mb <= 50
    p("| ratio (per round, then median) | median | min | max | target | verdict |")
    p("|---|---:|---:|---:|---|---|")
    for k in kinds:
        for attr, what in (("wall", "wall time"), ("window", "write-pause window")):
            rs = ratios(runs, k, attr)
            m = med(rs)
            summary[f"{k}/A {attr}"] = m
            limit = (0.3 if attr == "window" else 1.0) if k == "C" else 0.6
            target = f"<= {limit:g} on the 1 GB pilot"
            v = (m <= limit) if (is_1gb and m is not None) else None
            p(f"| {what} {k}/A | {fmt(m)} | {fmt(min(rs) if rs else None)} | {fmt(max(rs) if rs else None)} | "
              f"{target} | {verdict(v)} |")
    p("")

    p("Orchestration overhead of B = wall time minus the seconds of its subprocess-backed steps "
      f"({', '.join(f'`{n}`' for n in SUBPROCESS_STEPS)}); the second table says where it goes "
      "(phases from the manifest's step times and Prefect's console log lines).\n")
    p("| variant | wall s | subprocess-backed steps s | **overhead s** | target | verdict |")
    p("|---|---:|---:|---:|---|---|")
    for k in kinds:
        rs = ok[k]
        overhead = med(r.overhead for r in rs)
        summary[f"{k} overhead"] = overhead
        v = (overhead <= 3.0) if (small and overhead is not None) else None
        p(f"| {k} | {fmt(med(r.wall for r in rs))} | "
          f"{fmt(med(r.wall - r.overhead for r in rs if r.overhead is not None))} | **{fmt(overhead)}** | "
          f"<= 3 s on a few-MB pilot | {verdict(v)} |")
    p("")
    phase_names = list(dict.fromkeys(n for k in kinds for r in ok[k] for n in r.phases))
    if phase_names:
        p("| overhead, median s | " + " | ".join(kinds) + " |")
        p("|---|" + "---:|" * len(kinds))
        for name in phase_names:
            p(f"| {name} | " + " | ".join(fmt(med(r.phases.get(name) for r in ok[k])) for k in kinds) + " |")
        p("")

    rss = max((r.rss_main_mb for k in kinds for r in ok[k] if r.rss_main_mb), default=None)
    summary["rss"] = rss

    p("Per step, median seconds (A: STEP markers of bench/runbook_manual.sh; B: manifest.json `seconds`):\n")
    p("| phase | A steps | A s | B steps | " + " | ".join(f"{k} s" for k in kinds) + " |")
    p("|---|---|---:|---|" + "---:|" * len(kinds))
    for phase, a_steps, b_steps in PHASES:
        a_val = med(sum(r.steps.get(s, 0.0) for s in a_steps) for r in ok["A"]) if a_steps else None
        b_vals = [med(sum(r.steps.get(s, 0.0) for s in b_steps) for r in ok[k]) for k in kinds]
        p(f"| {phase} | {', '.join(a_steps) or '-'} | {fmt(a_val)} | {', '.join(b_steps)} | "
          + " | ".join(fmt(v) for v in b_vals) + " |")
    phased = {n for _, _, b_steps in PHASES for n in b_steps}
    others = list(dict.fromkeys(n for k in kinds for r in ok[k] for n in r.steps if n not in phased))
    if others:
        b_vals = [med(sum(r.steps.get(s, 0.0) for s in others) for r in ok[k]) for k in kinds]
        p(f"| other checks (B only) | - | - | {', '.join(others)} | " + " | ".join(fmt(v) for v in b_vals) + " |")
    p("| not in a step | - | - | startup, gaps, tail | "
      + " | ".join(fmt(med(r.unrecorded for r in ok[k])) for k in kinds) + " |")
    p(f"| **total (wall)** | | **{fmt(med(r.wall for r in ok['A']))}** | | "
      + " | ".join(f"**{fmt(med(r.wall for r in ok[k]))}**" for k in kinds) + " |")
    p("")
    uploads = [r.upload_seconds for k in kinds for r in ok[k] if r.upload_seconds is not None]
    if uploads:
        p(f"B's off-site upload (manifest `offsite.seconds`, runs beside `scratch-restore` and `scratch-migrate`): "
          f"median {fmt(med(uploads))} s; A's upload (after validation): median "
          f"{fmt(med(r.steps.get('upload') for r in ok['A']))} s.\n")

    detail_names = list(dict.fromkeys(n for k in ["A", *kinds] for r in ok[k] for n in r.steps))
    p("<details><summary>Every step, median s</summary>\n")
    p("| step | " + " | ".join(["A", *kinds]) + " |")
    p("|---|" + "---:|" * (1 + len(kinds)))
    for name in detail_names:
        vals = [med(r.steps.get(name) for r in ok[k]) for k in ["A", *kinds]]
        p(f"| {name} | " + " | ".join(fmt(v, 3) for v in vals) + " |")
    p("\n</details>\n")

    p("Targets:\n")
    if "C" in kinds and ok["C"]:
        # C close to its limit: the window against what no strategy of this kind can avoid, in the same run.
        limits = [r.window / (r.steps.get("clone", 0.0) + r.steps.get("clone-migrate", 0.0))
                  for r in ok["C"] if r.window and r.steps.get("clone")]
        summary["C window/limit"] = med(limits)
        rb = max((r.rollback_db for r in ok["C"] if r.rollback_db is not None), default=None)
        summary["C rollback"] = rb
        w, win = summary.get("C/A wall"), summary.get("C/A window")
        p(f"- C: window C/A <= 0.3 on the 1 GB pilot: {verdict((win <= 0.3) if is_1gb and win is not None else None)} "
          f"({fmt(win)}); wall C/A <= 1.0 on the 1 GB pilot (the work after the window included): "
          f"{verdict((w <= 1.0) if is_1gb and w is not None else None)} ({fmt(w)})")
        p(f"- C: window <= 1.3 x (`clone` + `clone-migrate`, the same run's): "
          f"{verdict(summary['C window/limit'] <= 1.3 if summary['C window/limit'] is not None else None)} "
          f"(median {fmt(summary['C window/limit'])}x)")
        p(f"- C: rollback after the swap (its database steps) <= 2 s: {verdict(rb <= 2 if rb is not None else None)} "
          f"(max {fmt(rb)} s)")
    for k in [k for k in kinds if k != "C"]:
        w, win = summary.get(f"{k}/A wall"), summary.get(f"{k}/A window")
        p(f"- {k}: wall B/A <= 0.6 on the 1 GB pilot: "
          f"{verdict((w <= 0.6) if is_1gb and w is not None else None)} ({fmt(w)}); "
          f"window B/A <= 0.6 on the 1 GB pilot: {verdict((win <= 0.6) if is_1gb and win is not None else None)} "
          f"({fmt(win)}); overhead <= 3 s on a few-MB pilot: "
          f"{verdict((summary[f'{k} overhead'] <= 3) if small and summary[f'{k} overhead'] is not None else None)} "
          f"({fmt(summary[f'{k} overhead'])} s)")
    p(f"- peak RSS of the `cutover` process <= 300 MB: {verdict(rss <= 300 if rss is not None else None)} "
      f"({fmt(rss, 0)} MB)")
    if not is_1gb:
        p("- (the B/A ratio targets are defined for the 1 GB pilot: n/a at this size)")
    if not small:
        p("- (the overhead target is defined for a few-MB pilot: n/a at this size)")
    p("")
    return "\n".join(lines), summary


# ---------------------------------------------------------------- main


def bench_size(ctx_base: dict, size_mb: float, pairs: int, variants: list[str], rebuild: bool,
               stack_work: Path, s3) -> tuple[dict, list[Run], list[str]]:
    pg: Pg = ctx_base["pg"]
    golden = ensure_golden(pg, size_mb, rebuild)
    ctx = Context(pg=pg, golden=golden["name"], s3_url=ctx_base["s3_url"], api_url=ctx_base["api_url"],
                  work=stack_work / golden["name"], prefect_homes=ctx_base["homes"],
                  prefect_api_url=ctx_base["prefect_api_url"], services=ctx_base["services"])
    ctx.work.mkdir(exist_ok=True)
    kinds_order = ["A", *(KIND[v] for v in variants)]
    runs: list[Run] = []
    for rnd in range(pairs):
        order = kinds_order if rnd % 2 == 0 else list(reversed(kinds_order))
        for kind in order:
            reset_pilot(pg, golden["name"])
            log(f"{golden['name']} round {rnd + 1}/{pairs}: {kind}")
            code = code_fingerprint()
            if kind == "A":
                run = run_manual(ctx, rnd)
            else:
                run = run_cutover(ctx, rnd, {k: v for v, k in KIND.items()}[kind])
            run.code = code
            keep_evidence(ctx.work / f"run{ctx.counter:02d}_{kind}")
            after_run(ctx, s3)
            drop_bench_databases(pg)
            log(f"  {kind}: {'ok' if run.ok else 'FAILED'} wall {run.wall:.1f}s window {fmt(run.window)}s"
                + (f" overhead {fmt(run.overhead)}s rss {fmt(run.rss_main_mb, 0)}MB" if kind != "A" else ""))
            if not run.ok:
                log(f"  {run.error}")
            runs.append(run)
    order_desc = [", ".join(kinds_order), ", ".join(reversed(kinds_order))][: min(pairs, 2)]
    return golden, runs, order_desc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=1000)
    parser.add_argument("--sizes", help="comma-separated sizes in MiB: the scaling series")
    parser.add_argument("--pairs", type=int, help="rounds (default 3, or 1 with --sizes)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the golden pilot(s)")
    parser.add_argument("--variants", default="ephemeral,server,clone",
                        help="ephemeral (B: temporary Prefect server per run), server (B-srv: reused), "
                             "clone (C: the clone strategy, reused server)")
    parser.add_argument("--json", type=Path, help="write raw results here")
    parser.add_argument("--keep-work", action="store_true", help="keep logs and manifests (printed path)")
    args = parser.parse_args()
    stop_on_sigterm()

    sizes = [float(s) for s in args.sizes.split(",")] if args.sizes else [args.size_mb]
    pairs = args.pairs or (1 if args.sizes else 3)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or set(variants) - set(KIND):
        parser.error("--variants takes ephemeral, server and/or clone")
    kinds = [KIND[v] for v in variants]
    command = "/work/main/.venv/bin/python bench/cutover_bench.py " + " ".join(sys.argv[1:])

    import boto3

    from pg_cutover.launcher.embedded import example_api, s3_server

    pg = Pg(os.environ.get("POSTGRES_HOST", "127.0.0.1"), int(os.environ.get("POSTGRES_PORT", "5432")),
            os.environ.get("POSTGRES_USER", "postgres"), os.environ.get("POSTGRES_PASSWORD") or None)
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    machine = machine_info(pg)
    LOAD.start()
    work = Path(tempfile.mkdtemp(prefix="cutover_bench_"))
    sections: list[str] = []
    all_runs: dict[str, list[dict]] = {}
    scaling: list[tuple[float, dict, list[Run]]] = []
    try:
        with ExitStack() as stack:
            # The API is started on bench_pilot, which must exist for it to answer.
            first_golden = ensure_golden(pg, sizes[0], args.rebuild)
            reset_pilot(pg, first_golden["name"])
            reused = "server" in variants or "clone" in variants
            log("starting moto S3, the example API" + (" and a Prefect server" if reused else ""))
            s3_url = stack.enter_context(s3_server(log_path=work / "s3.log"))
            api_url = stack.enter_context(example_api(pg.env(), PILOT, log_path=work / "api.log"))
            s3 = boto3.client("s3", endpoint_url=s3_url)
            s3.create_bucket(Bucket=BUCKET)
            homes = {v: work / f"prefect-home-{v}" for v in variants}
            for home in homes.values():
                home.mkdir()
            prefect_api_url = start_prefect_server(stack, homes.get("server") or homes["clone"], work) if reused \
                else None
            log("warming up the Prefect home(s) with one trivial flow run (untimed)")
            for v in variants:
                warm_up(homes[v], prefect_api_url if v in ("server", "clone") else None)
            services = {"postgres": 0, "s3": listener_pid(s3_url), "api": listener_pid(api_url)}
            if prefect_api_url:
                services["prefect-server"] = listener_pid(prefect_api_url)
            base = {"pg": pg, "s3_url": s3_url, "api_url": api_url, "homes": homes, "prefect_api_url": prefect_api_url,
                    "services": services}
            for i, size in enumerate(sizes):
                golden, runs, order = bench_size(base, size, pairs, variants, args.rebuild and i > 0, work, s3)
                text, summary = report(size, golden, runs, kinds, command, machine, order)
                sections.append(text)
                scaling.append((size, summary, runs))
                all_runs[golden["name"]] = [asdict(r) for r in runs]
                if len(sizes) > 1:
                    print(text, flush=True)
    finally:
        drop_bench_databases(pg)
        if args.keep_work:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    if len(sizes) == 1:
        print(sections[0])
    else:
        print(f"## Scaling: `cutover run` wall time per pilot size ({datetime.now(UTC):%Y-%m-%d})\n")
        print(f"Machine: {machine}.\n\nCommand: `{command}`\n")
        print("| size MiB | A wall s | " + " | ".join(f"{k} wall s | {k} window s | {k}/A wall" for k in kinds) + " |")
        print("|---:|---:|" + "---:|---:|---:|" * len(kinds))
        walls: dict[str, dict[float, float]] = {k: {} for k in kinds}
        for size, summary, runs in scaling:
            okr = [r for r in runs if r.ok]
            cells = [fmt(med(r.wall for r in okr if r.kind == "A"))]
            for k in kinds:
                w = med(r.wall for r in okr if r.kind == k)
                if w is not None:
                    walls[k][size] = w
                cells += [fmt(w), fmt(med(r.window for r in okr if r.kind == k)), fmt(summary.get(f"{k}/A wall"))]
            print(f"| {size:g} | " + " | ".join(cells) + " |")
        print()
        if "C" in kinds:
            windows = {size: med(r.window for r in runs if r.ok and r.kind == "C") for size, _, runs in scaling}
            windows = {size: w for size, w in windows.items() if w}
            if len(windows) > 1:
                first = min(windows)
                worst = max(windows[size] / windows[first] / (size / first) for size in windows if size != first)
                print(f"- C: window(size)/window({first:g} MiB) against size/{first:g} MiB, worst: {worst:.2f} "
                      f"(<= 1.0: the window grows no faster than the data): {verdict(worst <= 1.0)}")
            big = max(windows, default=None)
            if big is not None and big >= 4000:
                ratio = next((s.get("C/A window") for size, s, _ in scaling if size == big), None)
                print(f"- C: window C/A at {big:g} MiB <= 0.3: {verdict(ratio <= 0.3 if ratio is not None else None)} "
                      f"({fmt(ratio)})")
        for k in kinds:
            if 2000 in walls[k] and 1000 in walls[k]:
                print(f"- {k}: time(2 GB)/time(1 GB) = {walls[k][2000] / walls[k][1000]:.2f} "
                      "(2.0 would be linear)")
            else:
                print(f"- {k}: time(2 GB)/time(1 GB): n/a (needs sizes 1000 and 2000)")
    if args.json:
        args.json.write_text(json.dumps(all_runs, indent=2))
    return 0 if all(r["ok"] for rs in all_runs.values() for r in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
