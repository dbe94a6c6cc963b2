"""Prefect's own floor: what a flow run costs before it does any work.

Issue 8 asks for at most 3 s of orchestration overhead on a few-MB pilot. This measures the
part of that no cutover code can remove: a fresh process importing Prefect and running a flow
against a reused `prefect server` (as B-srv does), with no tasks, and with as many (no-op) task
runs and artifacts as a cutover creates. Each case runs several times, alternating; it reports
median wall time, where it goes (imports, the flow run, exit) and the Prefect server's CPU.

    .venv/bin/python bench/prefect_floor.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cutover_bench import (CpuMeter, Pg, listener_pid, machine_info, start_prefect_server,  # noqa: E402
                           stop_on_sigterm, warm_up)

# The flow, run as its own process: `import` time, then the flow run, then the process exit.
FLOW = """
import sys, time
t0 = time.monotonic()
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
tasks, artifacts = int(sys.argv[1]), int(sys.argv[2])

@task
def step(i):
    return i

@flow(name="prefect-floor")
def floor():
    for i in range(tasks):
        step(i)
    for i in range(artifacts):
        create_markdown_artifact(markdown="# evidence\\n" + "x" * 2000, key=f"floor-{i}")

t1 = time.monotonic()
floor()
print(f"FLOOR {t1 - t0:.3f} {time.monotonic() - t1:.3f}", flush=True)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=30, help="task runs of a cutover (29 on the example pilot)")
    parser.add_argument("--artifacts", type=int, default=25, help="artifacts of a cutover (about 25)")
    args = parser.parse_args()
    stop_on_sigterm()
    cases = [(0, 0), (args.tasks, 0), (args.tasks, args.artifacts)]
    results: dict[tuple[int, int], list[dict]] = {c: [] for c in cases}
    work = Path(tempfile.mkdtemp(prefix="prefect_floor_"))
    script = work / "floor.py"
    script.write_text(FLOW)
    with ExitStack() as stack:
        home = work / "home"
        home.mkdir()
        url = start_prefect_server(stack, home, work)
        warm_up(home, url)
        services = {"prefect-server": listener_pid(url)}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update({"PREFECT_HOME": str(home), "PREFECT_API_URL": url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
        for _ in range(args.runs):
            for tasks, artifacts in cases:
                with CpuMeter(services) as cpu:
                    started = time.monotonic()
                    out = subprocess.run([sys.executable, str(script), str(tasks), str(artifacts)], env=env,
                                         capture_output=True, text=True, timeout=300)
                    wall = time.monotonic() - started
                line = next((ln for ln in out.stdout.splitlines() if ln.startswith("FLOOR ")), None)
                if out.returncode != 0 or line is None:
                    print(f"run failed ({tasks} tasks, {artifacts} artifacts): {out.stderr[-500:]}", file=sys.stderr)
                    return 1
                imports, flow_run = (float(x) for x in line.split()[1:])
                results[(tasks, artifacts)].append({"wall": wall, "imports": imports, "flow": flow_run,
                                                    "exit": wall - imports - flow_run, **cpu.spent})
    med = statistics.median
    print(f"## Prefect's floor: an empty flow run and a cutover's worth of no-op tasks and artifacts "
          f"({time.strftime('%Y-%m-%d')})\n")
    print(f"Machine: {machine_info(Pg('127.0.0.1', 5432, 'postgres', None))}.\n")
    print(f"Command: `.venv/bin/python bench/prefect_floor.py --runs {args.runs} --tasks {args.tasks} "
          f"--artifacts {args.artifacts}`; a reused `prefect server` (as B-srv), {args.runs} runs per case, "
          "alternating.\n")
    print("| case | wall s (median) | runs s | interpreter + `import prefect` s | flow run s | exit s "
          "| Prefect server CPU s | process CPU s |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for (tasks, artifacts), rows in results.items():
        name = "empty flow" if not tasks else f"{tasks} no-op tasks" + (f" + {artifacts} artifacts" if artifacts else "")
        walls = ", ".join(f"{r['wall']:.2f}" for r in rows)
        print(f"| {name} | {med(r['wall'] for r in rows):.2f} | {walls} | "
              f"{med(r['imports'] for r in rows):.2f} | {med(r['flow'] for r in rows):.2f} | "
              f"{med(r['exit'] for r in rows):.2f} | {med(r['prefect-server'] for r in rows):.2f} | "
              f"{med(r['run'] for r in rows):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
