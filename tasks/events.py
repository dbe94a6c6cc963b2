"""pg-cutover's own Prefect events: what happened to which database, for automations and notifications.

Each event's resource is the database (`pg-cutover.database.<host>:<port>/<name>`), related to the
flow run that emitted it; its payload carries what a notification needs to be read on a phone: the
database, the outcome in a few words and the run's link in the Prefect UI. `deployments/deploy.py
--notify BLOCK` creates the automations that send them through any Prefect notification block.
"""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event
from prefect.runtime import flow_run
from prefect.utilities.urls import url_for

from pg_cutover.tasks.evidence import run_logger

PREFIX = "pg-cutover"
# Every event this tool emits; `deploy.py --notify` subscribes to the ones a person must hear about.
CUTOVER_EVENTS = ("cutover.succeeded", "cutover.failed", "cutover.deferred")
ROLLBACK_EVENTS = ("rollback.restored", "rollback.refused", "rollback.failed", "rollback.not-started")
APPROVAL_WAITING = "approval.waiting"
NOTIFY = (APPROVAL_WAITING, "cutover.failed", *ROLLBACK_EVENTS)


def run_link(flow_run_id: str | None = None) -> str:
    """The flow run's page in the Prefect UI, or '' where no UI address is known."""
    run_id = flow_run_id or flow_run.id
    if not run_id:
        return ""
    try:
        return url_for("flow-run", obj_id=run_id) or ""
    except Exception:
        return ""


def emit(name: str, database: str, host: str, port: int, outcome: str, **payload: Any) -> None:
    """`pg-cutover.<name>` about `database`; never fails the caller (the run's evidence does not depend on it)."""
    run_id = str(flow_run.id) if flow_run.id else None
    related = []
    if run_id:
        related.append({"prefect.resource.id": f"prefect.flow-run.{run_id}", "prefect.resource.role": "flow-run",
                        "prefect.resource.name": flow_run.name or run_id})
    try:
        emit_event(
            event=f"{PREFIX}.{name}",
            resource={"prefect.resource.id": f"{PREFIX}.database.{host}:{port}/{database}",
                      "prefect.resource.name": database, f"{PREFIX}.database": database},
            related=related,
            payload={"database": database, "host": f"{host}:{port}", "outcome": outcome, "flow_run_id": run_id or "",
                     "flow_run_name": flow_run.name or "", "ui_url": run_link(run_id),
                     **{k: ("" if v is None else str(v)) for k, v in payload.items()}},
        )
    except Exception as exc:  # an event that cannot be sent is said, never fatal
        run_logger().warning("Could not emit the %s.%s event (%s).", PREFIX, name, exc)
