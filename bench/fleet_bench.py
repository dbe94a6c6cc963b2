"""How long a fleet of N databases takes against one: `cutover fleet` through a real Prefect server
and process workers, on the machine's PostgreSQL (POSTGRES_HOST/PORT/USER, default 127.0.0.1:5432).

    .venv/bin/python bench/fleet_bench.py --targets 5 --workers 2 --per-host-limit 2 --reviews 20000

Builds N+1 legacy pilots with the example app's seeder, runs a fleet of one, then a fleet of N,
and prints a markdown table for BENCHMARKS.md. Every pilot is dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "examples" / "beer_backend_api")]

from pg_cutover.launcher.embedded import EXAMPLE_APP_DIR, free_port  # noqa: E402
from pg_cutover.pg import db  # noqa: E402
from pg_cutover.pg.db import ConnInfo  # noqa: E402


def start(stack: ExitStack, argv: list[str], env: dict, log: Path, cwd: Path = ROOT) -> subprocess.Popen:
    out = stack.enter_context(open(log, "wb"))
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=out, start_new_session=True)

    def stop():
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)

    stack.callback(stop)
    return proc


def wait_health(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def inventory(path: Path, conn: ConnInfo, names: list[str], limit: int, parallel: int) -> Path:
    body = "".join(f'\n[[target]]\nname = "t{i}"\ndatabase = "{n}"\n' for i, n in enumerate(names, 1))
    path.write_text(f'[fleet]\nper_host_limit = {limit}\nmax_parallel = {parallel}\n\n[defaults]\n'
                    f'host = "{conn.host}"\nport = {conn.port}\nuser = "{conn.user}"\nbaseline_rev = "0001_baseline"\n'
                    f'health_url = "none"\n{body}')
    return path


def run_fleet(env: dict, path: Path) -> tuple[float, str]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pg_cutover.launcher.cli", "fleet", "--inventory", str(path), "--approved-by",
                           "bench", "--confirm-checklist"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=3600)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"fleet failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, proc.stderr.strip().splitlines()[-1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--per-host-limit", type=int, default=2)
    ap.add_argument("--reviews", type=int, default=20000, help="rows in the pilots' largest table")
    args = ap.parse_args()
    from beer_app.seed import build_legacy_pilot

    conn = ConnInfo(os.environ.get("POSTGRES_HOST", "127.0.0.1"), int(os.environ.get("POSTGRES_PORT", "5432")),
                    os.environ.get("POSTGRES_USER", "postgres"), os.environ.get("POSTGRES_PASSWORD") or None)
    names = [f"fleetbench_{i}" for i in range(args.targets + 1)]
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(work / "home"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "2",
           "CUTOVER_ALEMBIC_DIR": str(EXAMPLE_APP_DIR), "CUTOVER_BACKUP_DIR": str(work / "backups"),
           "CUTOVER_HEALTH_URL": "none", "POSTGRES_DB": "postgres"}
    env.pop("CUTOVER_S3_BUCKET", None)
    try:
        for name in names:
            db.drop_databases_like(conn, name)
            build_legacy_pilot(name, args.reviews)
        with db.connect(conn, "postgres") as c, c.cursor() as cur:
            cur.execute("SELECT pg_database_size(%s)", (names[0],))
            size = f"{cur.fetchone()[0] / 2**20:.0f} MiB"
        with ExitStack() as stack:
            start(stack, [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                          str(port)], env, work / "server.log")
            wait_health(f"http://127.0.0.1:{port}/api/health")
            subprocess.run([sys.executable, "deployments/deploy.py"], cwd=ROOT, env=env, check=True,
                           capture_output=True, timeout=300)
            for n in range(args.workers):
                start(stack, [sys.executable, "-m", "prefect", "worker", "start", "--pool", "pg-cutover", "--name",
                              f"bench-{n + 1}"], env, work / f"worker{n + 1}.log", cwd=work)
            one, one_msg = run_fleet(env, inventory(work / "one.toml", conn, names[:1], args.per_host_limit, 4))
            many, many_msg = run_fleet(env, inventory(work / "many.toml", conn, names[1:], args.per_host_limit,
                                                      max(4, args.targets)))
    finally:
        for name in names:
            db.drop_databases_like(conn, name)
    print(f"## Fleet: {args.targets} databases against one ({time.strftime('%Y-%m-%d')})\n")
    print(f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}. Command: `.venv/bin/python bench/fleet_bench.py "
          f"--targets {args.targets} --workers {args.workers} --per-host-limit {args.per_host_limit} "
          f"--reviews {args.reviews}`. Pilots: legacy beer_app, {args.reviews} reviews each ({size}); one PostgreSQL "
          f"host, so at most {args.per_host_limit} at once; {args.workers} process workers; a real `prefect server`.\n")
    print("| fleet | wall s (`cutover fleet`, end to end) | per target s |")
    print("|---|---:|---:|")
    print(f"| 1 database | {one:.1f} | {one:.1f} |")
    print(f"| {args.targets} databases | {many:.1f} | {many / args.targets:.1f} |")
    print(f"\n{args.targets} took {many / one:.2f}x the time of one (sequentially: {args.targets}x). "
          f"Last lines: `{one_msg}` / `{many_msg}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
