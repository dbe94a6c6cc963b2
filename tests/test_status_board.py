"""The `pg-cutover-status` board: one row per database, read back from the Prefect API as a person sees it
(the latest version of the key), and no row lost when runs update it at the same moment."""

from __future__ import annotations

import contextvars
import json
import threading
import uuid

import pytest

from pg_cutover.runbook.manifest import Manifest, RollbackRecord
from pg_cutover.tasks import status_board
from pg_cutover.tasks.status_board import (
    STATUS_KEY,
    STATUS_LIMIT,
    merge_rows,
    publish_manifest_status,
    publish_status,
    result_of,
    status_row,
    update_board,
)


def _latest() -> list[dict]:
    """The rows of the key's latest version: what its card on the Artifacts page shows."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return status_board.read_board(client)


def _versions() -> list[list[dict]]:
    """Every version of the key, oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[STATUS_KEY])),
                                      sort=ArtifactSort.CREATED_DESC)
    return [json.loads(a.data) for a in reversed(found)]


def _names(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"board_{tag}_{i}" for i in range(n)]


def _mine(rows: list[dict], names: list[str]) -> dict[str, dict]:
    return {r["database"]: r for r in rows if r["database"] in names}


def test_merge_replaces_the_database_row_on_its_host_and_keeps_the_last_known_revision():
    rows = [status_row("pilot", "db1:5432", "0003", "run-a", "succeeded", "2026-01-01T00:00:00+00:00"),
            status_row("pilot", "db2:5432", "none", "run-b", "dry run passed")]
    merged = merge_rows(rows, status_row("pilot", "db1:5432", None, "run-c", "deferred"))
    assert [(r["host"], r["last_run"], r["result"], r["revision"]) for r in merged] == [
        ("db1:5432", "run-c", "deferred", "0003"),  # a run that never read the revision keeps the last one
        ("db2:5432", "run-b", "dry run passed", "none"),  # the same name on another server is another database
    ]
    assert [r["database"] for r in merge_rows(merged, status_row("alpha", "db1:5432", "x", "r", "failed"))] == [
        "alpha", "pilot", "pilot"]


def _manifest(**values) -> Manifest:
    base = dict(run_id="run-1", database="pilot", host="db1", port=5432, dry_run=False, strategy="runbook",
                auto_rollback=True, baseline_rev="0001", target_rev="head", revision_before=None, checklist={})
    return Manifest(**{**base, **values})


def test_result_words_from_the_manifest():
    assert result_of(_manifest(status="dry-run", dry_run=True)) == "dry run passed"
    assert result_of(_manifest(status="succeeded")) == "succeeded"
    assert result_of(_manifest(status="noop")) == "already at the target revision"
    assert result_of(_manifest(status="deferred")) == "deferred"
    assert result_of(_manifest(status="failed")) == "failed; production untouched"
    touched = _manifest(status="failed", production_touched=True)
    assert result_of(touched) == "failed"
    touched.rollback = RollbackRecord(status="restored")
    assert result_of(touched) == "rolled back"
    touched.rollback = RollbackRecord(status="refused")
    assert result_of(touched).startswith("failed; rollback refused")


def test_each_run_posts_a_version_with_every_row(prefect_api):
    from pg_cutover.tasks.evidence import OUTBOX

    one, two = _names(2)
    before = len(_versions())
    publish_status(one, "db1:5432", "none", "first-run", "dry run passed")
    publish_manifest_status(_manifest(database=two, status="succeeded", revision_after="0003_head"))
    assert OUTBOX.drain() == []
    mine = _mine(_latest(), [one, two])
    assert mine[one]["result"] == "dry run passed" and mine[one]["revision"] == "none"
    assert mine[one]["last_run"] == "first-run" and mine[one]["when"].endswith("+00:00")
    # Outside a flow run the manifest's run id stands for the run's name.
    assert (mine[two]["host"], mine[two]["revision"], mine[two]["last_run"], mine[two]["result"]) == (
        "db1:5432", "0003_head", "run-1", "succeeded")

    publish_status(one, "db1:5432", "0003_head", "second-run", "succeeded")
    assert OUTBOX.drain() == []
    mine = _mine(_latest(), [one, two])
    assert mine[one]["last_run"] == "second-run" and mine[one]["revision"] == "0003_head"
    assert mine[two]["result"] == "succeeded"  # the other database's row survived
    assert len(_versions()) == before + 3


def test_concurrent_updates_lose_no_row(prefect_api):
    names = _names(8)
    before = len(_versions())
    start = threading.Barrier(len(names))
    failures = []

    def write(name: str) -> None:
        start.wait()
        try:
            update_board(status_row(name, "db1:5432", "0003_head", f"run-{name}", "succeeded"))
        except Exception as exc:  # noqa: BLE001 (reported by the assertion below)
            failures.append(exc)

    # Threads do not inherit the context that points at the test's Prefect API: each gets a copy.
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(write, n)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures and not any(t.is_alive() for t in threads)
    assert sorted(_mine(_latest(), names)) == sorted(names)
    # One writer at a time: every version holds all the rows of the one before it, plus its own.
    grown = [len(_mine(v, names)) for v in _versions()[before:]]
    assert grown == list(range(1, len(names) + 1))


def test_a_writer_waits_for_the_lock_and_merges_what_the_holder_posted(prefect_api, monkeypatch):
    from prefect.artifacts import create_table_artifact
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    holder, waiter = _names(2)
    with get_client(sync_client=True) as client:
        status_board._ensure_limit(client)
    reading = threading.Event()
    read = status_board.read_board

    def read_and_say(client):
        reading.set()
        return read(client)

    monkeypatch.setattr(status_board, "read_board", read_and_say)
    with concurrency(STATUS_LIMIT, occupy=1, lease_duration=60, strict=True):
        writer = threading.Thread(target=contextvars.copy_context().run,
                                  args=(update_board, status_row(waiter, "db1:5432", "x", "waiter-run", "failed")))
        writer.start()
        # While the slot is held the writer never reads the board (a loaded machine only makes this likelier).
        assert not reading.wait(3)
        with get_client(sync_client=True) as client:
            rows = merge_rows(read(client), status_row(holder, "db1:5432", "y", "holder", "rolled back"))
        create_table_artifact(table=rows, key=STATUS_KEY, description="written by the test while holding the lock")
    writer.join(120)
    assert not writer.is_alive() and reading.is_set()
    mine = _mine(_latest(), [holder, waiter])
    assert sorted(mine) == sorted([holder, waiter])
    assert mine[holder]["result"] == "rolled back" and mine[waiter]["result"] == "failed"


def test_offline_the_row_is_named_not_sent():
    from pg_cutover.tasks.evidence import OUTBOX

    with OUTBOX.offline() as unposted:
        publish_status("pilot", "db1:5432", None, "rollback-without-prefect", "rolled back")
    assert unposted == [STATUS_KEY]


@pytest.fixture(autouse=True)
def _no_stray_outbox_failures():
    yield
    from pg_cutover.tasks.evidence import OUTBOX

    assert OUTBOX.drain() == []


def test_inside_a_flow_run_the_row_names_that_run(prefect_api):
    from prefect import flow, get_run_logger
    from prefect.runtime import flow_run

    from pg_cutover.tasks.evidence import evidence_drained

    (name,) = _names(1)

    @flow(name="status-board-writer")
    def writer() -> str:
        with evidence_drained(get_run_logger()):
            publish_manifest_status(_manifest(database=name, status="dry-run", dry_run=True))
        return flow_run.name

    run_name = writer()
    row = _mine(_latest(), [name])[name]
    assert (row["last_run"], row["result"], row["revision"]) == (run_name, "dry run passed", "none")
