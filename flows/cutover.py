"""The cutover flow: runbook sections 1 to 5 and 7, in the runbook's order.

Read top to bottom, `_runbook` is the runbook: one call per section. Each section is a
method of `flows/sections.py`'s `Cutover`, in the same order. Every step is recorded in
the run manifest before and after it runs, so a failure at any point leaves a record that
says whether production was touched and where its backup is.
"""

from __future__ import annotations

import importlib
import threading
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Cancelled, State

from pg_cutover.checks.window import Window, check_start
from pg_cutover.errors import PreflightError
from pg_cutover.flows.clone_sections import CloneCutover
from pg_cutover.flows.inflight import InFlight
from pg_cutover.flows.rollback import start_rollback
from pg_cutover.flows.sections import Cutover
from pg_cutover.launcher.prefect_internals import heartbeats
from pg_cutover.migrations.session import AlembicSession
from pg_cutover.pg import db
from pg_cutover.rollback.restore import run_lock_name
from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.inventory import Target
from pg_cutover.runbook.plan import Plan, derived_name
from pg_cutover.tasks.checklist import record_window
from pg_cutover.tasks.events import emit
from pg_cutover.tasks.evidence import evidence_drained
from pg_cutover.tasks.parity import build_baseline
from pg_cutover.tasks.preflight import preflight
from pg_cutover.tasks.status_board import publish_status
from pg_cutover.tasks.targets import target_settings
from pg_cutover.toolkit import Toolkit
from pg_cutover.values import check_revision

__all__ = ["cutover", "start_rollback"]


@flow(
    name="cutover",
    description="Back up, dry-run on scratch, then stamp and upgrade production to the target revision.",
    on_failure=[start_rollback],
    on_crashed=[start_rollback],
)
def cutover(
    baseline_rev: str | None = None,
    target_rev: str = "head",
    dry_run: bool = False,
    cleanup_scratch: bool = True,
    approved_by: str | None = None,
    ticket: str | None = None,
    checklist: Checklist = Checklist(),
    approval_timeout_seconds: int | None = None,
    window_minutes: int | None = None,
    rollback_on_failure: bool = True,
    target: Target | None = None,
    strategy: Literal["runbook", "clone"] | None = None,
) -> dict[str, Any] | State:
    """Back up, dry-run on a scratch copy, then stamp and upgrade production to the target revision.

    Args:
        baseline_rev: Alembic revision that matches the legacy schema; defaults to BASELINE_REV.
        target_rev: Revision to upgrade to ("head" by default).
        dry_run: Stop after the scratch dry run; production is never touched.
        cleanup_scratch: Drop the scratch copy after a successful run.
        approved_by: Pre-approval for unattended runs: who approved the window. Leave empty to be asked (the run waits for the checklist form).
        ticket: Change ticket or approval reference, recorded in the evidence.
        checklist: Pre-approval: runbook section 1, every box ticked. Leave empty to be asked.
        approval_timeout_seconds: How long to wait for the checklist form (default CUTOVER_APPROVAL_TIMEOUT, 1800).
        window_minutes: Length of the maintenance window from the scheduled start (default CUTOVER_WINDOW_MINUTES; CUTOVER_WINDOW_END also works).
        rollback_on_failure: Let a failure after production was touched be rolled back without a human.
        target: Another database than the worker's POSTGRES_DB (set by the fleet flow): its settings over the worker's; a password by reference only.
        strategy: "runbook" backs up, dry-runs on a restored scratch copy and upgrades production in place; "clone" upgrades a file-level clone of the paused database and swaps the names (a window of seconds per GB, a rollback of two renames). Default CUTOVER_STRATEGY (runbook).
    """
    log = get_run_logger()
    said = _Said()
    # Artifacts all in the API before the run's final state; work in flight settled before that.
    with heartbeats(), evidence_drained(log), InFlight() as inflight, said.announcing():
        said.result = _runbook(said, inflight, baseline_rev, target_rev, dry_run, cleanup_scratch, approved_by,
                               ticket, checklist, approval_timeout_seconds, window_minutes, rollback_on_failure,
                               target, strategy)
        return said.result


def _runbook(said: "_Said", inflight: InFlight, baseline_rev, target_rev, dry_run, cleanup_scratch, approved_by, ticket,
             checklist, approval_timeout_seconds, window_minutes, rollback_on_failure, target,
             strategy) -> dict[str, Any] | State:
    """The flow's body, section by section (see `cutover` for the parameters)."""
    # pandas is first needed by baseline parity: imported while preflight waits on PostgreSQL.
    threading.Thread(target=importlib.import_module, args=("pandas",), daemon=True).start()
    settings = target_settings(target)
    said.database, said.host, said.port = settings.postgres_db, settings.postgres_host, settings.postgres_port
    kit = Toolkit.from_settings(settings)
    window = Window.resolve(_scheduled_start(), settings.window_end, window_minutes or settings.window_minutes)

    # 1. Maintenance window: a run that starts after its window closed changes nothing.
    started = record_window(settings.postgres_db, check_start(window), "start")
    if not started.ok:
        publish_status(settings.postgres_db, kit.conn.where(), None, flow_run.name or "", "deferred: the window had closed")
        return Cancelled(name="Deferred", message=f"Deferred: {started.reason}; nothing was changed.")
    _build_baseline_ahead(kit, baseline_rev or settings.baseline_rev, inflight)
    # Production's alembic interpreter starts now and serves every alembic command on production:
    # the revision graph at preflight, the upgrade's offline SQL, then stamp and upgrade.
    with AlembicSession(kit.alembic, settings.postgres_db) as prod_alembic:
        plan, pg, store = preflight(kit, baseline_rev, target_rev, prod_alembic, strategy or settings.strategy)
        with _cutover_lock(kit, plan):
            clone = plan.strategy == "clone"
            with (CloneCutover if clone else Cutover)(
                    settings, kit, window, plan, pg, store, prod_alembic, inflight, dry_run=dry_run,
                    rollback_on_failure=rollback_on_failure) as run:
                said.run = run
                if plan.at_target:
                    return run.nothing_to_change()
                # What the approver reads is posted before the form, and outside the write-pause window.
                run.check_baseline_parity()        # 3. (first) the claim `alembic stamp` makes
                if not dry_run:
                    run.review_upgrade_sql()       # 4. (before) the SQL production is about to run, linted
                run.brief_the_approver()           # 1. the plan
                if not run.get_approval(approved_by=approved_by, ticket=ticket, checklist=checklist,
                                        timeout=approval_timeout_seconds or settings.approval_timeout):
                    return run.not_approved()      # 1. checklist: pre-approved, or the form answered
                run.check_writes_paused()          # 1. writes paused, checked
                if clone:
                    run.clone()                    # 3. the paused database cloned, data parity, amcheck
                    run.upgrade_clone()            # 3. stamp + upgrade the clone, schema parity
                else:
                    run.back_up()                  # 2. backup, verified; the off-site copy uploads beside
                    run.dry_run_on_scratch()       # 3. restore, data parity, amcheck, migrate the copy
                if dry_run:
                    return run.end_dry_run(cleanup_scratch)
                if not run.window_fits():          # 1. (again) time left for the upgrade and a rollback
                    return run.defer(cleanup_scratch)
                if clone:
                    run.swap()                     # 4. the upgraded clone takes production's name
                else:
                    run.upgrade_production()       # 4. stamp + upgrade
                run.validate()                     # 5. validation
                if clone:
                    run.keep_original()            # 2. after the window: the original dumped, proven
                return run.clean_up(cleanup_scratch)  # 7. cleanup


class _Said:
    """What the run tells the world when it ends: one `pg-cutover.cutover.*` event (tasks/events.py)."""

    def __init__(self) -> None:
        self.database: str | None = None  # known once the settings have loaded
        self.host, self.port = "", 0
        self.run: Cutover | None = None  # once past preflight and approval: its manifest knows more
        self.result: Any = None

    @contextmanager
    def announcing(self):
        try:
            yield
        except Exception as exc:  # a crash (BaseException) is the server's Crashed event's to tell
            if self.database:
                m = self.run.rec.manifest if self.run is not None else None
                touched = bool(m and m.production_touched)
                emit("cutover.failed", self.database, self.host, self.port,
                     f"failed{' after touching production' if touched else ' before touching production'}: "
                     f"{' '.join(str(exc).split())[:400]}", production_touched=str(touched).lower(),
                     step=(m.failure or {}).get("step", "") if m else "")
            raise
        if self.database is None:
            return
        result = self.result
        if isinstance(result, State):
            if result.name == "Deferred":
                emit("cutover.deferred", self.database, self.host, self.port, result.message or "deferred")
            return
        if isinstance(result, dict):
            emit("cutover.succeeded", self.database, self.host, self.port,
                 {"dry-run": "dry run passed", "noop": "already at the target"}.get(result.get("status"), "succeeded")
                 + f": revision {result.get('revision_after') or 'none'}", status=result.get("status"))


def _build_baseline_ahead(kit: Toolkit, revision: str | None, inflight: InFlight) -> None:
    """Start building the baseline from nothing now, beside preflight and the approval, when it will be needed.

    A database not yet under Alembic is stamped after baseline parity, whose baseline depends only on
    the server, the migrations and the revision. Anything unusual (an unreachable server, a malformed
    revision, missing pg tools) is left to preflight, which says it in its own words; the sections
    build their own baseline when this one was not started or was for another revision.
    """
    try:
        check_revision(revision or "")
        if db.alembic_revision(kit.conn, kit.settings.postgres_db) is not None:
            return  # already under Alembic: no stamp, no baseline parity
        pg = kit.pg_client(db.probe(kit.conn, "postgres") // 10000)
    except Exception:
        return
    # Unique among runs started in the same second: the cutover's lock is only taken after preflight.
    name = derived_name(kit.settings.postgres_db, "baseline",
                        f"{datetime.now(timezone.utc):%Y%m%d_%H%M%S}_{uuid.uuid4().hex[:6]}")
    inflight.start(f"baseline-build:{revision}", build_baseline.submit(kit, pg, revision, name))


@contextmanager
def _cutover_lock(kit: Toolkit, plan: Plan):
    """One cutover per database at a time, whatever started it (UI, schedule, CLI). The lock is the
    server's, so a killed run frees it, and a rollback can tell a live cutover from a dead one."""
    with db.advisory_lock(kit.conn, run_lock_name(plan.database), wait_seconds=0) as locked:
        if not locked:
            raise PreflightError(f"Another cutover of {plan.database} is running or waiting for approval; "
                                 "nothing was changed.")
        yield


def _scheduled_start() -> datetime | None:
    """The run's expected start (its schedule slot), so a late start counts against the window."""
    value = flow_run.scheduled_start_time
    return value if isinstance(value, datetime) else None

