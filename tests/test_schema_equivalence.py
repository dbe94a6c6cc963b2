"""Schemas compared by meaning (issue 17): one schema built three ways compares equal, and each
single real change to it is still caught and named.

The ledger test app holds varchar IN checks, a native enum, a domain, defaults with casts and
functions, a sequence, expression and partial indexes, identity and serial keys, a generated
column, a view and foreign keys with actions.
"""

from __future__ import annotations

import subprocess
import uuid

import pytest

from pg_cutover.checks import baseline, equivalence, parity
from pg_cutover.migrations.runner import AlembicRunner
from pg_cutover.pg import db
from pg_cutover.pg.tools import PgClient, locate_bin_dir
from pg_cutover.process import Runner
from tests.apps import LEDGER_BASELINE, LEDGER_DIR, build_ledger_pilot
from tests.helpers import clone_database, databases_like, execute


@pytest.fixture(scope="module")
def pg(conn) -> PgClient:
    bin_dir, major = locate_bin_dir(None, db.probe(conn, "postgres") // 10000, Runner())
    return PgClient(bin_dir, major, conn, Runner())


@pytest.fixture(scope="module")
def three_ways(conn, pg, tmp_path_factory):
    """create_all; the same after pg_dump -Fc / pg_restore; the migrations from nothing (fingerprinted, dropped)."""
    tag = uuid.uuid4().hex[:8]
    made, restored = f"eq_made_{tag}", f"eq_restored_{tag}"
    build_ledger_pilot(conn, made)
    dump = tmp_path_factory.mktemp("three-ways") / "made.dump"
    subprocess.run(pg.dump_argv(made, dump), env=pg.env(), check=True, capture_output=True)
    execute(conn, "postgres", f'CREATE DATABASE "{restored}"')
    pg.restore(restored, dump)
    alembic = AlembicRunner(["alembic"], LEDGER_DIR, conn, Runner())
    built = baseline.build(conn, pg, alembic, LEDGER_BASELINE, f"eq_migrated_{tag}")
    yield made, restored, built
    for name in (made, restored):
        db.drop_databases_like(conn, name)
    assert databases_like(conn, f"eq_migrated_{tag}") == []


def side(conn, pg, name: str, dbname: str) -> equivalence.Side:
    return equivalence.Side(name, parity.fingerprint(conn, dbname),
                            normalize=lambda: equivalence.normal_fingerprint(conn, pg, dbname,
                                                                             equivalence.normal_name(dbname)))


def test_one_schema_built_three_ways_compares_equal(conn, pg, three_ways):
    made, restored, built = three_ways
    by_ddl, by_restore = side(conn, pg, "made", made), side(conn, pg, "restored", restored)

    # As read, PostgreSQL prints the restored varchar IN checks differently: the case that rolled back good upgrades.
    as_read = parity.diff(by_ddl.read, by_restore.read, a_name="made", b_name="restored")
    assert set(as_read["kind"]) == {"check"} and len(as_read) == 4

    migrated = built.side(conn, pg, f"{made}_base_normal")
    for a, b in [(by_ddl, by_restore), (by_ddl, migrated), (by_restore, migrated)]:
        comparison = equivalence.compare(a, b)
        assert comparison.differences.empty and comparison.warning is None, comparison.differences.to_string()
    assert by_ddl.read == built.read  # the baseline revision is exactly what create_all built
    assert by_restore.read == migrated.normal_form() == by_ddl.normal_form()  # a restore prints the normal form
    assert databases_like(conn, f"{made}_") == [] and databases_like(conn, f"{restored}_") == []  # scratch dropped
    # Every kind the corpus is meant to hold was read.
    for kind, obj in [("enum", "public.entry_status"), ("domain", "public.posint"), ("view", "public.active_account"),
                      ("sequence", "public.order_no_seq"), ("sequence", "public.account_id_seq")]:
        assert obj in built.read[kind], (kind, obj)
    columns = built.read["column"]
    assert columns["public.entry.total"]["generated"] == "((quantity)::numeric * unit_price)"
    assert columns["public.entry.id"]["identity"] == "by default"
    assert columns["public.account.settings"]["default"] == "'{}'::jsonb"


# One real change each: (statements, kind, a text the differing object's key holds, property).
CHANGES = {
    "value added to a varchar IN check": (
        ["ALTER TABLE account DROP CONSTRAINT ck_account_kind",
         "ALTER TABLE account ADD CONSTRAINT ck_account_kind CHECK (kind IN ('person', 'company', 'trust'))"],
        "check", "'trust'", "(object)"),
    "changed default with a cast": (["ALTER TABLE account ALTER COLUMN settings SET DEFAULT '[]'::jsonb"],
                                    "column", "public.account.settings", "default"),
    "dropped index predicate": (["DROP INDEX ix_entry_open", "CREATE INDEX ix_entry_open ON entry (account_id)"],
                                "index", "WHERE (status = 'open'::entry_status)", "(object)"),
    "other expression indexed": (["DROP INDEX ix_account_lower_name",
                                  "CREATE INDEX ix_account_lower_name ON account (upper(name))"],
                                 "index", "upper", "(object)"),
    "value added to a native enum": (["ALTER TYPE entry_status ADD VALUE 'refunded'"],
                                     "enum", "public.entry_status", "labels"),
    "domain check changed": (["ALTER DOMAIN posint DROP CONSTRAINT posint_positive",
                              "ALTER DOMAIN posint ADD CONSTRAINT posint_positive CHECK (VALUE >= 0)"],
                             "domain", "public.posint", "checks"),
    "view condition changed": (["CREATE OR REPLACE VIEW active_account AS SELECT id, name, kind FROM account "
                                "WHERE lifecycle_stage IN ('active', 'deleted') AND kind = 'person'"],
                               "view", "public.active_account", "definition"),
    "foreign key action changed": (["ALTER TABLE entry DROP CONSTRAINT fk_entry_account_id_account",
                                    "ALTER TABLE entry ADD CONSTRAINT fk_entry_account_id_account FOREIGN KEY "
                                    "(account_id) REFERENCES account (id) ON DELETE RESTRICT ON UPDATE CASCADE"],
                                   "foreign_key", "public.entry (account_id)", "on_delete"),
    "generated column no longer generated": (["ALTER TABLE entry ALTER COLUMN total DROP EXPRESSION"],
                                             "column", "public.entry.total", "generated"),
    "identity made always": (["ALTER TABLE entry ALTER COLUMN id SET GENERATED ALWAYS"],
                             "column", "public.entry.id", "identity"),
    "sequence start changed": (["ALTER SEQUENCE order_no_seq START WITH 5000"],
                               "sequence", "public.order_no_seq", "start"),
    "serial default dropped": (["ALTER TABLE account ALTER COLUMN id DROP DEFAULT"],
                               "column", "public.account.id", "default"),
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_each_real_change_is_caught_and_named(conn, pg, three_ways, name):
    statements, kind, key_text, prop = CHANGES[name]
    made, restored, built = three_ways
    changed = f"eq_changed_{uuid.uuid4().hex[:8]}"
    clone_database(conn, restored, changed)  # a restored pilot, changed by DDL: printed both ways at once
    try:
        execute(conn, changed, *statements)
        comparison = equivalence.compare(side(conn, pg, "pilot", changed), built.side(conn, pg, f"{changed}_base"))
    finally:
        db.drop_databases_like(conn, changed)
    df = comparison.differences
    assert comparison.normalized and comparison.warning is None
    assert not df.empty and set(df["kind"]) == {kind}, df.to_string()
    assert any(key_text in obj and row_prop == prop for obj, row_prop in zip(df["object"], df["property"])), df.to_string()
    if prop != "(object)":  # one row holds both sides' texts
        row = df[df["property"] == prop].iloc[0]
        assert row["pilot"] != row["baseline"]


def test_normal_form_that_cannot_be_had_leaves_the_differences_standing_with_a_warning(conn, pg, three_ways):
    made, restored, built = three_ways
    missing = equivalence.Side("pilot", parity.fingerprint(conn, restored),
                               normalize=lambda: equivalence.normal_fingerprint(conn, pg, "no_such_db_here", "x_normal"))
    comparison = equivalence.compare(missing, built.side(conn, pg, f"{made}_base"))
    assert len(comparison.differences) == 4 and not comparison.normalized
    assert comparison.warning and "could not be compared in normal form" in comparison.warning
