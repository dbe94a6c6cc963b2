"""Two schemas compared by meaning, not by how PostgreSQL happens to print them.

PostgreSQL prints some expressions differently depending on how they were
created. A CHECK `s IN ('a', 'b')` on a varchar column made by DDL prints as
`(s)::text = ANY ((ARRAY['a'::character varying, ...])::text[])`; the same
constraint after pg_dump and pg_restore prints as
`(s)::text = ANY (ARRAY[('a'::character varying)::text, ...])`. Catalogs read
as text therefore differ between a database built by DDL and its restored copy,
although the two are the same schema.

One dump/restore round trip reaches a fixed point (restoring a restored schema
prints it the same way again), so a schema's *normal form* is its fingerprint
after a schema-only pg_dump restored into an empty database of the same server.
Two sides whose fingerprints differ as read are compared again in normal form;
only what still differs there is a real difference. Sides that already agree
as read cost nothing more.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg2
from psycopg2 import sql

from pg_cutover.checks import parity
from pg_cutover.checks.parity import Fingerprint
from pg_cutover.errors import CutoverError
from pg_cutover.pg import db
from pg_cutover.pg.db import ConnInfo
from pg_cutover.pg.tools import PgClient

if TYPE_CHECKING:
    import pandas as pd


def normal_name(of: str) -> str:
    """The scratch database that prints `of`'s schema by the normal route: recognisable, within 63 bytes."""
    name = f"{of}_normal"
    if len(name) <= 63:
        return name
    return f"{of[:46]}_{hashlib.sha256(of.encode()).hexdigest()[:8]}_normal"


def normal_fingerprint(conn: ConnInfo, pg: PgClient, dbname: str, scratch_name: str) -> Fingerprint:
    """dbname's fingerprint as a restore of its schema prints it; scratch_name is created and dropped."""
    with tempfile.TemporaryDirectory(prefix="pg-cutover-normal-") as tmp:
        archive = Path(tmp) / "schema.dump"
        pg.dump_schema_archive(dbname, archive)
        return restored_fingerprint(conn, pg, archive, scratch_name)


def schema_archive(pg: PgClient, dbname: str) -> bytes:
    """dbname's schema-only archive, kept to print its schema by the normal route after dbname is gone."""
    with tempfile.TemporaryDirectory(prefix="pg-cutover-normal-") as tmp:
        archive = Path(tmp) / "schema.dump"
        pg.dump_schema_archive(dbname, archive)
        return archive.read_bytes()


def archive_fingerprint(conn: ConnInfo, pg: PgClient, archive: bytes, scratch_name: str) -> Fingerprint:
    with tempfile.TemporaryDirectory(prefix="pg-cutover-normal-") as tmp:
        path = Path(tmp) / "schema.dump"
        path.write_bytes(archive)
        return restored_fingerprint(conn, pg, path, scratch_name)


def restored_fingerprint(conn: ConnInfo, pg: PgClient, archive: Path, scratch_name: str) -> Fingerprint:
    """The fingerprint of a schema archive restored into scratch_name (created, then dropped)."""
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(scratch_name)))
    try:
        pg.restore_schema(scratch_name, archive)
        return parity.fingerprint(conn, scratch_name)
    finally:
        pg.dropdb(scratch_name)


@dataclass
class Side:
    """One side of a comparison: its fingerprint as read, and its normal form or how to get it."""

    name: str
    read: Fingerprint
    normal: Fingerprint | None = None
    normalize: Callable[[], Fingerprint] | None = None

    def normal_form(self) -> Fingerprint:
        if self.normal is None:
            if self.normalize is None:
                raise CutoverError(f"{self.name}'s normal form is not available")
            self.normal = self.normalize()
        return self.normal


@dataclass
class Comparison:
    """What differs in meaning; what differed as read, kept as evidence when the normal form settled it."""

    differences: pd.DataFrame
    as_read: pd.DataFrame
    normalized: bool = False
    warning: str | None = None  # why the normal form could not be had; the differences as read then stand

    def summary(self) -> str:
        if self.warning:
            return self.warning
        if not self.normalized:
            return "equal as read" if self.differences.empty else f"{len(self.differences)} differences"
        return (f"{len(self.as_read)} differences as read, {len(self.differences)} in meaning "
                "(both sides compared again after a schema-only dump and restore)")


def compare(a: Side, b: Side) -> Comparison:
    """Diff as read; when that finds anything, diff again in normal form (both sides at once)."""
    as_read = parity.diff(a.read, b.read, a_name=a.name, b_name=b.name)
    if as_read.empty:
        return Comparison(as_read, as_read)
    try:
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="normal-form") as pool:
            forms = [pool.submit(side.normal_form) for side in (a, b)]
            normal_a, normal_b = (f.result() for f in forms)
    except (CutoverError, psycopg2.Error, OSError) as exc:
        reason = " ".join(str(exc).split())[:500]
        return Comparison(as_read, as_read, warning=f"The schemas differ as read and could not be compared in normal form "
                                           f"(a schema-only pg_dump restored into a scratch database): {reason}")
    return Comparison(parity.diff(normal_a, normal_b, a_name=a.name, b_name=b.name), as_read, normalized=True)
