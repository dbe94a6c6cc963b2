"""The example pilot app (examples/beer_backend_api) against a real PostgreSQL.

The server is whatever POSTGRES_HOST / POSTGRES_PORT / POSTGRES_USER /
POSTGRES_PASSWORD name (default: 127.0.0.1:5432 as postgres).  Every test
works in databases of its own, named beer_test_<random>_..., dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool

APP_DIR = Path(__file__).resolve().parents[1] / "examples" / "beer_backend_api"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

from beer_app import seed  # noqa: E402
from beer_app.settings import MissingDatabaseName, database_url  # noqa: E402
from beer_app.slug import expected_slugs, slugify  # noqa: E402

HEAD = "0003_review_constraints"
BASELINE = "0001_baseline"


# The shared fixture points POSTGRES_* at the machine's server, or an embedded one when none answers.
pytestmark = pytest.mark.usefixtures("pg_target")


def _pg_dump() -> str:
    from pg_cutover.pg.db import ConnInfo, probe
    from pg_cutover.pg.tools import locate_bin_dir
    from pg_cutover.process import Runner

    url = database_url(seed.MAINTENANCE_DB)
    conn = ConnInfo(url.query.get("host") or url.host, url.port or 5432, url.username, url.password)
    bin_dir, _ = locate_bin_dir(None, probe(conn, seed.MAINTENANCE_DB) // 10000, Runner())
    return str(bin_dir / "pg_dump")


# ---------------------------------------------------------------- helpers


@pytest.fixture
def new_dbname() -> Iterator[Callable[[str], str]]:
    """Hands out unique database names; drops every one of them afterwards."""
    names: list[str] = []
    run_id = uuid.uuid4().hex[:8]

    def make(label: str) -> str:
        name = f"beer_test_{run_id}_{label}"
        names.append(name)
        return name

    yield make
    for name in names:
        seed.drop_database(name)


def _engine(dbname: str) -> Engine:
    return create_engine(database_url(dbname), poolclass=NullPool)


def _scalar(dbname: str, sql: str, **params: object) -> object:
    engine = _engine(dbname)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()
    finally:
        engine.dispose()


def _alembic(dbname: str, *args: str) -> str:
    env = {**os.environ, "POSTGRES_DB": dbname}
    proc = subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=APP_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"alembic {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


def _libpq_env(dbname: str) -> dict[str, str]:
    url = database_url(dbname)
    env = {
        **os.environ,
        "PGHOST": url.query.get("host") or url.host,
        "PGPORT": str(url.port),
        "PGUSER": url.username,
        "PGDATABASE": dbname,
    }
    if url.password:
        env["PGPASSWORD"] = url.password
    return env


def _schema_dump(dbname: str) -> str:
    """pg_dump --schema-only --no-owner, without alembic_version and dump-session noise."""
    proc = subprocess.run(
        [_pg_dump(), "--schema-only", "--no-owner"],
        env=_libpq_env(dbname),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    # Newer pg_dump brackets the script with \restrict <random key>.
    lines = [ln for ln in proc.stdout.splitlines() if not ln.startswith(("\\restrict", "\\unrestrict"))]
    blocks = re.split(r"(?m)^(?=--\n-- Name: )", "\n".join(lines))
    kept = [b for b in blocks if not (b.startswith("--\n-- Name: ") and "alembic_version" in b.splitlines()[1])]
    return "".join(kept)


def _table_checksums(dbname: str) -> dict[str, str]:
    engine = _engine(dbname)
    try:
        with engine.connect() as conn:
            return {
                table: conn.execute(
                    text(f"SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM {table} AS t")
                ).scalar_one()
                for table in ("breweries", "beers", "reviews")
            }
    finally:
        engine.dispose()


def _rename(old: str, new: str) -> None:
    """ALTER DATABASE ... RENAME, first ending the sessions that would block it."""
    engine = create_engine(database_url(seed.MAINTENANCE_DB), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"), {"d": old}
            )
            conn.execute(text(f'ALTER DATABASE "{seed.validate_dbname(old)}" RENAME TO "{seed.validate_dbname(new)}"'))
    finally:
        engine.dispose()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- pure units


def test_slugify_rules() -> None:
    assert slugify("Brew Co. #1") == "brew-co-1"
    assert slugify("brew-co-1") == "brew-co-1"
    assert slugify("  Ölbräu 6  ") == "lbr-u-6"
    assert slugify("Brasserie d'8F14 (7)") == "brasserie-d-8f14-7"
    assert slugify("a--b__c") == "a-b-c"
    assert slugify("") == "brewery"
    assert slugify("!!! ---") == "brewery"
    assert slugify("βγ Ζυθοποιία") == "brewery"
    assert slugify("\u212a\u0130") == "brewery"  # KELVIN SIGN, dotted I: no ASCII lowercasing


def test_expected_slugs_repeats_until_unique() -> None:
    rows = [(4, "ε"), (5, "Brewery 12"), (12, "βγ"), (13, "brewery"), (20, "γα")]
    # 12 and 13 lose the 'brewery' group -> brewery-12, brewery-13; brewery-12
    # then collides with row 5's own slug and row 12 (the larger id) loses again.
    assert expected_slugs(rows) == {
        4: "brewery",
        5: "brewery-12",
        12: "brewery-12-12",
        13: "brewery-13",
        20: "brewery-20",
    }
    assert len(set(expected_slugs(rows).values())) == len(rows)


def test_database_url_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POSTGRES_DB", raising=False)
    with pytest.raises(MissingDatabaseName, match="POSTGRES_DB"):
        database_url()
    monkeypatch.setenv("POSTGRES_DB", "pilot")
    monkeypatch.setenv("POSTGRES_HOST", "/var/run/postgresql")
    monkeypatch.setenv("POSTGRES_PORT", "5433")
    monkeypatch.setenv("POSTGRES_PASSWORD", "p@ss:w/rd%?#")
    url = database_url()
    assert url.host is None and url.query == {"host": "/var/run/postgresql"}
    assert (url.port, url.database, url.username, url.password) == (5433, "pilot", "postgres", "p@ss:w/rd%?#")
    assert "p@ss" not in str(url)  # str() masks the password


def test_seed_refuses_unsafe_names() -> None:
    for bad in ["", "1abc", "a-b", 'x"; DROP DATABASE postgres; --', "a" * 64, "naïve"]:
        with pytest.raises(ValueError):
            seed.validate_dbname(bad)
    assert seed.validate_dbname("_Beer_1") == "_Beer_1"


# ---------------------------------------------------------------- against PostgreSQL


def test_baseline_matches_create_all(new_dbname: Callable[[str], str]) -> None:
    pilot, migrated = new_dbname("pilot"), new_dbname("baseline")
    counts = seed.build_legacy_pilot(pilot, reviews=400)
    assert counts == {"breweries": 10, "beers": 50, "reviews": 400}
    assert _scalar(pilot, "SELECT to_regclass('public.alembic_version') IS NULL") is True

    seed.create_database(migrated)
    _alembic(migrated, "upgrade", BASELINE)
    assert _scalar(migrated, "SELECT version_num FROM alembic_version") == BASELINE
    legacy_schema, baseline_schema = _schema_dump(pilot), _schema_dump(migrated)
    assert "beers_brewery_id_fkey FOREIGN KEY" in legacy_schema
    assert baseline_schema == legacy_schema

    # The whole chain goes up and all the way back down on an empty database.
    _alembic(migrated, "upgrade", "head")
    _alembic(migrated, "downgrade", "base")
    assert _scalar(
        migrated,
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace "
        "AND relname NOT LIKE 'alembic_version%'",
    ) == 0


def test_upgrade_legacy_pilot_to_head_and_back(new_dbname: Callable[[str], str]) -> None:
    pilot = new_dbname("upgrade")
    seed.build_legacy_pilot(pilot, reviews=800)  # 20 breweries: includes the two-pass collision
    engine = _engine(pilot)
    try:
        with engine.begin() as conn:
            # Names the seeder does not make: edge cases of the SQL/Python twin.
            conn.execute(
                text("INSERT INTO breweries (name) VALUES (:n)"),
                [
                    {"n": n}
                    for n in ["", "---", "\u212a\u0130", "ÄÖÜ äöü", "tab\there\nnewline",
                              "Brew Co 0 2", "BREWERY", "x" * 200]
                ],
            )
        before = _table_checksums(pilot)
        legacy_schema = _schema_dump(pilot)
        with engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(text("SELECT id, name FROM breweries ORDER BY id"))]
            counts = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                      for t in ("breweries", "beers", "reviews")}

        _alembic(pilot, "stamp", BASELINE)
        _alembic(pilot, "upgrade", "head")

        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == HEAD
            assert {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in counts} == counts
            slugs = dict(conn.execute(text("SELECT id, slug FROM breweries")).all())
        expected = expected_slugs(rows)
        assert slugs == expected
        assert slugs[13] == "brewery-12-13"  # 'Brewery 12' met the suffixed 'brewery-12'
        assert len(set(slugs.values())) == len(slugs)

        with pytest.raises(IntegrityError, match="ck_reviews_rating_range"):
            with engine.begin() as conn:
                conn.execute(text("UPDATE reviews SET rating = 6 WHERE id = 1"))
        # The head models describe exactly what the migrations built.
        assert "No new upgrade operations detected" in _alembic(pilot, "check")

        _alembic(pilot, "downgrade", BASELINE)
        assert _scalar(pilot, "SELECT version_num FROM alembic_version") == BASELINE
        assert _schema_dump(pilot) == legacy_schema
        assert _table_checksums(pilot) == before
    finally:
        engine.dispose()


def test_offline_sql_mode() -> None:
    # --sql needs only POSTGRES_DB for the dialect; nothing is connected to.
    sql = _alembic("beer_offline_never_created", "upgrade", f"{BASELINE}:head", "--sql")
    assert "ADD COLUMN slug VARCHAR(220)" in sql
    assert "ck_reviews_rating_range CHECK (rating BETWEEN 1 AND 5)" in sql
    assert f"version_num='{HEAD}'" in sql


def test_seed_is_deterministic(new_dbname: Callable[[str], str]) -> None:
    first, second = new_dbname("det_a"), new_dbname("det_b")
    assert seed.build_legacy_pilot(first, reviews=1000) == seed.build_legacy_pilot(second, reviews=1000)
    sums = _table_checksums(first)
    assert sums == _table_checksums(second)
    assert None not in sums.values()
    engine = _engine(first)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT min(rating), max(rating) FROM reviews")).one() == (1, 5)
            assert conn.execute(text("SELECT count(*) FROM breweries WHERE city IS NULL")).scalar_one() > 0
            assert conn.execute(text("SELECT count(*) FROM beers WHERE abv IS NULL")).scalar_one() > 0
            # Explicit ids must not leave the sequences behind.
            new_id = conn.execute(text("SELECT nextval('breweries_id_seq')")).scalar_one()
            assert new_id == 26
    finally:
        engine.dispose()


def test_api_under_uvicorn(new_dbname: Callable[[str], str]) -> None:
    pilot = new_dbname("api")
    counts = seed.build_legacy_pilot(pilot, reviews=400)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "beer_app.main:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=APP_DIR,
        env={**os.environ, "POSTGRES_DB": pilot},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(f"{base}/", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, f"uvicorn exited: {proc.stderr.read() if proc.stderr else ''}"
                assert time.monotonic() < deadline, "uvicorn did not start within 20 s"
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.json() == {
            "status": "ok",
            "database": pilot,
            "revision": None,
            "breweries": counts["breweries"],
        }
        assert httpx.get(f"{base}/docs", timeout=5).status_code == 200
        listing = httpx.get(f"{base}/breweries", params={"limit": 3}, timeout=5).json()
        assert [b["id"] for b in listing] == [1, 2, 3] and "slug" not in listing[0]

        # A cutover renames the database away (ending the app's sessions) and
        # later puts an upgraded one back: the same server process follows.
        moved = new_dbname("api_moved")
        _rename(pilot, moved)
        down = httpx.get(f"{base}/", timeout=10)
        assert down.status_code == 503 and down.json()["status"] == "unavailable"
        _rename(moved, pilot)
        _alembic(pilot, "stamp", BASELINE)
        _alembic(pilot, "upgrade", "head")
        up = httpx.get(f"{base}/", timeout=10)
        assert up.status_code == 200 and up.json()["revision"] == HEAD
        listing = httpx.get(f"{base}/breweries", params={"limit": 3}, timeout=5).json()
        assert [b["slug"] for b in listing] == ["brew-co-0", "brew-co-0-2", "the-eccbc8-hop-malt-works-3"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # The server closed its pool on shutdown: nothing left to block a DROP DATABASE.
    assert _scalar(seed.MAINTENANCE_DB, "SELECT count(*) FROM pg_stat_activity WHERE datname = :d", d=pilot) == 0


def test_api_unavailable_hides_password(monkeypatch: pytest.MonkeyPatch, new_dbname: Callable[[str], str]) -> None:
    from beer_app import main

    def get(path: str) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=main.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                return await client.get(path)

        main.dispose_engine()  # the engine is per process: make it re-read the environment
        return asyncio.run(call())

    missing = new_dbname("never_created")
    monkeypatch.setenv("POSTGRES_DB", missing)
    monkeypatch.setenv("POSTGRES_PASSWORD", "Sup3r-S3cret!")
    try:
        response = get("/")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unavailable" and missing in body["error"]
        assert "Sup3r-S3cret!" not in response.text

        monkeypatch.delenv("POSTGRES_DB")
        response = get("/breweries")
        assert response.status_code == 503 and "POSTGRES_DB" in response.json()["error"]
    finally:
        main.dispose_engine()
