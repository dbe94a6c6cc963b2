"""The fleet's inventory: what it accepts, what it refuses (one sentence, nothing started),
how a target becomes settings on the worker, and the overlap arithmetic the fleet test relies on."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pg_cutover.errors import ConfigError
from pg_cutover.launcher.cli import main
from pg_cutover.runbook.fleet import max_overlap
from pg_cutover.runbook.inventory import load_inventory
from pg_cutover.tasks.targets import target_settings

GOOD = """
[fleet]
policy = "halt"
per_host_limit = 3

[defaults]
host = "db1.internal"
password = "env:FLEET_TEST_PW"
baseline_rev = "0001_baseline"

[[target]]
name = "tenant-a"
database = "tenant_a"

[[target]]
name = "tenant-b"
database = "tenant_b"
host = "db2.internal"
port = 5433
health_url = "http://tenant-b.internal:8000"
"""


def write(tmp_path, text: str):
    path = tmp_path / "cutover.toml"
    path.write_text(text)
    return path


def test_inventory_defaults_targets_and_hosts(tmp_path):
    inv = load_inventory(write(tmp_path, GOOD))
    assert inv.policy == "halt" and inv.per_host_limit == 3 and inv.max_parallel == 4
    assert inv.deployment == "cutover/fleet-target"
    assert [t.host_key() for t in inv.targets] == ["db1.internal:5432", "db2.internal:5433"]
    assert sorted(inv.hosts()) == ["db1.internal:5432", "db2.internal:5433"]
    b = inv.targets[1]
    assert b.overrides() == {"POSTGRES_DB": "tenant_b", "POSTGRES_HOST": "db2.internal", "POSTGRES_PORT": "5433",
                             "BASELINE_REV": "0001_baseline", "CUTOVER_HEALTH_URL": "http://tenant-b.internal:8000"}
    assert load_inventory(write(tmp_path, GOOD), policy="continue", max_parallel=9).policy == "continue"


def test_a_target_may_take_its_own_strategy(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_TEST_PW", "pw")
    monkeypatch.setenv("CUTOVER_STRATEGY", "runbook")
    inv = load_inventory(write(tmp_path, GOOD.replace('name = "tenant-b"', 'name = "tenant-b"\nstrategy = "clone"', 1)))
    a, b = inv.targets
    assert b.overrides()["CUTOVER_STRATEGY"] == "clone" and "CUTOVER_STRATEGY" not in a.overrides()
    assert (target_settings(a).strategy, target_settings(b).strategy) == ("runbook", "clone")
    with pytest.raises(ConfigError) as err:
        load_inventory(write(tmp_path, GOOD.replace('name = "tenant-b"', 'name = "tenant-b"\nstrategy = "fast"', 1)))
    assert "target tenant-b: strategy is invalid ('fast'): Input should be 'runbook' or 'clone'" in str(err.value)


def test_target_settings_resolve_the_password_on_the_worker(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_TEST_PW", "s3cret-from-env")
    monkeypatch.setenv("POSTGRES_DB", "worker_default")
    target = load_inventory(write(tmp_path, GOOD)).targets[0]
    settings = target_settings(target)
    assert settings.postgres_db == "tenant_a" and settings.postgres_host == "db1.internal"
    assert settings.password == "s3cret-from-env"
    assert "s3cret-from-env" not in target.model_dump_json()  # what travels as the flow parameter
    monkeypatch.delenv("FLEET_TEST_PW")
    with pytest.raises(ConfigError) as err:
        target_settings(target)
    assert str(err.value) == ("target tenant-a: password reference env:FLEET_TEST_PW is not set on this worker; "
                              "expected the environment variable FLEET_TEST_PW to hold the password.")


@pytest.mark.parametrize("change, sentence", [
    (('password = "env:FLEET_TEST_PW"', 'password = "hunter2"'),
     "target tenant-a: password is invalid: expected a reference, env:VARIABLE_NAME or secret:<Prefect Secret block "
     "name>, never the password itself."),
    (('database = "tenant_a"', 'database = "tenant a; drop"'),
     "target tenant-a: database is invalid ('tenant a; drop'): expected a plain identifier"),
    (('database = "tenant_a"', 'database = "tenant_b"\nhost = "db2.internal"\nport = 5433'),
     "database tenant_b on db2.internal:5433 is listed twice; expected each database once."),
    (('name = "tenant-b"', 'name = "tenant-a"'), "target name 'tenant-a' is used twice; expected one entry per name."),
    (('name = "tenant-b"', 'name = "Tenant B"'), "target Tenant B: name is invalid ('Tenant B'): expected lowercase"),
    (('policy = "halt"', 'policy = "sometimes"'), "[fleet]: policy is invalid ('sometimes'): Input should be"),
    (('per_host_limit = 3', 'per_host_limit = 0'), "[fleet]: per_host_limit is invalid (0)"),
    (('health_url = "http://tenant-b.internal:8000"', 'health_url = "http://x"\nhealth = "y"'),
     "target tenant-b: unknown key health; expected one of name, database"),
    (('port = 5433', 'port = "five"'), "target tenant-b: port is invalid ('five')"),
    (("[[target]]", "[[targets]]"), "unknown section [targets]"),
    (('baseline_rev = "0001_baseline"', 'baseline_rev = "0001; rm -rf"'), "target tenant-a: baseline_rev is invalid"),
])
def test_bad_inventory_is_one_sentence_naming_the_key(tmp_path, change, sentence):
    path = write(tmp_path, GOOD.replace(*change, 1))
    with pytest.raises(ConfigError) as err:
        load_inventory(path)
    message = str(err.value)
    assert sentence in message and message.startswith(str(path)) and "\n" not in message
    assert "hunter2" not in message


def test_unparsable_and_missing_inventory(tmp_path, capsys):
    assert main(["fleet", "--inventory", str(write(tmp_path, "[fleet\n"))]) == 1
    assert "is not valid TOML" in capsys.readouterr().err
    assert main(["fleet", "--inventory", str(tmp_path / "nope.toml")]) == 1
    assert capsys.readouterr().err == (f"cutover: inventory {tmp_path / 'nope.toml'} does not exist; "
                                       "expected a TOML file with [[target]] entries.\n")
    assert main(["fleet", "--inventory", str(write(tmp_path, "[fleet]\npolicy = 'halt'\n"))]) == 1
    assert "expected at least one [[target]] entry" in capsys.readouterr().err
    assert main(["fleet", "--inventory", str(write(tmp_path, GOOD))]) == 1
    assert "cutover fleet needs --approved-by NAME and --confirm-checklist" in capsys.readouterr().err


def test_max_overlap():
    t0 = datetime(2026, 11, 24, tzinfo=timezone.utc)
    s = lambda a, b: (t0 + timedelta(seconds=a), t0 + timedelta(seconds=b))  # noqa: E731
    assert max_overlap([]) == 0
    assert max_overlap([s(0, 10), s(10, 20), s(20, 30)]) == 1  # back to back is not at once
    assert max_overlap([s(0, 10), s(5, 15), s(6, 7), s(14, 20)]) == 3


def test_the_example_inventory_is_valid():
    from pg_cutover.launcher.embedded import REPO_ROOT

    inv = load_inventory(REPO_ROOT / "examples" / "cutover.toml")
    assert [t.name for t in inv.targets] == ["tenant-canary", "tenant-a", "tenant-b"]
    assert inv.targets[2].password == "secret:db2-app-password"


def test_secret_block_reference_resolved_through_the_api(prefect_api, tmp_path, monkeypatch):
    from prefect.blocks.system import Secret

    Secret(value="from-a-block-7731").save("fleet-test-pw", overwrite=True)
    monkeypatch.setenv("POSTGRES_DB", "worker_default")
    text = GOOD.replace('password = "env:FLEET_TEST_PW"', 'password = "secret:fleet-test-pw"')
    a, b = load_inventory(write(tmp_path, text)).targets
    assert target_settings(a).password == "from-a-block-7731"
    missing = b.model_copy(update={"password": "secret:no-such-block"})
    with pytest.raises(ConfigError) as err:
        target_settings(missing)
    assert str(err.value).startswith("target tenant-b: password reference secret:no-such-block cannot be loaded")
    assert "expected a Prefect Secret block named no-such-block." in str(err.value)
