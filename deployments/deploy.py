"""Register pg-cutover with a Prefect server: work pool, deployments from prefect.yaml, automation.

    PREFECT_API_URL=http://prefect:4200/api python deployments/deploy.py

Idempotent: run it again after changing prefect.yaml. Uses the Prefect CLI of this
environment, so what it does is what an operator would type.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POOL = "pg-cutover"
PREFECT = [sys.executable, "-m", "prefect"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*PREFECT, "--no-prompt", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        sys.exit(f"prefect {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def main() -> int:
    if run("work-pool", "inspect", POOL, check=False).returncode != 0:
        run("work-pool", "create", POOL, "--type", "process")
    run("deploy", "--all")
    existing = run("automation", "inspect", "pg-cutover-zombie-detection", check=False)
    if existing.returncode != 0 or "not found" in existing.stdout.lower():
        run("automation", "create", "--from-file", str(ROOT / "deployments" / "zombie-detection.yaml"))
    print(f"Work pool {POOL!r}, deployments cutover/cutover, cutover/fleet-target, fleet/fleet, finalize/finalize and rollback/rollback, "
          "zombie detection: ready.")
    print(f"Start a worker: prefect worker start --pool {POOL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
