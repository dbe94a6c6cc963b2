"""Alembic commands on one database in one interpreter, each with its own transcript; the writes sample."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pg_cutover.checks.writes import first_reading, sample_writes
from pg_cutover.errors import CommandFailed
from pg_cutover.launcher.embedded import EXAMPLE_APP_DIR
from pg_cutover.migrations.runner import AlembicRunner
from pg_cutover.migrations.session import AlembicSession
from pg_cutover.pg import db
from pg_cutover.process import Runner, last_lines
from tests.conftest import BASELINE, HEAD
from tests.helpers import data_fingerprint


def runner(conn, command=("alembic",), app_dir=EXAMPLE_APP_DIR) -> AlembicRunner:
    return AlembicRunner(list(command), app_dir, conn, Runner())


def test_stamp_upgrade_current_share_one_interpreter_with_a_transcript_each(conn, pilot):
    alembic = runner(conn)
    assert alembic.driver_argv() is not None  # a local alembic: the driver is used

    results = alembic.run_many(pilot, [("stamp", BASELINE), ("upgrade", "head"), ("current",)])

    assert [r.argv[-2:] for r in results[:2]] == [["stamp", BASELINE], ["upgrade", "head"]]
    assert [r.returncode for r in results] == [0, 0, 0]
    assert "Running stamp_revision  -> 0001_baseline" in results[0].stderr
    assert "Running upgrade 0001_baseline -> 0002_brewery_slug" in results[1].stderr
    assert "Running upgrade" not in results[0].stderr + results[2].stderr  # output split per command
    assert results[2].stdout.strip() == f"{HEAD} (head)"
    assert db.alembic_revision(conn, pilot) == HEAD


def test_the_first_failing_command_stops_the_rest_and_keeps_its_output(conn, pilot, broken_alembic_dir):
    alembic = runner(conn, app_dir=broken_alembic_dir)

    with pytest.raises(CommandFailed, match="alembic upgrade failed with exit code 1: .*division by zero") as failed:
        alembic.run_many(pilot, [("stamp", BASELINE), ("upgrade", "head"), ("current",)])

    results = failed.value.results
    assert [r.returncode for r in results] == [0, 1]  # `current` never ran
    assert "division by zero" in results[1].transcript()
    assert db.alembic_revision(conn, pilot) == BASELINE  # the stamp stays; the whole upgrade rolled back


def test_a_warm_session_runs_each_command_when_sent_with_its_own_transcript(conn, pilot):
    with AlembicSession(runner(conn), pilot) as session:
        assert session.warm
        pid = session.proc.pid
        stamped = session.run("stamp", BASELINE)
        assert db.alembic_revision(conn, pilot) == BASELINE  # done when run returns, not at the end
        upgraded, current = session.run_many([("upgrade", "head"), ("current",)])
        assert session.proc.pid == pid  # one interpreter for all three

    assert [r.argv[-2:] for r in (stamped, upgraded)] == [["stamp", BASELINE], ["upgrade", "head"]]
    assert "Running stamp_revision  -> 0001_baseline" in stamped.stderr
    assert "Running upgrade 0001_baseline -> 0002_brewery_slug" in upgraded.stderr
    assert "Running upgrade" not in stamped.stderr + current.stderr
    assert current.stdout.strip() == f"{HEAD} (head)"
    assert db.alembic_revision(conn, pilot) == HEAD
    assert session.proc is None  # closed with the `with`



def test_production_s_session_reads_the_graph_renders_offline_sql_then_migrates(conn, pilot):
    """What the cutover sends production's one interpreter, in its order; nothing touches the
    database before the stamp."""
    from pg_cutover.migrations import safety
    before = data_fingerprint(conn, pilot)
    with AlembicSession(runner(conn), pilot) as session:
        pid = session.proc.pid
        history = session.history()
        ok, sql = safety.offline_sql(session.alembic, pilot, BASELINE, HEAD, session)
        assert db.alembic_revision(conn, pilot) is None and data_fingerprint(conn, pilot) == before
        session.run("stamp", BASELINE)
        session.run("upgrade", HEAD)
        assert session.proc.pid == pid  # one interpreter for all of it

    assert history.heads == runner(conn).history(pilot).heads == [HEAD]
    assert history.ancestors(HEAD) >= {BASELINE, HEAD}
    assert ok and "ALTER TABLE breweries ADD COLUMN slug" in sql and "UPDATE alembic_version" in sql
    assert db.alembic_revision(conn, pilot) == HEAD

def test_a_warm_session_stops_at_the_first_failure_and_keeps_its_output(conn, pilot, broken_alembic_dir):
    session = AlembicSession(runner(conn, app_dir=broken_alembic_dir), pilot)

    with pytest.raises(CommandFailed, match="alembic upgrade failed with exit code 1: .*division by zero") as failed:
        session.run_many([("stamp", BASELINE), ("upgrade", "head"), ("current",)])

    assert [r.returncode for r in failed.value.results] == [0, 1]  # `current` never ran
    assert "division by zero" in failed.value.results[1].transcript()
    assert db.alembic_revision(conn, pilot) == BASELINE
    assert session.proc is None  # a failed session is closed, not reused


def test_a_killed_warm_interpreter_is_a_failed_command_not_a_hang(conn, pilot):
    import os
    import signal

    session = AlembicSession(runner(conn), pilot)
    os.kill(session.proc.pid, signal.SIGKILL)

    with pytest.raises(CommandFailed, match="alembic stamp was killed by SIGKILL"):
        session.run("stamp", BASELINE)
    assert db.alembic_revision(conn, pilot) is None


def test_a_wrapped_command_runs_each_alembic_command_as_configured(conn, pilot):
    wrapped = ("env", str(Path(sys.executable).with_name("alembic")))  # as `docker compose exec app alembic` would be
    alembic = runner(conn, command=wrapped)
    assert alembic.driver_argv() is None

    results = alembic.run_many(pilot, [("stamp", BASELINE), ("current",)])

    assert [tuple(r.argv[:2]) for r in results] == [wrapped, wrapped]
    assert results[1].stdout.strip() == BASELINE
    history = alembic.history(pilot)
    assert history.heads == [HEAD] and history.ancestors(HEAD) >= {BASELINE, HEAD}
    session = AlembicSession(alembic, pilot)  # no warm interpreter for a wrapper: each command as configured
    assert not session.warm and session.run("current").argv[:2] == list(wrapped)


def test_history_and_heads_from_one_process_match_the_script_directory(conn, pilot):
    history = runner(conn).history(pilot)
    assert history.heads == [HEAD]
    assert history.parents[BASELINE] == () and history.resolve("head") == HEAD


def test_writes_after_an_early_first_reading_count(conn, pilot):
    reading = first_reading(conn, pilot)
    assert reading is not None
    with db.connect(conn, pilot) as writer, writer.cursor() as cur:
        cur.execute("UPDATE breweries SET city = city WHERE id = 1")
    # The writer's session has ended, so its counters are flushed.

    sample = sample_writes(conn, pilot, 0.2, since=reading)

    assert not sample.paused and sample.tuples_changed >= 1 and not sample.restarted
    assert sample_writes(conn, pilot, 0.2).paused  # a fresh sample sees no writes


def test_a_long_sample_ends_at_the_first_write_it_sees(conn, pilot):
    from pg_cutover.checks.writes import begin_sample, finish_sample

    start = begin_sample(conn, pilot, 600)
    with db.connect(conn, pilot) as writer, writer.cursor() as cur:
        cur.execute("UPDATE breweries SET city = city WHERE id = 1")

    sample = finish_sample(conn, pilot, 600, start)  # would take ten minutes without the write

    assert not sample.paused and sample.tuples_changed >= 1
    assert sample.seconds < 600  # what it covered before it saw the write, not what was asked


REVISION = '''revision = "{rev}"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
'''


def _graph_app(tmp_path: Path, revisions: dict[str, object]) -> Path:
    """A migrations directory with only revision files: the graph is read without a database."""
    app = tmp_path / "graph_app"
    (app / "migrations" / "versions").mkdir(parents=True)
    (app / "alembic.ini").write_text("[alembic]\nscript_location = migrations\n")
    (app / "migrations" / "env.py").write_text("raise SystemExit('env.py must not run to read the graph')\n")
    (app / "migrations" / "script.py.mako").write_text("")
    for rev, down in revisions.items():
        (app / "migrations" / "versions" / f"{rev}.py").write_text(REVISION.format(rev=rev, down=down))
    return app


def test_the_revision_graph_is_read_as_data_with_branches_merges_and_two_heads(conn, tmp_path):
    """base -> a -> (b, c) -> m (a merge) -> d; and a second branch a -> e: two heads, d and e."""
    app = _graph_app(tmp_path, {"a": None, "b": "a", "c": "a", "m": ("b", "c"), "d": "m", "e": "a"})
    alembic = runner(conn, app_dir=app)

    history = alembic.history("unused")

    assert history.parents == {"a": (), "b": ("a",), "c": ("a",), "m": ("b", "c"), "d": ("m",), "e": ("a",)}
    assert sorted(history.heads) == ["d", "e"]
    assert history.ancestors("d") == {"a", "b", "c", "m", "d"} and history.ancestors("e") == {"a", "e"}
    with pytest.raises(Exception, match="'head' is ambiguous: the migrations have 2 heads"):
        history.resolve("head")
    # The same graph through a warm interpreter, and through the text a wrapped alembic prints.
    with AlembicSession(alembic, "unused") as session:
        assert session.warm and session.history() == history
    wrapped = runner(conn, command=("env", str(Path(sys.executable).with_name("alembic"))), app_dir=app)
    assert wrapped.driver_argv() is None
    from_text = wrapped.history("unused")
    assert from_text.parents == history.parents and sorted(from_text.heads) == sorted(history.heads)


def test_a_failed_commands_summary_starts_at_its_exception_not_at_the_echoed_statement():
    # alembic prints the traceback, then the statement: five last lines would be the statement's tail.
    stderr = ("Traceback (most recent call last):\n    cursor.execute(statement, parameters)\n"
              "sqlalchemy.exc.InternalError: (psycopg2.errors.ReadOnlySqlTransaction) cannot execute CREATE TABLE "
              "in a read-only transaction\n\n[SQL: \nCREATE TABLE alembic_version (\n\tversion_num VARCHAR(32) NOT "
              "NULL, \n\tCONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n)\n\n]\n"
              "(Background on this error at: https://sqlalche.me/e/21/2j85)\n")
    assert last_lines(stderr).startswith("sqlalchemy.exc.InternalError: (psycopg2.errors.ReadOnlySqlTransaction) "
                                         "cannot execute CREATE TABLE in a read-only transaction | [SQL:")
    # Without a traceback: the last lines, as before.
    assert last_lines("pg_dump: error: connection lost\npg_dump: detail: server closed") == \
        "pg_dump: error: connection lost | pg_dump: detail: server closed"
