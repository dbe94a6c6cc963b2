"""Small readers used by several tests: artifacts from the Prefect API, data fingerprints."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from uuid import UUID

from pg_cutover.pg import db
from pg_cutover.pg.db import ConnInfo


def artifacts_of(flow_run_id: UUID) -> dict[str, object]:
    """key -> data of every keyed artifact a flow run created, read back from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            )

    return {a.key: a.data for a in asyncio.run(read()) if a.key}


def data_fingerprint(conn: ConnInfo, dbname: str) -> dict[str, tuple[int, str]]:
    """(row count, checksum of every row) per table, alembic_version excluded."""
    tables = db.list_tables(conn, dbname)
    counts = db.row_counts(conn, dbname, tables)
    sums = db.table_checksums(conn, dbname, tables)
    return {t: (counts[t], sums[t]) for t in tables}


def databases_like(conn: ConnInfo, prefix: str) -> list[str]:
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1", (prefix + "%",))
        return [r[0] for r in cur.fetchall()]


def artifacts_with_key(key: str) -> list[str]:
    """Data of every artifact with this key, newest first, from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC
            )

    return [a.data for a in asyncio.run(read())]


def execute(conn: ConnInfo, dbname: str, *statements: str) -> None:
    """Run each statement in dbname with autocommit (ALTER TYPE ... ADD VALUE included)."""
    with db.connect(conn, dbname) as c, c.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def clone_database(conn: ConnInfo, source: str, target: str) -> None:
    """CREATE DATABASE target TEMPLATE source, after ending the sessions on source."""
    from psycopg2 import sql

    db.terminate_sessions(conn, source)
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(target), sql.Identifier(source)))


def drop_database(conn: ConnInfo, name: str) -> None:
    """Drop name if it exists, ending its sessions first."""
    from psycopg2 import sql

    db.terminate_sessions(conn, name)
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def run_lock_held(conn: ConnInfo, database: str) -> bool:
    """Whether some session holds the cutover lock of database (as a live cutover does), read from pg_locks."""
    from pg_cutover.rollback.restore import run_lock_name

    key = db._lock_key(run_lock_name(database))
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
                    "AND classid::bigint = %s AND objid::bigint = %s)", ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF))
        return cur.fetchone()[0]


def heartbeat_events(flow_run_id, wait_seconds: float = 30.0) -> list[dict]:
    """The `prefect.flow-run.heartbeat` events the Prefect API holds for a flow run (waits for the first to be stored)."""
    import time

    import httpx
    from prefect.settings import PREFECT_API_URL

    query = {"filter": {"event": {"name": ["prefect.flow-run.heartbeat"]},
                        "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]}}, "limit": 50}
    deadline = time.monotonic() + wait_seconds
    while True:
        found = httpx.post(PREFECT_API_URL.value() + "/events/filter", json=query, timeout=10).json()["events"]
        if found or time.monotonic() > deadline:
            time.sleep(1.0 if found else 0)  # events sent together are stored together; one more look
            return httpx.post(PREFECT_API_URL.value() + "/events/filter", json=query, timeout=10).json()["events"]
        time.sleep(0.5)


def rollback_runs_of(cutover_run_id) -> list:
    """Rollback flow runs started for this cutover (by its hooks or a trigger), from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    async def read():
        async with get_client() as client:
            runs = await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["rollback"])))
        return [r for r in runs if r.parameters.get("manifest") == str(cutover_run_id)]

    return asyncio.run(read())


def processes_with_home(prefect_home: Path) -> list[str]:
    """Command lines of live processes whose environment names this PREFECT_HOME."""
    marker = f"PREFECT_HOME={prefect_home}".encode() + b"\0"
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker in (proc / "environ").read_bytes() + b"\0":
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found
