"""The fleet flow: one cutover per database of an inventory, spread over the pool's workers.

Approved once for the whole fleet; each target then runs as its own flow run of the
`cutover/fleet-target` deployment (any worker, any machine), never more than
`per_host_limit` on one PostgreSQL host nor `max_parallel` in all (Prefect global
concurrency limits). A failed target is rolled back by its own cutover's rollback;
policy `continue` goes on with the others, `halt` starts no new target.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner

from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.fleet import FINAL, FleetBoard, FleetRow, render_fleet_report, utc
from pg_cutover.runbook.inventory import load_inventory
from pg_cutover.tasks.checklist import approve
from pg_cutover.tasks.evidence import evidence_drained, publish_markdown
from pg_cutover.tasks.fleet import Halt, StartOrder, check_deployment, ensure_limits, run_target

FLEET = "fleet"
ROLLBACK_WAIT_SECONDS = 4 * 3600


@flow(name="fleet", description="Cut over every database of an inventory, each as its own cutover run, within per-host limits.",
      task_runner=ThreadPoolTaskRunner(max_workers=64))
def fleet(
    inventory: str,
    approved_by: str | None = None,
    ticket: str | None = None,
    checklist: Checklist = Checklist(),
    dry_run: bool = False,
    policy: Literal["continue", "halt"] | None = None,
    per_host_limit: int | None = None,
    max_parallel: int | None = None,
    approval_timeout_seconds: int = 1800,
) -> dict[str, Any]:
    """
    Args:
        inventory: Path of the inventory file (TOML) on the worker: [fleet], [defaults] and one [[target]] per database.
        approved_by: Pre-approval for the whole fleet (who approved the window). Leave empty to be asked once.
        ticket: Change ticket, recorded in every target's evidence.
        checklist: Pre-approval: runbook section 1, every box ticked. Leave empty to be asked.
        dry_run: Every target stops after its scratch dry run; no production is touched.
        policy: "continue" (a failed target rolls back alone, the others go on) or "halt" (no new target after a failure); default from the inventory.
        per_host_limit: Cutovers at once on one PostgreSQL host (default from the inventory, else 2).
        max_parallel: Cutovers at once in the whole fleet (default from the inventory, else 4).
        approval_timeout_seconds: How long to wait for the checklist form.
    """
    log = get_run_logger()
    with evidence_drained(log):  # artifacts all in the API before the run's final state
        inv = load_inventory(inventory, policy=policy, per_host_limit=per_host_limit, max_parallel=max_parallel)
        check_deployment(inv.deployment)
        names = ", ".join(t.name for t in inv.targets)
        answers, refusal = approve(
            FLEET, f"## Fleet cutover of {len(inv.targets)} databases\n\n{names}\n\nTarget revision `{inv.target_rev}`, "
            f"policy `{inv.policy}`, at most {inv.per_host_limit} per host and {inv.max_parallel} in all.\n\n"
            "One answer approves every target's window.",
            approved_by=approved_by, ticket=ticket, checklist=checklist, dry_run=dry_run, timeout=approval_timeout_seconds)
        if refusal:
            return Cancelled(name="NotApproved", message=f"Not approved: {refusal}; no target was started.")
        limits = ensure_limits(inv)
        log.info("Fleet of %d targets; limits %s; policy %s.", len(inv.targets), limits, inv.policy)

        fleet_id = str(flow_run.id or uuid.uuid4())
        progress = create_progress_artifact(progress=0.0, key="fleet-progress",
                                            description=f"Fleet cutover: {len(inv.targets)} targets")

        def publish(rows: list[dict]) -> None:
            create_table_artifact(table=rows, key="fleet-summary",
                                  description="Fleet cutover, one row per target (updated as targets finish)")
            done = sum(1 for r in rows if r["status"] in FINAL)
            update_progress_artifact(progress, progress=round(100.0 * done / len(rows), 1))

        board = FleetBoard([FleetRow(target=t.name, database=t.database, host=t.host_key()) for t in inv.targets], publish)
        publish(board.table())
        child_params = {
            "target_rev": inv.target_rev,
            "dry_run": dry_run,
            "approved_by": answers.get("approved_by") or "fleet",
            "ticket": ticket or answers.get("ticket") or f"fleet run {fleet_id}",
            "checklist": Checklist.all_confirmed().model_dump(),
        }
        halted = Halt()
        started, t0 = utc(), time.monotonic()
        order, positions = StartOrder(), {}
        futures = []
        for t in inv.targets:
            position = positions[t.host_key()] = positions.get(t.host_key(), -1) + 1
            futures.append(run_target.submit(t, position, order, inv, child_params, board, halted, fleet_id,
                                             ROLLBACK_WAIT_SECONDS))
        for future in futures:
            future.wait()
        publish(board.table())  # the final table, last of all
        seconds = time.monotonic() - t0
        report = render_fleet_report(board.rows, policy=inv.policy, per_host_limit=inv.per_host_limit,
                                     max_parallel=inv.max_parallel, started=started, finished=utc(), seconds=seconds,
                                     halted_by=halted.by)
        publish_markdown(FLEET, "report", report, "Fleet cutover report")
        summary = {"targets": board.table(), "counts": board.counts(), "seconds": round(seconds, 1),
                   "policy": inv.policy, "halted_by": halted.by}
        failed = [r.target for r in board.rows if r.status not in ("succeeded", "noop", "dry-run")]
        if failed:
            return Failed(message=f"{len(failed)} of {len(inv.targets)} targets did not cut over: {', '.join(failed)} "
                                  f"({seconds:.0f} s; see the fleet-report artifact).", data=summary)
        noun = "target" if len(inv.targets) == 1 else "targets"
        return Completed(message=f"{len(inv.targets)} {noun} cut over in {seconds:.0f} s.", data=summary)
