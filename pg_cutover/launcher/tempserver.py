"""The temporary Prefect server of `cutover run`, started before Prefect is imported.

Why this exists (issue 8): with no Prefect API configured, Prefect 3.9 starts a
temporary server itself (`prefect.server.api.server.SubprocessASGIServer`), but
only when the flow first needs the API: after every import, and the server then
takes 4-7 s to answer. `cutover run` starts that same server as its first act, so
it boots while the command imports Prefect and the flows, and waits only for what
is left of the boot.

It is the process Prefect would start: the same uvicorn command line, the
command's own environment (nothing added to argv) plus Prefect's three markers
(`PREFECT_UI_ENABLED=0`, `PREFECT__SERVER_EPHEMERAL=1`, `PREFECT__SERVER_FINAL=1`),
the same working directory and so the same PREFECT_HOME: the run's flow run, logs
and artifacts land in the same local database as with Prefect's own temporary
server. The command then sets PREFECT_API_URL in its environment before importing
Prefect, whose settings are read once at import, so the flow engine uses this
server and starts none of its own. The server's output goes to a log file under
PREFECT_HOME, never the terminal; it is stopped when the command ends, whatever
the outcome (and, on Linux, when the command dies without cleaning up).

Deciding whether an API is configured must not import Prefect: `import
prefect.settings` imports the whole `prefect` package first, 0.7-1.0 s on the
development machine (`python -X importtime`), which would delay the server by as
much. `api_configured` therefore reads what Prefect 3.9 reads for PREFECT_API_URL
(the environment, then the active profile in the profiles file) with tomllib;
when a source it does not read could hold settings (`.env` naming a PREFECT_
variable, `prefect.toml`, `[tool.prefect]` in `pyproject.toml`, a profiles path of
its own, Prefect's test mode, an unreadable profiles file), it answers "unknown"
and the command leaves the server to Prefect, as before.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

from pg_cutover.errors import CutoverError

# Prefect's own default (20 s) counts only its sleeps between probes; a first start on a fresh
# PREFECT_HOME creates and migrates the database, slower on a loaded machine.
DEFAULT_STARTUP_TIMEOUT = 90.0
STOP_GRACE = 5.0
LOG_NAME = "cutover-temporary-server.log"
# Analytics off: its telemetry service logs an ERROR in every run on a machine without internet.
_SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
_TEST_MODE = ("PREFECT_TEST_MODE", "PREFECT_UNIT_TEST_MODE", "PREFECT_TESTING_UNIT_TEST_MODE",
              "PREFECT_TESTING_TEST_MODE")


def _read_toml(path: Path) -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _prefect_package_dir() -> Path | None:
    spec = find_spec("prefect")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _default_profile() -> dict | None:
    """The profile Prefect falls back to: the active one of the profiles file it ships."""
    package = _prefect_package_dir()
    try:
        data = _read_toml(package / "settings" / "profiles.toml") if package else None
    except (OSError, tomllib.TOMLDecodeError):
        return None
    if data is None:
        return None
    return data.get("profiles", {}).get(data.get("active", "ephemeral"), {})


def _cwd_may_configure_prefect() -> bool:
    """Prefect also reads settings from these files in the working directory; this module does not."""
    try:
        if Path("prefect.toml").is_file():
            return True
        if Path(".env").is_file() and "PREFECT_" in Path(".env").read_text(encoding="utf-8", errors="replace"):
            return True
        if Path("pyproject.toml").is_file():
            return "prefect" in _read_toml(Path("pyproject.toml")).get("tool", {})
    except (OSError, tomllib.TOMLDecodeError):
        return True
    return False


def active_profile() -> dict | None:
    """The settings of Prefect's active profile, as Prefect 3.9 resolves it; None when unsure."""
    if any(os.environ.get(name) for name in _TEST_MODE) or os.environ.get("PREFECT_PROFILES_PATH"):
        return None
    if _cwd_may_configure_prefect():
        return None
    if os.environ.get("PREFECT_HOME"):
        path = Path(os.environ["PREFECT_HOME"]) / "profiles.toml"
    else:
        path = Path.home() / ".prefect" / "profiles.toml"
    if not path.exists():
        return _default_profile()
    try:
        data = _read_toml(path)
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or data.get("active")
    profiles = data.get("profiles", {})
    if not active or active not in profiles:
        return _default_profile()
    return profiles[active]


def api_configured(profile: dict | None = None) -> bool | None:
    """Whether Prefect will find an API URL: True or False, or None when only Prefect itself could tell."""
    if "PREFECT_API_URL" in os.environ:
        return True if os.environ["PREFECT_API_URL"] else None
    profile = active_profile() if profile is None else profile
    if profile is None:
        return None
    return bool(profile.get("PREFECT_API_URL"))


def _prefect_home(profile: dict) -> Path:
    return Path(os.environ.get("PREFECT_HOME") or profile.get("PREFECT_HOME") or "~/.prefect").expanduser()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _startup_timeout() -> float:
    try:
        value = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", ""))
    except ValueError:
        return DEFAULT_STARTUP_TIMEOUT
    return value if value > 0 else DEFAULT_STARTUP_TIMEOUT


def _die_with_parent():
    """Linux: the server gets SIGTERM when this process dies, even by SIGKILL or SIGHUP (no cleanup runs)."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, signal.SIGTERM)


class TemporaryServer:
    """One temporary Prefect server process on 127.0.0.1; `stop` is safe to call more than once."""

    def __init__(self, port: int | None = None, profile: dict | None = None):
        self.port = port or _free_port()
        self.log_path: Path | None = None
        package = _prefect_package_dir()
        if package is None:
            raise CutoverError("Prefect is not installed in this environment; expected the prefect package.")
        argv = [
            sys.executable, "-m", "uvicorn", "--app-dir", str(package.parent),
            "--factory", "prefect.server.api.server:create_app",
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on",
        ]
        log = subprocess.DEVNULL
        try:
            home = _prefect_home(profile or {})
            home.mkdir(parents=True, exist_ok=True)
            self.log_path = home / LOG_NAME
            log = open(self.log_path, "wb")
        except OSError:
            self.log_path = None
        try:
            self.process = subprocess.Popen(argv, env={**os.environ, **_SERVER_ENV}, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent())
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # the child holds its own copy

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _healthy(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/api/health")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def wait_until_healthy(self, timeout: float | None = None) -> None:
        """Return when GET /api/health answers 200, or raise one sentence."""
        timeout = timeout or _startup_timeout()
        deadline = time.monotonic() + timeout
        see = f"; its output is in {self.log_path}" if self.log_path else ""
        while True:
            code = self.process.poll()
            if code is not None:
                raise CutoverError(f"The temporary Prefect server for this run exited with code {code} before "
                                   f"answering on {self.api_url}/health{see}.")
            if self._healthy():
                return
            if time.monotonic() >= deadline:
                raise CutoverError(f"The temporary Prefect server for this run did not answer on {self.api_url}/health "
                                   f"within {timeout:g} s (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS){see}.")
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate, wait STOP_GRACE seconds, then kill."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_GRACE)
        except BaseException:  # the grace ran out, or a second Ctrl-C: no waiting any longer
            self.process.kill()
            self.process.wait()


def _drain_prefect_workers() -> None:
    """Send the logs and events Prefect still queues in the background while the server is up.

    Prefect drains these at interpreter exit, before the atexit hook that stops its own temporary
    server; stopping this one earlier, the command drains them first.
    """
    if "prefect.logging.handlers" not in sys.modules:
        return  # Prefect never ran: nothing queued
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=STOP_GRACE)
        EventsWorker.drain_all(timeout=STOP_GRACE)
    except Exception:  # best effort: the run's outcome is already decided
        pass


@contextmanager
def temporary_server() -> Iterator[TemporaryServer | None]:
    """Start the server and point PREFECT_API_URL at it when no API is configured; yield it (or None).

    Must be entered before Prefect is imported. On exit, whatever happened inside, Prefect's
    queued logs and events are sent, the server is stopped and the environment restored.
    """
    profile = active_profile()
    if api_configured(profile) is not False or "prefect" in sys.modules:
        yield None
        return
    assert profile is not None
    server = TemporaryServer(profile=profile)
    # Set after the server's environment was taken. An empty UI URL keeps Prefect from logging
    # "View at" links to a UI this server does not serve and that is gone after the run, as with
    # Prefect's own temporary server; one the operator configured is kept.
    added = {"PREFECT_API_URL": server.api_url}
    if "PREFECT_UI_URL" not in os.environ and not profile.get("PREFECT_UI_URL"):
        added["PREFECT_UI_URL"] = ""
    os.environ.update(added)
    try:
        yield server
    finally:
        try:
            _drain_prefect_workers()
        finally:
            server.stop()
            for name in added:
                os.environ.pop(name, None)
