"""Start, stop and check the API as a service, for a host without docker or systemd.

    python -m beer_app.servicectl start  --pidfile /run/beer.pid --port 8000 [--log api.log]
    python -m beer_app.servicectl stop   --pidfile /run/beer.pid
    python -m beer_app.servicectl status --pidfile /run/beer.pid --port 8000

pg-cutover drives it through CUTOVER_SERVICE_START / _STOP / _STATUS (runbook 5.1,
6.1, 6.4). The database comes from POSTGRES_* in the environment, as in compose.
Exit status 0 means done (or running, for status); anything else is a failure.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent.parent


def _pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/docs", timeout=2):
            return True
    except Exception:
        return False


def start(pidfile: Path, port: int, log: Path | None) -> int:
    if _pid(pidfile) and _answers(port):
        print(f"already running (pid {_pid(pidfile)}) on port {port}")
        return 0
    out = open(log, "ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "beer_app.main:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        cwd=APP_DIR, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    pidfile.write_text(str(proc.pid))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"exited with code {proc.returncode} while starting", file=sys.stderr)
            return 1
        if _answers(port):
            print(f"started (pid {proc.pid}) on port {port}")
            return 0
        time.sleep(0.2)
    print(f"did not answer on port {port} within 30 s", file=sys.stderr)
    return 1


def stop(pidfile: Path) -> int:
    pid = _pid(pidfile)
    if pid is None:
        print("not running")
        pidfile.unlink(missing_ok=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _pid(pidfile):
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if _pid(pidfile):
        os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    print(f"stopped (pid {pid})")
    return 0


def status(pidfile: Path, port: int) -> int:
    pid = _pid(pidfile)
    if pid and _answers(port):
        print(f"running (pid {pid}) on port {port}")
        return 0
    print("stopped" if pid is None else f"pid {pid} alive but not answering on port {port}")
    return 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="beer_app.servicectl")
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--pidfile", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log", type=Path)
    args = parser.parse_args(argv)
    if args.action == "start":
        return start(args.pidfile, args.port, args.log)
    if args.action == "stop":
        return stop(args.pidfile)
    return status(args.pidfile, args.port)


if __name__ == "__main__":
    sys.exit(main())
