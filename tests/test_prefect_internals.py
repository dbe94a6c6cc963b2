"""Each use of Prefect's internals (pg_cutover/launcher/prefect_internals.py) against the installed
Prefect: these fail when Prefect changes what the launcher relies on."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import pytest

from pg_cutover.launcher import prefect_internals
from pg_cutover.launcher.embedded import REPO_ROOT
from tests.helpers import processes_with_home


def test_the_temporary_server_is_the_one_prefect_itself_would_start(monkeypatch):
    """Prefect's SubprocessASGIServer command line and markers, captured instead of run."""
    from prefect.server.api import server as prefect_server

    captured = {}

    def popen(*args, **kwargs):
        captured["argv"] = kwargs.get("args", args[0] if args else None)
        captured["env"] = kwargs["env"]
        raise RuntimeError("captured, not started")

    monkeypatch.setattr(prefect_server.subprocess, "Popen", popen)
    with pytest.raises(RuntimeError, match="captured"):
        prefect_server.SubprocessASGIServer(port=54321)._run_uvicorn_command()

    ours = prefect_internals.server_argv(54321)
    assert captured["argv"] == ours
    markers = {k: v for k, v in prefect_internals.SERVER_ENV.items() if k.startswith("PREFECT__") or k == "PREFECT_UI_ENABLED"}
    assert {k: captured["env"].get(k) for k in markers} == markers


def test_prefects_queued_logs_and_events_can_still_be_drained_before_the_server_stops():
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        assert "timeout" in inspect.signature(worker.drain_all).parameters


PROFILES = '''active = "{active}"

[profiles.ephemeral]
PREFECT_SERVER_EPHEMERAL_ENABLED = "true"

[profiles.local]
PREFECT_API_URL = "http://127.0.0.1:4200/api"
'''
PROBE = ("import json, os\n"
         "from pg_cutover.launcher.prefect_internals import temporary_server\n"
         "with temporary_server() as server:\n"
         "    print(json.dumps([server is not None, os.environ.get('PREFECT_API_URL')]))\n")


@pytest.mark.parametrize(
    ("active", "cwd_file", "started"),
    [
        ("ephemeral", None, True),  # nothing configured: the command's own server
        ("local", None, False),  # the active profile names an API
        ("ephemeral", (".env", "PREFECT_API_URL=http://prefect:4200/api\n"), False),
        ("ephemeral", ("prefect.toml", "[api]\nurl = 'http://prefect:4200/api'\n"), False),
    ],
)
def test_an_api_configured_anywhere_prefect_looks_is_never_overridden(tmp_path, active, cwd_file, started):
    """Prefect's own answer decides; a server started on speculation is stopped, never left behind."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "profiles.toml").write_text(PROFILES.format(active=active))
    if cwd_file:
        (tmp_path / cwd_file[0]).write_text(cwd_file[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PYTHONPATH=str(REPO_ROOT))

    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)

    assert proc.returncode == 0, proc.stderr[-2000:]
    server, api_url = json.loads(proc.stdout.strip().splitlines()[-1])
    assert server is started
    assert (api_url or "").startswith("http://127.0.0.1:") if started else api_url is None
    assert processes_with_home(home) == []  # whichever way it went, no server is left running


def test_an_api_url_in_the_environment_starts_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path), PREFECT_API_URL="http://prefect:4200/api", PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [False, "http://prefect:4200/api"]
