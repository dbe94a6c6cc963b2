"""The baseline built from nothing: what `alembic stamp BASELINE_REV` claims the pilot is.

A new empty database, optionally given the app's first schema by the operator's
bootstrap command (apps whose first revision alters tables that `create_all` of
their initial models made), upgraded to the baseline revision, fingerprinted as
read and in normal form (pg_cutover.checks.equivalence), then dropped.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from psycopg2 import errors as pg_errors
from psycopg2 import sql

from pg_cutover.checks import equivalence, parity
from pg_cutover.checks.parity import Fingerprint
from pg_cutover.errors import CommandFailed, PreflightError
from pg_cutover.migrations.runner import AlembicRunner
from pg_cutover.pg import db
from pg_cutover.pg.db import ConnInfo
from pg_cutover.pg.tools import PgClient

BOOTSTRAP_SETTING = "CUTOVER_BASELINE_BOOTSTRAP"
_MISSING_RELATION = re.compile(r'relation "([^"]+)" does not exist')


@dataclass
class Baseline:
    revision: str
    read: Fingerprint
    # Its schema-only archive (None when built without pg tools): the normal form is printed from it
    # only when a comparison needs it, so the common case pays for one pg_dump, not a restore.
    archive: bytes | None = None
    bootstrap: str | None = None  # the bootstrap command's transcript, when one laid down the first schema

    def side(self, conn: ConnInfo, pg: PgClient, scratch_name: str) -> equivalence.Side:
        if self.archive is None:
            return equivalence.Side("baseline", self.read)
        archive = self.archive
        return equivalence.Side("baseline", self.read, normalize=lambda: equivalence.archive_fingerprint(
            conn, pg, archive, scratch_name))


def build(conn: ConnInfo, pg: PgClient | None, alembic: AlembicRunner, baseline_rev: str, scratch_name: str,
          bootstrap: list[str] | None = None) -> Baseline:
    """Build, fingerprint and drop the baseline (with `pg.dropdb --force` when a PgClient is given)."""
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        try:
            cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(scratch_name)))
        except pg_errors.DuplicateDatabase:
            raise PreflightError(
                f"The baseline scratch database {scratch_name!r} already exists; drop it or pick another name, "
                "it is never reused because it must start empty."
            ) from None
    try:
        laid = _bootstrap(alembic, scratch_name, bootstrap) if bootstrap else None
        try:
            alembic.upgrade(scratch_name, baseline_rev)
        except CommandFailed as exc:
            missing = _MISSING_RELATION.search(exc.stderr or "")
            if missing and not bootstrap:
                raise PreflightError(
                    f"The migrations up to {baseline_rev} cannot build the baseline from nothing: they use table "
                    f"{missing.group(1)!r}, which no revision creates; if the app's first schema came from "
                    f"create_all, set {BOOTSTRAP_SETTING} to a command that creates it."
                ) from None
            raise
        read = parity.fingerprint(conn, scratch_name)
        archive = equivalence.schema_archive(pg, scratch_name) if pg is not None else None
        return Baseline(baseline_rev, read, archive, laid)
    finally:
        parity.drop_database(conn, scratch_name, pg)


def _bootstrap(alembic: AlembicRunner, dbname: str, argv: list[str]) -> str:
    """The operator's command for the app's first schema, run like an alembic command on the empty database."""
    try:
        result = alembic.runner.run(argv, timeout=alembic.timeout, env_extra=alembic.env(dbname), cwd=alembic.cwd,
                                    what=BOOTSTRAP_SETTING)
    except CommandFailed as exc:
        tail = " ".join((exc.stderr or "").split())[-300:]
        raise PreflightError(f"{BOOTSTRAP_SETTING} ({shlex.join(argv)}) failed on the empty baseline database: "
                             f"{exc}{' ' + tail if tail else ''}") from None
    return result.transcript()
