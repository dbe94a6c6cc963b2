"""Every use of Prefect's internals, in one module, each with a test that fails when the installed
Prefect changes what it relies on (tests/test_prefect_internals.py, tests/test_heartbeats.py).

1. The temporary Prefect server of `cutover run` and `cutover rollback`, started before Prefect is
   imported. With no Prefect API configured, Prefect 3.9 starts a temporary server itself
   (`prefect.server.api.server.SubprocessASGIServer`), but only when the flow first needs the API:
   after every import, and the server then takes 4-7 s to answer. The command starts that same
   server (the same uvicorn command line on `prefect.server.api.server:create_app`, Prefect's
   markers `PREFECT_UI_ENABLED=0`, `PREFECT__SERVER_EPHEMERAL=1`, `PREFECT__SERVER_FINAL=1`, the
   command's own environment and working directory, so the same PREFECT_HOME and database) as its
   first act, so it boots while the command imports Prefect and the flows. Whether an API is
   configured is Prefect's own answer (`get_current_settings().api.url`), asked in a short child
   process meanwhile: importing Prefect here would fix its settings before PREFECT_API_URL could
   point at the server. When an API is configured after all, the server is stopped unused.
   The server's output goes to a log file under PREFECT_HOME; it is stopped when the command ends,
   whatever the outcome (and, on Linux, when the command dies without cleaning up), after Prefect's
   queued logs and events were sent (`APILogWorker.drain_all`, `EventsWorker.drain_all`).

2. Flow-run heartbeats that stop the moment the flow body ends. Prefect 3.9's sync flow engine
   sends heartbeats from a thread that sleeps in 1 s steps, and joins that thread when the flow
   ends: every run's end waits for the next whole second (0-1 s, 0.5 s on average). `cutover run`
   turns the engine's heartbeats off around its flow call (PREFECT_FLOWS_HEARTBEAT_FREQUENCY) and
   the flow body sends the same event instead (`prefect.flow-run.heartbeat`, the same resource and
   related resources, at the same interval) from a thread an Event stops at once. Zombie detection
   (deployments/zombie-detection.yaml) sees the same events. A run started by a worker keeps the
   engine's own heartbeats: nothing here changes it.
"""

from __future__ import annotations

import contextvars
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
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
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
# Prefect's own answer, in a child process: whether an API is configured anywhere it looks
# (environment, profiles, .env, prefect.toml, pyproject.toml), and the UI URL it would link to.
_RESOLVE = ("import json\nfrom prefect.settings import get_current_settings\ns = get_current_settings()\n"
            "print(json.dumps({'api_url': s.api.url, 'ui_url': s.ui_url}))")
RESOLVE_TIMEOUT = 60.0


def _prefect_package_dir() -> Path | None:
    spec = find_spec("prefect")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def prefect_settings() -> dict | None:
    """What Prefect itself resolves for the API URL and the UI URL; None when it could not say."""
    try:
        proc = subprocess.run([sys.executable, "-c", _RESOLVE], capture_output=True, text=True,
                              timeout=RESOLVE_TIMEOUT, stdin=subprocess.DEVNULL)
        return json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None


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


def server_argv(port: int) -> list[str]:
    """The command line SubprocessASGIServer runs for Prefect's own temporary server."""
    package = _prefect_package_dir()
    if package is None:
        raise CutoverError("Prefect is not installed in this environment; expected the prefect package.")
    return [sys.executable, "-m", "uvicorn", "--app-dir", str(package.parent),
            "--factory", "prefect.server.api.server:create_app",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"]


class TemporaryServer:
    """One temporary Prefect server process on 127.0.0.1; `stop` is safe to call more than once."""

    def __init__(self, port: int | None = None):
        self.port = port or _free_port()
        self.log_path: Path | None = None
        argv = server_argv(self.port)
        log = subprocess.DEVNULL
        try:
            home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
            home.mkdir(parents=True, exist_ok=True)
            self.log_path = home / LOG_NAME
            log = open(self.log_path, "wb")
        except OSError:
            self.log_path = None
        try:
            self.process = subprocess.Popen(argv, env={**os.environ, **SERVER_ENV}, stdin=subprocess.DEVNULL,
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
    if "PREFECT_API_URL" in os.environ or "prefect" in sys.modules:
        yield None  # configured in the environment (or too late to choose): Prefect's own way
        return
    server = TemporaryServer()  # boots while Prefect says whether it is needed
    resolved = prefect_settings()
    if resolved is None or resolved["api_url"]:
        server.stop()  # an API is configured (or Prefect could not tell): never overridden
        yield None
        return
    # An empty UI URL keeps Prefect from logging "View at" links to a UI this server does not
    # serve and that is gone after the run, as with Prefect's own temporary server; one the
    # operator configured is kept.
    added = {"PREFECT_API_URL": server.api_url}
    if not resolved.get("ui_url"):
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


# -- 2. heartbeats ---------------------------------------------------------------------------------

# Set by `engine_heartbeats_replaced` for the flow call it wraps: the interval the flow must keep.
_INTERVAL: contextvars.ContextVar[int | None] = contextvars.ContextVar("cutover_heartbeat_seconds", default=None)
EVENT = "prefect.flow-run.heartbeat"
logger = logging.getLogger("cutover.heartbeats")


@contextmanager
def engine_heartbeats_replaced() -> Iterator[None]:
    """Around a flow call in this process: the engine's heartbeats off, the flow's own at the same interval."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

    seconds = get_current_settings().flows.heartbeat_frequency
    if seconds is None:  # heartbeats are off in this environment: they stay off
        yield
        return
    token = _INTERVAL.set(seconds)
    try:
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield
    finally:
        _INTERVAL.reset(token)


@contextmanager
def heartbeats() -> Iterator[None]:
    """In a flow body: its heartbeats, when `engine_heartbeats_replaced` turned the engine's off."""
    from prefect.context import FlowRunContext

    seconds = _INTERVAL.get()
    context = FlowRunContext.get()
    if seconds is None or context is None or context.flow_run is None:
        yield
        return
    resource, related = _event_resources(context)
    stop = threading.Event()

    def beat() -> None:
        from prefect.events import emit_event

        while True:
            try:
                emit_event(event=EVENT, resource=resource, related=related)
            except Exception:
                logger.debug("Failed to emit a heartbeat", exc_info=True)
            if stop.wait(seconds):
                return

    # The run's context (API URL, events client) goes with the thread: threads do not inherit it.
    thread = threading.Thread(target=contextvars.copy_context().run, args=(beat,), daemon=True,
                              name="flow-heartbeats")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2)


def _event_resources(context) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The resource and related resources the engine's own heartbeat carries."""
    from prefect import __version__

    run = context.flow_run
    resource = {"prefect.resource.id": f"prefect.flow-run.{run.id}", "prefect.resource.name": run.name or "",
                "prefect.version": __version__}
    related = []
    if run.flow_id:
        related.append({"prefect.resource.id": f"prefect.flow.{run.flow_id}", "prefect.resource.role": "flow",
                        "prefect.resource.name": context.flow.name if context.flow else ""})
    if run.deployment_id:
        related.append({"prefect.resource.id": f"prefect.deployment.{run.deployment_id}",
                        "prefect.resource.role": "deployment"})
    related += [{"prefect.resource.id": f"prefect.tag.{tag}", "prefect.resource.role": "tag"}
                for tag in sorted(set(run.tags or []))]
    return resource, related
