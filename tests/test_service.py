"""The backend's service controller: command lists from the settings, run without a shell."""

from __future__ import annotations

import sys

import pytest

from pg_cutover.errors import ConfigError
from pg_cutover.settings import load_settings
from pg_cutover.toolkit import Toolkit


def test_compose_controller_builds_the_exact_docker_commands(cutover_env):
    # No Docker engine runs here: what is asserted is the command that would run.
    cutover_env.setenv("CUTOVER_SERVICE", "compose:beer_backend_api")
    settings = load_settings()
    assert settings.service_argv("stop") == ["docker", "compose", "stop", "beer_backend_api"]
    assert settings.service_argv("start") == ["docker", "compose", "start", "beer_backend_api"]
    assert settings.service_argv("status") == ["docker", "compose", "ps", "beer_backend_api"]
    assert Toolkit.from_settings(settings).service.kind == "command"


def test_explicit_commands_win_over_compose_and_run_as_argument_lists(cutover_env, tmp_path):
    marker = tmp_path / "it ran; rm -rf x"
    cutover_env.setenv("CUTOVER_SERVICE", "compose:api")
    cutover_env.setenv("CUTOVER_SERVICE_STOP", f"{sys.executable} -c 'import sys, pathlib; pathlib.Path(sys.argv[1]).touch()' '{marker}'")
    kit = Toolkit.from_settings(load_settings())
    result = kit.service.stop()
    assert result.returncode == 0 and marker.exists()  # the odd file name reached the program intact, no shell
    assert kit.service.start_argv == ["docker", "compose", "start", "api"]


def test_no_controller_is_recorded_as_none(cutover_env):
    kit = Toolkit.from_settings(load_settings())
    assert kit.service.kind == "none" and kit.service.stop() is None


@pytest.mark.parametrize("value", ["systemd:api", "compose:", "compose:bad name", "compose:a;b"])
def test_bad_service_setting_is_one_sentence(cutover_env, value):
    cutover_env.setenv("CUTOVER_SERVICE", value)
    with pytest.raises(ConfigError, match=r"^CUTOVER_SERVICE is invalid .*expected compose:<service>"):
        load_settings()
