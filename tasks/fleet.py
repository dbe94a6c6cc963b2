"""Fleet tasks: one cutover per target as a run of the cutover deployment, under global limits.

Each target's cutover is its own flow run of a deployment, so any worker of the
pool, on any machine, may take it; the fleet only orders, limits and reports.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactUpdate
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
)
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import ArtifactSort
from prefect.concurrency.sync import concurrency
from prefect.deployments import run_deployment

from pg_cutover.errors import ConfigError
from pg_cutover.runbook.fleet import FINAL, FLEET_LIMIT, FleetBoard, count_statuses_of, host_limit_name, target_status
from pg_cutover.runbook.inventory import Inventory, Target
from pg_cutover.tasks.evidence import artifact_key
from pg_cutover.tasks.report import OUTCOME
from pg_cutover.tasks.status_board import publish_status

ROLLBACK_FLOW = "rollback"
TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
# A rollback is started by the cutover's own hook within seconds of its failure; none at all
# by then means the hook did not run and no trigger is deployed.
ROLLBACK_APPEARS_SECONDS = 180
SUMMARY_KEY = "fleet-summary"
PROGRESS_KEY = "fleet-progress"


class FleetView:
    """What the Prefect UI shows of a fleet: a progress bar and a live table while it runs, one summary at the end.

    Every version of a keyed artifact stays in the flow run's artifacts as a card of its own, the
    first of them (every target queued) as prominent as the last. So nothing keyed is posted more
    than once: the progress bar and an unkeyed live table are each created once and updated in place
    (PATCH), and the keyed `fleet-summary` table is created once, after every target has finished,
    with their final states; the card for its key is then the final table whichever way it is opened.
    """

    def __init__(self, rows: list[dict]) -> None:
        self.targets = len(rows)
        self.progress = create_progress_artifact(progress=0.0, key=PROGRESS_KEY,
                                                 description=self._describe(rows))
        self.live = create_table_artifact(
            table=rows, description="Fleet cutover, live: one row per target, updated in place while the fleet runs "
                                    f"(the final table is the {SUMMARY_KEY} artifact)")

    def _describe(self, rows: list[dict]) -> str:
        counts = count_statuses_of(r["status"] for r in rows)
        return f"Fleet cutover: {self.targets} targets; " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))

    def show(self, rows: list[dict]) -> None:
        """The live table and the progress bar as the rows are now (the caller orders the calls)."""
        with get_client(sync_client=True) as client:
            client.update_artifact(self.live, ArtifactUpdate(data=json.dumps(rows)))
        done = sum(1 for r in rows if r["status"] in FINAL)
        update_progress_artifact(self.progress, progress=round(100.0 * done / len(rows), 1),
                                 description=self._describe(rows))

    def summarize(self, rows: list[dict], dry_run: bool) -> None:
        """The one `fleet-summary` table: every target's final state."""
        self.show(rows)
        what = "dry run" if dry_run else "cutover"
        create_table_artifact(table=rows, key=SUMMARY_KEY,
                              description=f"Fleet {what}: the final state of every target, one row each")


def check_deployment(name: str) -> None:
    """Refuse before approval when no cutover deployment is there to run the targets."""
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise ConfigError(f"deployment {name} is not registered on this Prefect server; expected it from "
                              "prefect.yaml (python deployments/deploy.py) and a worker on its pool.") from None


def ensure_limits(inventory: Inventory) -> dict[str, int]:
    """Create or resize the global concurrency limits the fleet's targets take slots from."""
    wanted = {host_limit_name(host): inventory.per_host_limit for host in inventory.hosts()}
    wanted[FLEET_LIMIT] = inventory.max_parallel
    with get_client(sync_client=True) as client:
        for name, limit in wanted.items():
            client.upsert_global_concurrency_limit_by_name(name, limit)
    return wanted


class Halt(threading.Event):
    """Set by the first failure under policy halt; remembers which target it was."""

    by: str | None = None


class StartOrder:
    """Targets on one host start in inventory order (a canary listed first goes first): a later
    target never takes that host's slot before an earlier one has."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next: dict[str, int] = {}

    @contextlib.contextmanager
    def turn(self, host: str, position: int):
        with self._cond:
            self._cond.wait_for(lambda: self._next.get(host, 0) == position)
        try:
            yield
        finally:
            with self._cond:
                self._next[host] = position + 1
                self._cond.notify_all()


@task(name="fleet-target", cache_policy=NO_CACHE, task_run_name="cutover-{target.name}")
def run_target(target: Target, position: int, order: StartOrder, inventory: Inventory, parameters: dict[str, Any],
               board: FleetBoard, halted: Halt, fleet_run_id: str, rollback_wait_seconds: float) -> dict[str, Any]:
    """Hold a slot on the target's host and in the fleet, run its cutover, wait for any rollback."""
    try:
        return _cutover_one(target, position, order, inventory, parameters, board, halted, fleet_run_id,
                            rollback_wait_seconds)
    except Exception as exc:
        # The row must say it, whatever broke (deployment missing, API gone): the others go on.
        if inventory.policy == "halt" and not halted.is_set():
            halted.by = target.name
            halted.set()
        note = f"{exc.__class__.__name__}: {exc}"[:300]
        # "running" is set just before its cutover run is asked for: from then on that run has its own say.
        launched = next(r for r in board.rows if r.target == target.name).status in ("running", "rolling back")
        board.update(target.name, status="failed", note=note)
        if not launched:
            _board_status(target, f"failed before its cutover run started: {note}")
        raise


def _board_status(target: Target, result: str) -> None:
    """For a target whose cutover run never started: its row on `pg-cutover-status`, from the fleet's run."""
    from prefect.runtime import flow_run

    publish_status(target.database, target.host_key(), None, flow_run.name or "fleet", result)


def _cutover_one(target: Target, position: int, order: StartOrder, inventory: Inventory, parameters: dict[str, Any],
                 board: FleetBoard, halted: Halt, fleet_run_id: str, rollback_wait_seconds: float) -> dict[str, Any]:
    log = get_run_logger()
    host = target.host_key()
    board.update(target.name, status="waiting for a slot", publish=False)
    with contextlib.ExitStack() as slots:
        with order.turn(host, position):
            slots.enter_context(concurrency([host_limit_name(host), FLEET_LIMIT], occupy=1, strict=True))
        if halted.is_set():
            log.warning("%s skipped: policy halt after %s failed.", target.name, halted.by)
            _board_status(target, f"not started: the fleet halted after {halted.by} failed")
            return board.update(target.name, status="skipped", note=f"policy halt: {halted.by} failed").__dict__
        board.update(target.name, status="running")
        child = run_deployment(
            inventory.deployment,
            parameters={**parameters, "target": target.model_dump(exclude_none=True)},
            flow_run_name=f"{target.name}-{target.database}",
            tags=["pg-cutover-fleet", f"fleet-{fleet_run_id[:8]}"],
            idempotency_key=f"fleet-{fleet_run_id}-{target.name}",
            poll_interval=2,
            timeout=None,
        )
        child = _final(child)
        outcome = read_outcome(child.id, target.database) or {}
        row = dict(
            flow_run=str(child.id),
            started=_iso(child.start_time),
            finished=_iso(child.end_time),
            seconds=child.total_run_time.total_seconds() if child.total_run_time else None,
            revision_before=outcome.get("revision_before", ""),
            revision_after=outcome.get("revision_after", ""),
            backup_key=outcome.get("backup_key", ""),
        )
        state = child.state.type.value if child.state else "UNKNOWN"
        if state == "COMPLETED":
            return board.update(target.name, status=target_status(outcome.get("status")), **row).__dict__
        if state in ("CANCELLED", "CANCELLING"):
            return board.update(target.name, status="cancelled", note=child.state.message or "", **row).__dict__
        # Failed or crashed: the cutover's hook and the server's trigger start its rollback; the slot
        # stays held until the restore on this host is over.
        if inventory.policy == "halt" and not halted.is_set():
            halted.by = target.name
            halted.set()
        note = (outcome.get("error") or (child.state.message if child.state else "") or state)[:300]
        board.update(target.name, status="rolling back", note=note, publish=True, **row)
        rolled = wait_for_rollback(child, target.database, rollback_wait_seconds)
        status = "rolled back" if rolled.get("rollback") in ("restored", "not-needed") else "failed"
        return board.update(
            target.name, status=status, rollback=rolled["summary"],
            revision_after=rolled.get("revision_after") or row["revision_after"], note=note).__dict__


def read_outcome(flow_run_id, database: str) -> dict[str, str] | None:
    """The one-row `<db>-outcome` table a cutover or rollback run published, if any."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                                           key=ArtifactFilterKey(any_=[artifact_key(database, OUTCOME)])),
            sort=ArtifactSort.UPDATED_DESC, limit=1)
    if not found:
        return None
    data = found[0].data
    rows = json.loads(data) if isinstance(data, str) else data
    return rows[0] if rows else None


def rollback_runs(child: FlowRun) -> list[FlowRun]:
    since = (child.start_time or child.expected_start_time or child.created) - timedelta(seconds=5)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[ROLLBACK_FLOW])),
            flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since)),
            limit=200)
    return [r for r in runs if str((r.parameters or {}).get("manifest", "")).strip() == str(child.id)]


def wait_for_rollback(child: FlowRun, database: str, timeout: float) -> dict[str, Any]:
    """Until one rollback run of this cutover has said what it did (restored, not needed, failed)."""
    deadline = time.monotonic() + timeout
    appeared_by = time.monotonic() + ROLLBACK_APPEARS_SECONDS
    seen: list[FlowRun] = []
    while time.monotonic() < deadline:
        seen = rollback_runs(child)
        if not seen and time.monotonic() > appeared_by:
            return {"summary": "no rollback run started (is the rollback deployment registered?)"}
        for run in seen:
            if run.state is None or run.state.type.value not in TERMINAL:
                continue
            outcome = read_outcome(run.id, database)
            if outcome is None:
                if run.state.type.value == "COMPLETED":
                    return {"rollback": "not-needed", "summary": f"not needed (run {run.name})"}
                continue
            status = outcome.get("rollback", "")
            if status in ("restored", "not-needed", "not-started", "failed"):
                where = f"; failed database kept as {outcome['failed_database']}" if outcome.get("failed_database") else ""
                return {"rollback": status, "revision_after": outcome.get("revision_after"),
                        "summary": f"{status} by run {run.name}{where}"}
        time.sleep(2)
    states = ", ".join(f"{r.name}: {r.state.type.value if r.state else '?'}" for r in seen) or "none seen"
    return {"summary": f"rollback not finished after {timeout:.0f} s ({states})"}


def _final(run: FlowRun) -> FlowRun:
    """Re-read the run: its end time and total run time are set once the server has seen it finish."""
    with get_client(sync_client=True) as client:
        for _ in range(30):
            fresh = client.read_flow_run(run.id)
            if fresh.end_time is not None or fresh.state is None or fresh.state.type.value not in TERMINAL:
                return fresh
            time.sleep(1)
    return fresh


def _iso(value: datetime | None) -> str:
    return value.isoformat(timespec="milliseconds") if value else ""
