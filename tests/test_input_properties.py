"""Hostile names, as properties: any string is either refused in one sentence naming its setting,
or accepted and safe. Plus the hostile inputs tests/test_bad_input.py does not already try,
end to end against real PostgreSQL: each fails before any change."""

from __future__ import annotations

import ast
import os
import re
import subprocess
from contextlib import contextmanager

import psycopg2.extensions
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pg_cutover.errors import ConfigError, CutoverError
from pg_cutover.flows.cutover import cutover
from pg_cutover.launcher.embedded import REPO_ROOT
from pg_cutover.pg import db
from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.plan import derived_name
from pg_cutover.settings import load_settings
from pg_cutover.values import IDENTIFIER_RE, REVISION_RE
from tests.conftest import BASELINE, HEAD
from tests.helpers import data_fingerprint, databases_like

APPROVED = dict(approved_by="alice", checklist=Checklist.all_confirmed())
PASSWORD = "pw-Pr0perty-S3cret"
EXAMPLES = 400  # per property; docs/RELIABILITY.md counts them

# Anything an environment variable can hold: no NUL, no lone surrogates.
ENV_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=80)
NEAR_IDENTIFIERS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,70}", fullmatch=True)
HOSTILE = st.sampled_from([
    "pilot; DROP DATABASE postgres", 'pi"lot', "pi'lot", "pilot--", "pilot/*", "$(reboot)", "`id`", "pi\nlot",
    "pilot ", " pilot", "Pilot", "bière", "пилот", "pilot\u200b", "a" * 63, "a" * 64, "é" * 32, "_", "1pilot",
    "--help", "-x", "head; rm -rf /", "0001_baseline\r", "..", "../etc", "0001 baseline",
])


@contextmanager
def environment(**values: str):
    """Set variables for one example; hypothesis runs many examples per test, so no monkeypatch."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def one_sentence(exc: ConfigError, setting: str) -> str:
    message = str(exc)
    assert message.startswith(f"{setting} is invalid") or message.startswith(f"{setting} is not set"), message
    assert "\n" not in message and message.endswith(".")
    assert PASSWORD not in message
    return message


@hsettings(max_examples=EXAMPLES, deadline=None, database=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.one_of(ENV_TEXT, NEAR_IDENTIFIERS, HOSTILE))
@example(name="a" * 63).via("longest name PostgreSQL keeps whole")
def test_any_database_name_is_refused_in_one_sentence_or_safe(cutover_env, conn, name):
    with environment(POSTGRES_DB=name, POSTGRES_PASSWORD=PASSWORD):
        try:
            accepted = load_settings().postgres_db
        except ConfigError as exc:
            one_sentence(exc, "POSTGRES_DB")
            return
    # Accepted: a plain identifier PostgreSQL keeps byte for byte (no folding, no truncation),
    # so quoting it changes nothing, and every name derived from it is one too.
    assert accepted == name and IDENTIFIER_RE.match(name) and len(name.encode()) <= 63
    with db.connect(conn, "postgres") as c:
        assert psycopg2.extensions.quote_ident(name, c) == f'"{name}"'
    for role in ("scratch", "restore", "failed"):
        derived = derived_name(name, role, "20261124_235959_2")
        assert IDENTIFIER_RE.match(derived) and len(derived.encode()) <= 63 and derived != name


@hsettings(max_examples=EXAMPLES, deadline=None, database=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rev=st.one_of(ENV_TEXT, HOSTILE, st.from_regex(r"[0-9a-f]{4,12}(_[a-z]+)?", fullmatch=True))
       )
def test_any_revision_string_is_refused_in_one_sentence_or_safe(cutover_env, rev):
    with environment(BASELINE_REV=rev):
        try:
            accepted = load_settings().baseline_rev
        except ConfigError as exc:
            one_sentence(exc, "BASELINE_REV")
            return
    if accepted is None:
        assert rev == ""  # empty means unset; preflight then asks for it (test_bad_input)
        return
    # Reaches alembic only as one argv element: no whitespace, quotes, shell or SQL metacharacters.
    assert accepted == rev and REVISION_RE.match(rev)
    assert not set(rev) & set(" \t\r\n'\";$`|&<>()*?/\\")


# `$` also matches before a final newline: found by the property above, hence the `\Z` anchors.
@pytest.mark.parametrize(("setting", "value"), [("POSTGRES_DB", "pilot\n"), ("BASELINE_REV", "0001_baseline\n")])
def test_a_final_newline_is_refused(cutover_env, setting, value):
    cutover_env.setenv(setting, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    one_sentence(info.value, setting)


def _execute_calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "execute" \
                and node.args:
            yield node


CONSTANT_NAME = re.compile(r"_?[A-Z][A-Z0-9_]*")


def _only_constants(expr: ast.AST) -> bool:
    """An f-string part built from module constants alone (SQL fragments), never from a value."""
    names = [n for n in ast.walk(expr) if isinstance(n, ast.Name)]
    return all(CONSTANT_NAME.fullmatch(n.id) for n in names)


def test_no_sql_is_built_by_string_formatting():
    """Names reach SQL only through psycopg2.sql.Identifier or as bound parameters."""
    offenders = []
    for path in sorted(p for top in ("pg_cutover", "tasks", "flows") for p in (REPO_ROOT / top).rglob("*.py")):
        for call in _execute_calls(ast.parse(path.read_text())):
            query = call.args[0]
            formatted = (isinstance(query, ast.JoinedStr) and not all(
                _only_constants(v.value) for v in query.values if isinstance(v, ast.FormattedValue))) or (
                isinstance(query, ast.BinOp) and isinstance(query.op, (ast.Mod, ast.Add))) or (
                isinstance(query, ast.Call) and isinstance(query.func, ast.Attribute)
                and query.func.attr == "format" and isinstance(query.func.value, ast.Constant))
            if formatted:
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{call.lineno}")
    assert offenders == []
    # The rule itself: a value in an f-string is caught, a constant fragment is not.
    assert not _only_constants(ast.parse('f"DROP DATABASE {name}"').body[0].value.values[1].value)
    assert _only_constants(ast.parse('f"WHERE {_USER_NS}"').body[0].value.values[1].value)
    assert len(list(_execute_calls(ast.parse((REPO_ROOT / "pg_cutover" / "pg" / "db.py").read_text())))) > 5  # the scan sees calls


@pytest.mark.parametrize(("env", "setting", "phrase"), [
    ({"POSTGRES_DB": "pi'lot"}, "POSTGRES_DB", "plain identifier"),
    ({"POSTGRES_DB": "pilot\u200b"}, "POSTGRES_DB", "plain identifier"),
    ({"POSTGRES_DB": "a" * 64}, "POSTGRES_DB", "at most 63"),
    ({"CUTOVER_HEALTH_URL": "ftp://localhost:8000"}, "CUTOVER_HEALTH_URL", "http://"),
    ({"CUTOVER_HEALTH_URL": "file:///etc/passwd"}, "CUTOVER_HEALTH_URL", "http://"),
    ({"CUTOVER_HEALTH_URL": "http://"}, "CUTOVER_HEALTH_URL", "http://"),
    ({"BASELINE_REV": "0001_baseline 0002"}, "BASELINE_REV", "revision id"),
])
def test_hostile_values_not_tried_elsewhere(cutover_env, env, setting, phrase):
    for key, value in env.items():
        cutover_env.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    one_sentence(info.value, setting)
    assert phrase in str(info.value)


def assert_nothing_changed(conn, pilot, before):
    assert db.alembic_revision(conn, pilot) is None
    assert data_fingerprint(conn, pilot) == before
    assert databases_like(conn, f"{pilot}_scratch") == []
    assert databases_like(conn, f"{pilot}_baseline") == []


def fails_before_any_change(**params) -> str:
    with pytest.raises(CutoverError) as info:
        cutover(**{**APPROVED, **params})
    assert "\n" not in str(info.value)
    return str(info.value)


def test_baseline_that_is_not_an_ancestor_of_the_target(prefect_api, conn, pilot, cutover_env):
    before = data_fingerprint(conn, pilot)
    message = fails_before_any_change(baseline_rev=HEAD, target_rev="0002_brewery_slug")
    assert message == f"BASELINE_REV='{HEAD}' is not an ancestor of the target revision '0002_brewery_slug'."
    assert_nothing_changed(conn, pilot, before)


def test_a_revision_that_looks_like_an_option_never_reaches_alembic_as_one(prefect_api, conn, pilot, cutover_env):
    before = data_fingerprint(conn, pilot)
    cutover_env.setenv("BASELINE_REV", "--sql")  # accepted by the settings' alphabet; refused by the graph
    message = fails_before_any_change()
    assert message.startswith("BASELINE_REV='--sql' is not a revision") and BASELINE in message
    assert_nothing_changed(conn, pilot, before)


def test_backup_dir_that_is_not_writable(prefect_api, conn, pilot, cutover_env, tmp_path):
    before = data_fingerprint(conn, pilot)
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:
        # Permission bits do not stop root: a read-only filesystem does.
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(locked)],
                                 capture_output=True, text=True)
        if mounted.returncode != 0:
            pytest.skip(f"root, but mounting a read-only tmpfs is not permitted ({mounted.stderr.strip()})")
    else:
        locked.chmod(0o500)
    try:
        cutover_env.setenv("CUTOVER_BACKUP_DIR", str(locked / "backups"))
        message = fails_before_any_change()
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(locked)], capture_output=True)
        else:
            locked.chmod(0o700)
    assert message.startswith(f"CUTOVER_BACKUP_DIR='{locked / 'backups'}' cannot be used") or \
        message.startswith(f"CUTOVER_BACKUP_DIR='{locked / 'backups'}' is not writable"), message
    assert "expected a writable directory" in message
    assert_nothing_changed(conn, pilot, before)
