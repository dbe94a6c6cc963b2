"""Proof before stamping, on real PostgreSQL: catalog fingerprints and their diff, the allowlist,
data parity, and the safety checks around a migration (blocking sessions, timeouts, amcheck,
offline SQL, squawk)."""

from __future__ import annotations

import copy
import json
import time
import uuid

import psycopg2
import pytest

from pg_cutover.checks import baseline, parity
from pg_cutover.errors import CommandFailed, ConfigError, PreflightError
from pg_cutover.launcher.embedded import EXAMPLE_APP_DIR
from pg_cutover.migrations import safety
from pg_cutover.migrations.runner import AlembicRunner
from pg_cutover.pg import db
from pg_cutover.pg.tools import PgClient, locate_bin_dir
from pg_cutover.process import Runner
from tests.conftest import BASELINE, HEAD, wait_for
from tests.helpers import clone_database, databases_like, drop_database, execute


@pytest.fixture(scope="module")
def alembic(conn) -> AlembicRunner:
    return AlembicRunner(["alembic"], EXAMPLE_APP_DIR, conn, Runner())


@pytest.fixture(scope="module")
def baseline_fp(conn, alembic):
    """The baseline built from nothing once for the module, dropped through dropdb --force."""
    bin_dir, major = locate_bin_dir(None, db.probe(conn, "postgres") // 10000, Runner())
    pg = PgClient(bin_dir, major, conn, Runner())
    name = f"parity_base_{uuid.uuid4().hex[:8]}"
    built = baseline.build(conn, pg, alembic, BASELINE, name)
    assert databases_like(conn, name) == []
    # The example app prints the same by DDL and by restore.
    assert built.side(conn, pg, f"{name}_normal").normal_form() == built.read
    assert databases_like(conn, name) == []
    return built.read


@pytest.fixture(scope="module")
def head_sql(alembic) -> str:
    ok, text = safety.offline_sql(alembic, "parity_offline", BASELINE, "head")
    assert ok, text
    return text


def _session(conn, dbname: str, app: str = "parity-test-blocker"):
    c = psycopg2.connect(host=conn.host, port=conn.port, user=conn.user, password=conn.password or None,
                         dbname=dbname, application_name=app)
    c.autocommit = True
    return c


def _keys(df) -> set[tuple[str, str, str]]:
    return set(zip(df["kind"], df["object"], df["property"]))


# --------------------------------------------------------------------------- schema parity


def test_fresh_pilot_equals_baseline_built_from_nothing(conn, pilot, baseline_fp):
    pilot_fp = parity.fingerprint(conn, pilot)
    df = parity.diff(pilot_fp, baseline_fp)
    assert df.empty, parity.render_markdown(df, "unexpected differences")
    assert list(df.columns) == ["kind", "object", "property", "pilot", "baseline"]
    # Every kind was read, and the objects are keyed by what they are.
    assert set(pilot_fp) == set(parity.KINDS)
    assert "public.beers USING btree (style)" in pilot_fp["index"]
    assert pilot_fp["foreign_key"]["public.beers (brewery_id) -> public.breweries (id)"]["on_delete"] == "CASCADE"
    assert pilot_fp["sequence"]["public.beers_id_seq"]["owned_by"] == "public.beers.id"
    assert not any("alembic_version" in name for kind in pilot_fp.values() for name in kind)
    # It survives a trip through a JSON manifest unchanged, in a stable order.
    assert json.loads(json.dumps(pilot_fp)) == pilot_fp
    assert json.dumps(parity.fingerprint(conn, pilot)) == json.dumps(pilot_fp)
    # alembic_version is not part of the schema: stamping changes nothing.
    execute(conn, pilot, "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
    assert parity.diff(parity.fingerprint(conn, pilot), baseline_fp).empty


def test_baseline_scratch_is_dropped_when_the_upgrade_fails(conn, alembic):
    name = f"parity_base_{uuid.uuid4().hex[:8]}"
    with pytest.raises(CommandFailed):
        baseline.build(conn, None, alembic, "no_such_revision", name)
    assert databases_like(conn, name) == []
    # An existing database of that name is never reused.
    execute(conn, "postgres", f'CREATE DATABASE "{name}"')
    try:
        with pytest.raises(PreflightError, match="already exists"):
            baseline.build(conn, None, alembic, BASELINE, name)
    finally:
        drop_database(conn, name)


def test_hand_made_drift_is_caught_row_by_row(conn, pilot, baseline_fp):
    execute(
        conn, pilot,
        "ALTER TABLE beers ADD COLUMN notes text",
        "DROP INDEX ix_beers_style",
        "ALTER TABLE breweries ALTER COLUMN city SET DEFAULT 'Unknown'",
        "CREATE TYPE mood AS ENUM ('sad', 'fine')",
        "ALTER TABLE reviews ADD COLUMN mood mood",
    )
    df = parity.diff(parity.fingerprint(conn, pilot), baseline_fp)
    rows = {(r.kind, r.object, r.property): (r.pilot, r.baseline) for r in df.itertuples()}
    assert set(rows) == {
        ("column", "public.beers.notes", "(object)"),
        ("column", "public.breweries.city", "default"),
        ("column", "public.reviews.mood", "(object)"),
        ("index", "public.beers USING btree (style)", "(object)"),
        ("enum", "public.mood", "(object)"),
    }, parity.render_markdown(df, "diff")
    assert rows[("column", "public.breweries.city", "default")] == ("'Unknown'::character varying", "(none)")
    assert rows[("column", "public.beers.notes", "(object)")][1] == "absent"
    assert rows[("column", "public.beers.notes", "(object)")][0] == "present: type=text; nullable=true"
    assert rows[("index", "public.beers USING btree (style)", "(object)")][0] == "absent"
    assert "name=ix_beers_style" in rows[("index", "public.beers USING btree (style)", "(object)")][1]
    assert rows[("enum", "public.mood", "(object)")] == ("present: labels=sad, fine", "absent")
    # Stable order: kinds in KINDS order, then object, then property.
    assert list(df["kind"]) == ["column", "column", "column", "index", "enum"]
    assert df.equals(parity.diff(parity.fingerprint(conn, pilot), baseline_fp))

    md = parity.render_markdown(df, "Schema drift: pilot vs baseline")
    assert md.startswith("### Schema drift: pilot vs baseline\n\n| kind | object | property | pilot | baseline |")
    assert "| column | public.breweries.city | default | 'Unknown'::character varying | (none) |" in md

    # An extra enum label, against the same enum with one fewer.
    before = parity.fingerprint(conn, pilot)
    execute(conn, pilot, "ALTER TYPE mood ADD VALUE 'great'")
    labels = parity.diff(parity.fingerprint(conn, pilot), before, a_name="after", b_name="before")
    assert labels.to_dict("records") == [
        {"kind": "enum", "object": "public.mood", "property": "labels", "after": "sad, fine, great",
         "before": "sad, fine"}
    ]


def test_a_renamed_constraint_reads_as_one_name_row(conn, pilot, baseline_fp):
    execute(conn, pilot, "ALTER TABLE breweries RENAME CONSTRAINT breweries_name_key TO uq_breweries_name")
    df = parity.diff(parity.fingerprint(conn, pilot), baseline_fp)
    assert _keys(df) == {
        ("unique", "public.breweries UNIQUE (name)", "name"),
        ("index", "public.breweries USING btree (name)", "name"),
    }
    assert set(df["pilot"]) == {"uq_breweries_name"} and set(df["baseline"]) == {"breweries_name_key"}


# --------------------------------------------------------------------------- allowlist


def _drifted(baseline_fp):
    pilot_fp = copy.deepcopy(baseline_fp)
    pilot_fp["column"]["public.beers.notes"] = {"type": "text", "nullable": True, "default": None}
    pilot_fp["column"]["public.breweries.city"]["default"] = "'x'::character varying"
    pilot_fp["column"]["public.breweries.city"]["type"] = "text"
    return parity.diff(pilot_fp, baseline_fp)


def test_allowlist_accepts_exactly_the_listed_differences(baseline_fp):
    df = _drifted(baseline_fp)
    assert len(df) == 3
    allow = parity.parse_allowlist("column:public.beers.notes\ncolumn:public.breweries.city:default")
    assert allow == [
        {"kind": "column", "object": "public.beers.notes"},
        {"kind": "column", "object": "public.breweries.city", "property": "default"},
    ]
    remaining, accepted = parity.apply_allowlist(df, allow)
    assert _keys(accepted) == {("column", "public.beers.notes", "(object)"),
                               ("column", "public.breweries.city", "default")}
    assert _keys(remaining) == {("column", "public.breweries.city", "type")}
    assert list(remaining.index) == [0] and list(accepted.columns) == list(df.columns)
    # Without a property an entry accepts every difference of that object; nothing else is touched.
    remaining, accepted = parity.apply_allowlist(df, parity.parse_allowlist("column:public.breweries.city"))
    assert _keys(remaining) == {("column", "public.beers.notes", "(object)")} and len(accepted) == 2
    # No prefix or near-miss matching.
    remaining, accepted = parity.apply_allowlist(df, parity.parse_allowlist("column:public.beers, index:public.beers.notes"))
    assert accepted.empty and len(remaining) == 3
    assert parity.unused_allowlist_entries(df, parity.parse_allowlist("column:public.beers")) == [
        {"kind": "column", "object": "public.beers"}]
    # An empty diff, or an empty allowlist.
    remaining, accepted = parity.apply_allowlist(df.iloc[0:0], allow)
    assert remaining.empty and accepted.empty
    remaining, accepted = parity.apply_allowlist(df, parity.parse_allowlist(""))
    assert len(remaining) == 3 and accepted.empty


def test_allowlist_forms():
    compact = parity.parse_allowlist(
        "unique:public.beers UNIQUE (brewery_id, name):name, "
        "check:public.t CHECK (((s)::text <> ''::text)), # a comment line follows\n"
        "# reviewed by alice\n"
        "index:public.reviews USING btree (created_at)"
    )
    assert compact == [
        {"kind": "unique", "object": "public.beers UNIQUE (brewery_id, name)", "property": "name"},
        {"kind": "check", "object": "public.t CHECK (((s)::text <> ''::text))"},
        {"kind": "index", "object": "public.reviews USING btree (created_at)"},
    ]
    as_json = parity.parse_allowlist(json.dumps([
        {"kind": "column", "object": "public.beers.notes", "reason": "added by hand in 2021, kept"},
        {"kind": "enum", "object": "public.mood", "property": "labels"},
    ]))
    assert as_json[0]["reason"].startswith("added by hand") and as_json[1]["property"] == "labels"


@pytest.mark.parametrize("text", [
    "public.beers.notes",                       # no kind
    "colum:public.beers.notes",                 # unknown kind
    "column:",                                  # no object
    '[{"kind": "column"}]',                     # JSON without object
    '[{"kind": "column", "object": "x", "propery": "default"}]',  # misspelt key
    '[{"kind": "column", "object": "x"',        # broken JSON
    '["column:x"]',                             # JSON item not an object
])
def test_malformed_allowlist_is_one_sentence_naming_the_setting(text):
    with pytest.raises(ConfigError) as err:
        parity.parse_allowlist(text)
    message = str(err.value)
    assert message.startswith("CUTOVER_PARITY_ALLOW has a malformed entry")
    assert "kind:object[:property]" in message and "JSON list" in message
    assert message.endswith(".") and "\n" not in message


# --------------------------------------------------------------------------- data parity


def test_data_parity_catches_deleted_and_changed_rows_and_skips_big_tables(conn, pilot):
    copy_db = f"{pilot}_copy"
    clone_database(conn, pilot, copy_db)
    try:
        tables = db.list_tables(conn, pilot)
        same = parity.data_parity(conn, pilot, copy_db, tables, checksum_max_bytes=10**12)
        assert list(same.columns) == ["table", "rows_a", "rows_b", "checksum_a", "checksum_b", "equal"]
        assert same["equal"].all() and list(same["table"]) == tables
        assert (same["checksum_a"] == same["checksum_b"]).all()
        assert same.set_index("table").loc["public.reviews", "rows_a"] == 400
        # The checksum is the data's, not the physical order's: same data, same checksum as db.py's.
        assert same["checksum_a"].str.fullmatch(r"[0-9a-f]{32}").all()

        execute(conn, copy_db, "DELETE FROM reviews WHERE id = 17")
        deleted = parity.data_parity(conn, pilot, copy_db, tables, checksum_max_bytes=10**12).set_index("table")
        assert list(deleted.index[~deleted["equal"]]) == ["public.reviews"]
        row = deleted.loc["public.reviews"]
        assert (row["rows_a"], row["rows_b"]) == (400, 399) and row["checksum_a"] != row["checksum_b"]

        # Same count, one value changed: only the checksum sees it.
        execute(conn, copy_db, "UPDATE breweries SET city = 'Gent' WHERE id = 3")
        changed = parity.data_parity(conn, pilot, copy_db, ["public.breweries"], checksum_max_bytes=10**12)
        assert changed.loc[0, "rows_a"] == changed.loc[0, "rows_b"] and not changed.loc[0, "equal"]

        # Over the limit: counts only, the checksum cells say why.
        skipped = parity.data_parity(conn, pilot, copy_db, tables, checksum_max_bytes=0).set_index("table")
        assert set(skipped["checksum_a"]) == {"skipped (size)"} == set(skipped["checksum_b"])
        assert skipped["equal"].to_dict() == {"public.beers": True, "public.breweries": True, "public.reviews": False}
        # A limit between the small tables and reviews checksums the small ones only.
        with db.connect(conn, pilot) as c, c.cursor() as cur:
            cur.execute("SELECT pg_total_relation_size('breweries'), pg_total_relation_size('reviews')")
            small, big = cur.fetchone()
        assert small < big
        mixed = parity.data_parity(conn, pilot, copy_db, ["public.breweries", "public.reviews"],
                                   checksum_max_bytes=small).set_index("table")
        assert mixed.loc["public.reviews", "checksum_a"] == "skipped (size)"
        assert len(mixed.loc["public.breweries", "checksum_a"]) == 32
        assert not mixed.loc["public.breweries", "equal"]

        # Production's half read ahead (beside the restore) and scratch's known counts: a table
        # over the limit takes the count it is given, a checksummed one is still read in full.
        ahead = parity.read_data_side(conn, pilot, ["public.breweries", "public.reviews"],
                                      checksum_max_bytes=small, known_rows={"public.reviews": 400})
        reused = parity.data_parity(conn, pilot, copy_db, ["public.breweries", "public.reviews"],
                                    checksum_max_bytes=small, stats_a=ahead,
                                    known_rows_b={"public.reviews": 399, "public.breweries": 1}).set_index("table")
        assert reused.loc["public.reviews", ["rows_a", "rows_b"]].tolist() == [400, 399]
        assert reused.loc["public.breweries", "rows_b"] == mixed.loc["public.breweries", "rows_b"] != 1
        assert reused["equal"].to_dict() == mixed["equal"].to_dict()

        # A table on one side only.
        missing = parity.data_parity(conn, pilot, copy_db, ["public.nope"], checksum_max_bytes=10**12)
        assert missing.loc[0, "rows_a"] is None and not missing.loc[0, "equal"]
        assert missing.loc[0, "checksum_a"] is None
        assert type(deleted.loc["public.reviews", "rows_b"]) is int

        rows = parity.df_to_rows(deleted.reset_index())
        assert json.loads(json.dumps(rows)) == rows and rows[2]["rows_b"] == 399
    finally:
        drop_database(conn, copy_db)
    assert databases_like(conn, copy_db) == []


def test_render_markdown_and_rows():
    import pandas as pd

    df = pd.DataFrame({"a": ["x|y", "multi\nline"], "n": [1, None], "ok": [True, False]})
    md = parity.render_markdown(df, "T")
    assert md.splitlines() == ["### T", "", "| a | n | ok |", "| --- | --- | --- |",
                               "| x\\|y | 1.0 | true |", "| multi line |  | false |"]
    assert parity.render_markdown(df.iloc[0:0], "Empty", empty="No differences.") == "### Empty\n\nNo differences.\n"
    assert parity.df_to_rows(df) == [{"a": "x|y", "n": 1.0, "ok": True}, {"a": "multi\nline", "n": None, "ok": False}]


# --------------------------------------------------------------------------- safety


def test_blocking_sessions_reports_lock_holders_and_old_transactions(conn, pilot):
    assert safety.blocking_sessions(conn, pilot) == []
    holder = _session(conn, pilot)
    ours = _session(conn, pilot, app="pg-cutover")
    idle_in_xact = _session(conn, pilot, app="parity-test-idle")
    try:
        with holder.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("LOCK TABLE reviews IN ACCESS SHARE MODE")
            cur.execute("SELECT pg_backend_pid()")
            holder_pid = cur.fetchone()[0]
        with ours.cursor() as cur:  # this tool's own sessions are never reported
            cur.execute("BEGIN")
            cur.execute("LOCK TABLE beers IN ACCESS SHARE MODE")
        with idle_in_xact.cursor() as cur:  # a transaction holding no relation lock
            cur.execute("BEGIN")
            cur.execute("SELECT txid_current()")
        time.sleep(0.2)
        found = safety.blocking_sessions(conn, pilot)
        assert [s["pid"] for s in found] == [holder_pid]
        session = found[0]
        assert session["application_name"] == "parity-test-blocker" and session["usename"] == conn.user
        assert session["state"] == "idle in transaction"
        assert session["locked_relations"] == ["public.reviews AccessShareLock"]
        assert session["xact_age_seconds"] >= 0 and "pg_backend_pid" in session["query"]
        # With a low age threshold the old transaction without locks shows up too.
        assert len(safety.blocking_sessions(conn, pilot, min_xact_seconds=0.1)) == 2
    finally:
        for c in (holder, ours, idle_in_xact):
            c.close()
    # A closed connection's backend ends a moment later: wait for that, then nothing is reported.
    wait_for("the closed sessions' backends to end", lambda: safety.blocking_sessions(conn, pilot, min_xact_seconds=0) == [],
             30, 0.05)


def test_migration_pgoptions():
    assert safety.migration_pgoptions("5s", "15min") == "-c lock_timeout=5s -c statement_timeout=15min"
    assert safety.migration_pgoptions(" 500ms", "0") == "-c lock_timeout=500ms -c statement_timeout=0"
    for lock, stmt, setting in [("5 s", "1h", "CUTOVER_LOCK_TIMEOUT"), ("5s", "15m", "CUTOVER_STATEMENT_TIMEOUT"),
                                ("5s; drop", "1h", "CUTOVER_LOCK_TIMEOUT"), ("1s", "-1", "CUTOVER_STATEMENT_TIMEOUT")]:
        with pytest.raises(ConfigError, match=f"^{setting}=.* is not a PostgreSQL duration") as err:
            safety.migration_pgoptions(lock, stmt)
        assert "\n" not in str(err.value)


def test_upgrade_under_lock_timeout_fails_fast_while_a_session_holds_a_lock(conn, pilot, alembic, monkeypatch):
    alembic.stamp(pilot, BASELINE)
    holder = _session(conn, pilot)
    try:
        with holder.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("LOCK TABLE breweries IN ACCESS SHARE MODE")  # 0002 needs ACCESS EXCLUSIVE on it
        monkeypatch.setenv("PGOPTIONS", safety.migration_pgoptions("1s", "1min"))
        started = time.monotonic()
        with pytest.raises(CommandFailed) as err:
            alembic.upgrade(pilot, HEAD)
        elapsed = time.monotonic() - started
    finally:
        holder.close()
    assert "lock timeout" in err.value.stderr and elapsed < 20
    # Transactional DDL: nothing of the migration stayed.
    assert db.alembic_revision(conn, pilot) == BASELINE


def test_amcheck_passes_on_every_index_of_a_pilot(conn, pilot):
    df = safety.amcheck(conn, pilot)
    assert list(df.columns) == ["index", "table", "ok", "error"]
    assert set(df["index"]) == {
        "public.beers_pkey", "public.breweries_pkey", "public.breweries_name_key", "public.ix_beers_style",
        "public.uq_beers_brewery_name", "public.reviews_pkey", "public.ix_reviews_beer_id",
    }
    assert df["ok"].all() and df["error"].isna().all()
    assert safety.amcheck(conn, pilot, heapallindexed=True)["ok"].all()


def test_offline_sql(alembic, head_sql):
    assert "ALTER TABLE" in head_sql and "CREATE INDEX ix_reviews_created_at" in head_sql
    ok, why = safety.offline_sql(alembic, "parity_offline", BASELINE, "no_such_revision")
    assert not ok and why.startswith(f"The migrations {BASELINE}:no_such_revision could not be rendered")


def test_lint_sql_of_the_head_migrations(head_sql, monkeypatch):
    df = safety.lint_sql(head_sql)
    assert list(df.columns) == ["rule", "line", "message", "level"]
    if safety.squawk_binary() is None:
        assert len(df) == 1 and "not installed" in df.loc[0, "message"]
    else:
        lines = head_sql.splitlines()
        index_rows = df[df["rule"] == "require-concurrent-index-creation"]
        assert len(index_rows) == 1
        assert lines[index_rows.iloc[0]["line"] - 1].startswith("CREATE INDEX ix_reviews_created_at")
        assert set(df["level"]) <= {"warning", "error"}
        excluded = safety.lint_sql(head_sql, exclude=["require-concurrent-index-creation"])
        assert "require-concurrent-index-creation" not in set(excluded["rule"]) and len(excluded) == len(df) - 1
        assert safety.lint_sql("SELECT 1;\n").empty
    monkeypatch.setattr(safety, "squawk_binary", lambda: None)
    missing = safety.lint_sql(head_sql)
    assert len(missing) == 1 and missing.loc[0, "message"].startswith("squawk is not installed")
