"""The fleet flow: one cutover per database of an inventory, spread over the pool's workers.

Approved once for the whole fleet; each target then runs as its own flow run of the
`cutover/fleet-target` deployment (any worker, any machine), never more than
`per_host_limit` on one PostgreSQL host nor `max_parallel` in all (Prefect global
concurrency limits). A failed target is rolled back by its own cutover's rollback;
policy `continue` goes on with the others, `halt` starts no new target.
While it runs, a progress bar and a live table change in place; when every target has finished,
the `fleet-summary` table is posted once, with their final states.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner

from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.fleet import PASSED, FleetBoard, FleetRow, outcome_line, render_fleet_report, utc
from pg_cutover.runbook.inventory import load_inventory
from pg_cutover.tasks.checklist import approve
from pg_cutover.tasks.evidence import evidence_drained, publish_markdown
from pg_cutover.tasks.fleet import FleetView, Halt, StartOrder, check_deployment, ensure_limits, run_target

FLEET = "fleet"
ROLLBACK_WAIT_SECONDS = 4 * 3600


@flow(name="fleet",
      description="Cut over every database of an inventory, each as its own cutover run, within per-host limits.",
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
    """Cut over every database of an inventory, each as its own run of the cutover/fleet-target deployment.

    Args:
        inventory: Path of the inventory file (TOML) on the worker that runs this flow: [fleet], [defaults] and one
            [[target]] per database (examples/cutover.toml). Required.
        approved_by: Pre-approval for the whole fleet: who approved the window. Default empty: the run pauses once
            for the checklist form, and that answer approves every target.
        ticket: Change ticket or approval reference, recorded in every target's evidence. Default empty: the ticket
            given in the checklist form, else this fleet run's id.
        checklist: Pre-approval: runbook section 1, every box ticked, with approved_by. Default all unticked: the
            run asks in the checklist form.
        dry_run: Every target stops after its dry run (the scratch copy, or the clone under CUTOVER_STRATEGY=clone);
            no production database is touched, and each row says "dry run passed". Default off.
        policy: "continue": a failed target is rolled back alone and the others go on; "halt": no new target starts
            after a failure. Default empty: the inventory's [fleet] policy, else continue.
        per_host_limit: Cutovers at once on one PostgreSQL host (the pg-host:<host>:<port> global concurrency
            limit). Default empty: the inventory's [fleet] per_host_limit, else 2.
        max_parallel: Cutovers at once in the whole fleet (the pg-cutover-fleet global concurrency limit). Default
            empty: the inventory's [fleet] max_parallel, else 4.
        approval_timeout_seconds: Seconds to wait for the checklist form before ending the run with nothing started.
            Default 1800; unlike the cutover flow, the fleet does not read CUTOVER_APPROVAL_TIMEOUT.
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
        board = FleetBoard([FleetRow(target=t.name, database=t.database, host=t.host_key()) for t in inv.targets])
        view = FleetView(board.table())
        board.publish = view.show
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
        view.summarize(board.table(), dry_run)  # every target has finished: the one fleet-summary table
        seconds = time.monotonic() - t0
        report = render_fleet_report(board.rows, policy=inv.policy, per_host_limit=inv.per_host_limit,
                                     max_parallel=inv.max_parallel, started=started, finished=utc(), seconds=seconds,
                                     halted_by=halted.by, dry_run=dry_run)
        publish_markdown(FLEET, "report", report, f"Fleet {'dry run' if dry_run else 'cutover'} report")
        summary = {"targets": board.table(), "counts": board.counts(), "seconds": round(seconds, 1),
                   "policy": inv.policy, "halted_by": halted.by, "dry_run": dry_run}
        message = outcome_line(board.rows, seconds=seconds, dry_run=dry_run)
        if any(r.status not in PASSED for r in board.rows):
            return Failed(message=message, data=summary)
        return Completed(message=message, data=summary)
