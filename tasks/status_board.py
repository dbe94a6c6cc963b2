"""The `pg-cutover-status` table: every database the tool has cut over, dry-run or tried, one row each.

One keyed table artifact for the whole Prefect server, so its card on the Artifacts page (which shows
a key's latest version) is the answer to "where does every database stand". Each run that ends reads
the latest version, puts its own database's row in and posts the next version with every row.

Runs on different workers end at the same moment, and two read-merge-writes that overlap would lose
one of the rows, so each is done holding the one slot of the Prefect global concurrency limit
`pg-cutover-status`. Not a PostgreSQL advisory lock: the board lives in the Prefect API, which every
run shares, while an advisory lock lives on one PostgreSQL server and a fleet spans several (two runs
on two hosts would both hold "the" lock). The slot is leased: a run killed while holding it frees it
when the lease runs out, and a live holder's lease is renewed for as long as it holds it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from pg_cutover.runbook.manifest import Manifest
from pg_cutover.tasks.evidence import OUTBOX
from pg_cutover.tasks.report import outcome_row

STATUS_KEY = "pg-cutover-status"
STATUS_LIMIT = "pg-cutover-status"
LEASE_SECONDS = 60  # the server's shortest lease
WAIT_SECONDS = 300
DESCRIPTION = ("Every database pg-cutover has cut over, dry-run or tried: one row each, the latest run's result "
               "(updated by every cutover and rollback run as it ends)")

# The words a person reads in the result column, from the manifest's own statuses.
RESULTS = {
    "succeeded": "succeeded",
    "dry-run": "dry run passed",
    "noop": "already at the target revision",
    "deferred": "deferred",
    "failed": "failed",
    "crashed": "crashed",
    "running": "running",
}


def status_row(database: str, host: str, revision: str | None, run_name: str, result: str,
               when: str | None = None) -> dict[str, Any]:
    return {"database": database, "host": host, "revision": revision, "last_run": run_name, "result": result,
            "when": when or datetime.now(timezone.utc).isoformat(timespec="seconds")}


def merge_rows(rows: list[dict[str, Any]], row: dict[str, Any]) -> list[dict[str, Any]]:
    """The board with `row` in place of its database's old row, in a stable order.

    A database is its name on its host (the same name on another server is another database).
    A run that never read the revision (deferred before preflight, skipped) leaves the last one known.
    """
    same = [r for r in rows if (r.get("database"), r.get("host")) == (row["database"], row["host"])]
    if row.get("revision") is None:
        row = {**row, "revision": same[0].get("revision") if same else ""}
    others = [r for r in rows if r not in same]
    return sorted([*others, row], key=lambda r: (str(r.get("database")), str(r.get("host"))))


def read_board(client) -> list[dict[str, Any]]:
    """The rows of the key's latest version, from the API ([] before the first run)."""
    latest = client.read_latest_artifacts(
        artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=[STATUS_KEY])), limit=1)
    if not latest:
        return []
    data = latest[0].data
    rows = json.loads(data) if isinstance(data, str) else data
    return [r for r in rows or [] if isinstance(r, dict) and "database" in r]


def update_board(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Read, merge and post the board under its lock; returns the rows posted."""
    with get_client(sync_client=True) as client:
        _ensure_limit(client)
        with concurrency(STATUS_LIMIT, occupy=1, timeout_seconds=WAIT_SECONDS, lease_duration=LEASE_SECONDS,
                         strict=True):
            rows = merge_rows(read_board(client), row)
            # Posted before the slot is given back: the next writer reads this version, never the one before.
            create_table_artifact(table=rows, key=STATUS_KEY, description=DESCRIPTION)
    return rows


def _ensure_limit(client) -> None:
    # Two runs may both find it missing; the second's create is refused, which is as good as made.
    try:
        client.read_global_concurrency_limit_by_name(STATUS_LIMIT)
        return
    except ObjectNotFound:
        pass
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    try:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=STATUS_LIMIT, limit=1))
    except ObjectAlreadyExists:
        pass


def publish_status(database: str, host: str, revision: str | None, run_name: str, result: str) -> None:
    """This database's row on the board, posted by the evidence outbox (so the caller never waits on the lock).

    The flow's drain waits for it like any artifact; a post that fails is named in its ERROR line, never
    failing the run. Without a Prefect API (a rollback run offline) it is only named as not posted.
    """
    row = status_row(database, host, revision, run_name, result)
    OUTBOX.post(STATUS_KEY, update_board, row)


def result_of(manifest: Manifest) -> str:
    """What the run came to, in the board's words: a rollback's outcome says more than the failure before it."""
    rollback = manifest.rollback.status if manifest.rollback else None
    if rollback == "restored":
        return "rolled back"
    if rollback == "refused":
        return "failed; rollback refused: production changed since the cutover"
    if rollback == "failed":
        return "failed; rollback failed"
    status = str(manifest.status)
    if status in ("failed", "crashed") and not manifest.production_touched:
        return f"{RESULTS[status]}; production untouched"
    return RESULTS.get(status, status)


def publish_manifest_status(manifest: Manifest) -> None:
    """The board's row for the run this manifest records, as it stands now (cutover or rollback)."""
    row = status_row(manifest.database, f"{manifest.host}:{manifest.port}", outcome_row(manifest)["revision_after"],
                     manifest.run_id, result_of(manifest))
    OUTBOX.post(STATUS_KEY, _update_as_this_run, row)


def _update_as_this_run(row: dict[str, Any]) -> list[dict[str, Any]]:
    # The run's name is looked up here, on the outbox's thread: outside a flow run's context Prefect asks the
    # API for it, which neither the caller nor a rollback running without the API may wait on.
    from prefect.runtime import flow_run

    return update_board({**row, "last_run": flow_run.name or row["last_run"]})
