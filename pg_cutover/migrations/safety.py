"""Checks that make a migration safe to run on a live database, and evidence that it was.

Who else holds locks or long transactions on the target, the lock and statement
timeouts the alembic subprocess runs under, index integrity (amcheck), the
migration as offline SQL, and that SQL linted by squawk when it is installed.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg2
from psycopg2 import sql

from pg_cutover.errors import CommandFailed, ConfigError
from pg_cutover.migrations.runner import AlembicRunner
from pg_cutover.migrations.session import AlembicSession
from pg_cutover.pg import db
from pg_cutover.pg.db import ConnInfo
from pg_cutover.process import Runner, last_lines
from pg_cutover.values import DURATION_RE

if TYPE_CHECKING:
    import pandas as pd

QUERY_CHARS = 200

# --------------------------------------------------------------------------- blocking sessions

_SESSIONS_SQL = """
SELECT a.pid, a.usename, a.application_name, a.state,
       extract(epoch FROM clock_timestamp() - a.xact_start)::float8,
       left(a.query, %(chars)s),
       coalesce((
         SELECT array_agg(DISTINCT coalesce(n.nspname || '.' || c.relname, l.relation::text) || ' ' || l.mode
                          || CASE WHEN l.granted THEN '' ELSE ' (waiting)' END)
           FROM pg_locks l
           LEFT JOIN pg_class c ON c.oid = l.relation
           LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE l.pid = a.pid AND l.locktype = 'relation'
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       ), '{}')
FROM pg_stat_activity a
WHERE a.datname = %(db)s
  AND a.pid <> pg_backend_pid()
  AND a.backend_type = 'client backend'
  AND a.application_name IS DISTINCT FROM %(own)s
ORDER BY a.pid
"""


def blocking_sessions(conn: ConnInfo, dbname: str, *, min_xact_seconds: float = 60) -> list[dict]:
    """Other client sessions on dbname that hold relation locks there or whose transaction is old.

    This tool's own sessions (application_name 'pg-cutover') and background
    workers such as autovacuum (which yields to DDL) are left out. Each entry:
    pid, usename, application_name, state, xact_age_seconds (None outside a
    transaction), query (first 200 characters), locked_relations
    ("schema.name Mode", "(waiting)" when not granted yet).
    """
    with db.connect(conn, dbname) as c, c.cursor() as cur:
        cur.execute(_SESSIONS_SQL, {"chars": QUERY_CHARS, "db": dbname, "own": db.TOOL_APPLICATION})
        rows = cur.fetchall()
    sessions = []
    for pid, usename, app, state, xact_age, query, locks in rows:
        locks = sorted(locks or [])
        old = xact_age is not None and xact_age > min_xact_seconds
        if not locks and not old:
            continue
        sessions.append(
            {
                "pid": int(pid),
                "usename": usename,
                "application_name": app or "",
                "state": state,
                "xact_age_seconds": None if xact_age is None else round(float(xact_age), 1),
                "query": query or "",
                "locked_relations": locks,
            }
        )
    return sessions


# --------------------------------------------------------------------------- timeouts



def migration_pgoptions(lock_timeout: str, statement_timeout: str) -> str:
    """The PGOPTIONS value that puts both timeouts on every session of the alembic subprocess."""
    values = []
    for setting, name, value in (
        ("CUTOVER_LOCK_TIMEOUT", "lock_timeout", lock_timeout),
        ("CUTOVER_STATEMENT_TIMEOUT", "statement_timeout", statement_timeout),
    ):
        text = str(value).strip()
        if not DURATION_RE.fullmatch(text):
            raise ConfigError(
                f"{setting}={value!r} is not a PostgreSQL duration: expected digits with an optional unit "
                "ms, s, min or h (e.g. 5s, 500ms, 15min; 0 disables it)."
            )
        values.append(f"-c {name}={text}")
    return " ".join(values)


# --------------------------------------------------------------------------- amcheck

AMCHECK_COLUMNS = ["index", "table", "ok", "error"]


def amcheck(conn: ConnInfo, dbname: str, *, heapallindexed: bool = False) -> pd.DataFrame:
    """bt_index_check on every btree index of the user schemas; rows index, table, ok, error.

    Creates the amcheck extension in dbname if needed; when that is not possible
    the frame has one row with ok None and the reason. An index left invalid (a
    failed CREATE INDEX CONCURRENTLY) is reported as not ok without checking it.
    """
    import pandas as pd  # imported on first use: half a second off every run's start-up
    with db.connect(conn, dbname) as c, c.cursor() as cur:
        try:
            cur.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        except psycopg2.Error as exc:
            reason = " ".join(str(exc).split()) or exc.__class__.__name__
            return pd.DataFrame(
                [("(amcheck)", "", None, f"amcheck is unavailable in {dbname!r}: {reason}")], columns=AMCHECK_COLUMNS
            )
        cur.execute(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'amcheck'"
        )
        check = sql.SQL("SELECT {}.bt_index_check(%s::oid::regclass, %s)").format(sql.Identifier(cur.fetchone()[0]))
        cur.execute(
            """
            SELECT x.indexrelid, n.nspname || '.' || i.relname, tn.nspname || '.' || t.relname,
                   x.indisvalid AND x.indisready
            FROM pg_index x
            JOIN pg_class i ON i.oid = x.indexrelid
            JOIN pg_namespace n ON n.oid = i.relnamespace
            JOIN pg_class t ON t.oid = x.indrelid
            JOIN pg_namespace tn ON tn.oid = t.relnamespace
            JOIN pg_am am ON am.oid = i.relam
            WHERE am.amname = 'btree' AND i.relpersistence <> 't'
              AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
            ORDER BY 2
            """
        )
        rows = []
        for oid, index, table, valid in cur.fetchall():
            if not valid:
                rows.append((index, table, False, "index is marked invalid (an interrupted concurrent build?)"))
                continue
            try:
                cur.execute(check, (oid, heapallindexed))
                rows.append((index, table, True, None))
            except psycopg2.Error as exc:
                rows.append((index, table, False, " ".join(str(exc).split())))
    return pd.DataFrame(rows, columns=AMCHECK_COLUMNS)


# --------------------------------------------------------------------------- offline SQL


def offline_sql(alembic: AlembicRunner, dbname: str, from_rev: str, to_rev: str,
                session: AlembicSession | None = None) -> tuple[bool, str]:
    """(True, the SQL of `alembic upgrade from:to --sql`) or (False, why offline mode failed).

    In `session` (the database's warm interpreter) when one is given: offline mode opens no connection.
    """
    args = ("upgrade", f"{from_rev}:{to_rev}", "--sql")
    try:
        result = session.run(*args) if session is not None else alembic.run(dbname, *args)
    except CommandFailed as exc:
        return False, f"The migrations {from_rev}:{to_rev} could not be rendered as offline SQL: {exc}"
    return True, result.stdout


# --------------------------------------------------------------------------- squawk

LINT_COLUMNS = ["rule", "line", "message", "level"]


def squawk_binary() -> str | None:
    """squawk on PATH, else beside this interpreter (a venv not activated)."""
    found = shutil.which("squawk")
    if found:
        return found
    local = Path(sys.executable).with_name("squawk")
    return str(local) if local.exists() else None


def lint_sql(
    sql_text: str,
    *,
    squawk: str | None = None,
    exclude: list[str] | tuple[str, ...] = (),
    pg_version: str | None = None,
    timeout: float = 120,
    runner: Runner | None = None,
) -> pd.DataFrame:
    """squawk's findings on the SQL: rows rule, line (1-based), message, level; one row saying so when not installed.

    Run from a temporary directory, so no .squawk.toml of the caller applies;
    `exclude` drops rules (e.g. require-lock-timeout when PGOPTIONS sets it).
    """
    import pandas as pd  # imported on first use: half a second off every run's start-up
    binary = squawk or squawk_binary()
    if not binary:
        return pd.DataFrame(
            [("(squawk)", None, "squawk is not installed (pip package squawk-cli); the SQL was not linted.", "info")],
            columns=LINT_COLUMNS,
        )
    runner = runner or Runner()
    with tempfile.TemporaryDirectory(prefix="pg-cutover-lint-") as tmp:
        path = Path(tmp) / "migration.sql"
        path.write_text(sql_text)
        argv = [binary, "--reporter", "json"]
        if exclude:
            argv.append("--exclude=" + ",".join(exclude))
        if pg_version:
            argv.append(f"--pg-version={pg_version}")
        argv.append(path.name)
        result = runner.run(argv, timeout=timeout, cwd=tmp, check=False, what="squawk")
    # squawk exits 1 when it has findings; its JSON report is on stdout either way.
    try:
        findings = json.loads(result.stdout or "[]")
    except ValueError:
        findings = None
    if not isinstance(findings, list):
        raise CommandFailed(
            f"squawk exited with code {result.returncode} without a JSON report: "
            f"{last_lines(result.stderr or result.stdout)}",
            returncode=result.returncode,
            stderr=result.stderr,
        )
    # squawk counts lines from 0; the frame counts them as an editor does, from 1.
    rows = [
        (
            f.get("rule_name", ""),
            f["line"] + 1 if isinstance(f.get("line"), int) else None,
            _finding_message(f),
            str(f.get("level", "")).lower(),
        )
        for f in findings
    ]
    frame = pd.DataFrame(rows, columns=LINT_COLUMNS)
    return frame.sort_values(["line", "rule"], kind="stable", na_position="first").reset_index(drop=True)


def _finding_message(finding: dict) -> str:
    message = str(finding.get("message", "")).strip()
    help_text = str(finding.get("help") or "").strip()
    return f"{message} {help_text}" if help_text else message
