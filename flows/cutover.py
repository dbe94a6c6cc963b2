"""The cutover flow: runbook sections 1 to 5 and 7, in the runbook's order.

Read top to bottom, this is the runbook. Every step is recorded in the run
manifest before and after it runs, so a failure at any point leaves a record
that says whether production was touched and where its backup is.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.states import Cancelled

from pg_cutover.checks import changes
from pg_cutover.checks.window import Window, check_production, check_start
from pg_cutover.errors import PreflightError, StepFailed
from pg_cutover.launcher.heartbeats import heartbeats
from pg_cutover.lazy import pandas, preload
from pg_cutover.migrations.runner import MIGRATION_APPLICATION
from pg_cutover.migrations.session import AlembicSession
from pg_cutover.pg import db
from pg_cutover.rollback import late_writes
from pg_cutover.rollback.restore import run_lock_name
from pg_cutover.runbook import steps
from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.inventory import Target
from pg_cutover.runbook.manifest import Manifest, RunRecorder
from pg_cutover.storage.s3 import S3Store
from pg_cutover.tasks.backup import full_backup, schema_snapshot, verify_backup
from pg_cutover.tasks.checklist import (
    approve,
    check_writes_paused,
    record_window,
    writes_sample,
    writes_still_paused,
)
from pg_cutover.tasks.cleanup import drop_scratch
from pg_cutover.tasks.evidence import Progress, evidence_drained
from pg_cutover.tasks.offsite import mirror, prune
from pg_cutover.tasks.parity import (
    baseline_parity,
    blocking_sessions,
    build_baseline,
    data_parity,
    read_production_side,
    schema_parity,
    scratch_amcheck,
    scratch_fingerprint,
    upgrade_sql,
)
from pg_cutover.tasks.preflight import preflight
from pg_cutover.tasks.production import production_current, stamp_production, upgrade_production
from pg_cutover.tasks.report import publish_report
from pg_cutover.tasks.scratch import migrate_scratch, restore_scratch
from pg_cutover.tasks.targets import target_settings
from pg_cutover.tasks.validation import api_health, db_objects, service_status
from pg_cutover.toolkit import Toolkit

ROLLBACK_DEPLOYMENT = "rollback/rollback"


def start_rollback(flow, flow_run, state) -> None:
    """on_failure / on_crashed: hand the failed run to the rollback flow.

    As a run of the `rollback` deployment when one exists (a worker picks it up,
    and the server-side trigger may start one too: the rollback restores once),
    else in this process. The rollback decides from the manifest whether there is
    anything to restore. Hooks are not guaranteed to run; the trigger in
    prefect.yaml is the one to rely on.
    """
    from prefect.logging.loggers import flow_run_logger

    logger = flow_run_logger(flow_run, flow)
    # Started even with rollback_on_failure off: the rollback run then records the incident and
    # restores nothing, exactly as when the server-side trigger fires for such a run.
    ref = str(flow_run.id)
    try:
        from prefect.client.orchestration import get_client
        from prefect.deployments import run_deployment
        from prefect.exceptions import ObjectNotFound

        with get_client(sync_client=True) as client:
            try:
                client.read_deployment_by_name(ROLLBACK_DEPLOYMENT)
                exists = True
            except ObjectNotFound:
                exists = False
        if exists:
            params = {"manifest": ref, "automatic": True}
            if flow_run.parameters.get("target"):  # a fleet target: the rollback needs its settings too
                params["target"] = flow_run.parameters["target"]
            run = run_deployment(ROLLBACK_DEPLOYMENT, parameters=params, timeout=0, as_subflow=False)
            logger.warning("Cutover %s: rollback deployment run %s started.", state.name, run.id)
            return
    except Exception as exc:  # the in-process rollback below is still worth a try
        logger.warning("Could not start the rollback deployment (%s); rolling back in this process.", exc)
    from pg_cutover.flows.prefect_api import unreachable
    from pg_cutover.flows.rollback import rollback, rollback_without_prefect

    target = flow_run.parameters.get("target")
    reason = unreachable()
    if reason is not None:  # the rollback must not depend on the API that just failed
        logger.warning("Cutover %s: the Prefect API cannot be reached (%s); rolling back in this process "
                       "without it (evidence in the run directory only).", state.name, reason)
        rollback_without_prefect(ref, automatic=True, target=Target.model_validate(target) if target else None)
        return
    logger.warning("Cutover %s: rolling back in this process.", state.name)
    rollback(manifest=ref, automatic=True, target=target)


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
) -> dict[str, Any]:
    """
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
    """
    log = get_run_logger()
    with heartbeats(), evidence_drained(log):  # artifacts all in the API before the run's final state
        preload(pandas)  # first needed by baseline parity; imported while preflight waits
        settings = target_settings(target)
        kit = Toolkit.from_settings(settings)
        window = Window.resolve(_scheduled_start(), settings.window_end, window_minutes or settings.window_minutes)

        # 1. Maintenance window: a run that starts after its window closed changes nothing.
        started = record_window(settings.postgres_db, check_start(window), "start")
        if not started.ok:
            return Cancelled(name="Deferred", message=f"Deferred: {started.reason}; nothing was changed.")
        # Production's alembic interpreter starts now and serves every alembic command on production:
        # the revision graph at preflight, the upgrade's offline SQL, then stamp and upgrade.
        with AlembicSession(kit.alembic, settings.postgres_db) as prod_alembic:
            plan, pg, store = preflight(kit, baseline_rev, target_rev, S3Store.from_settings(settings), prod_alembic)
            # One cutover per database at a time, whatever started it (UI, schedule, CLI); the lock is
            # the server's, so a killed run frees it, and a rollback can tell a live cutover from a dead one.
            with db.advisory_lock(kit.conn, run_lock_name(plan.database), wait_seconds=0) as locked:
                if not locked:
                    raise PreflightError(f"Another cutover of {plan.database} is running or waiting for approval; "
                                         "nothing was changed.")
                return _cutover_locked(
                    log, settings, kit, window, plan, pg, store, prod_alembic, dry_run=dry_run,
                    cleanup_scratch=cleanup_scratch, approved_by=approved_by, ticket=ticket, checklist=checklist,
                    approval_timeout_seconds=approval_timeout_seconds, rollback_on_failure=rollback_on_failure)


def _cutover_locked(log, settings, kit: Toolkit, window: Window, plan, pg, store, prod_alembic: AlembicSession, *,
                    dry_run: bool, cleanup_scratch: bool, approved_by: str | None, ticket: str | None, checklist: Checklist,
                    approval_timeout_seconds: int | None, rollback_on_failure: bool):
    """Everything after preflight, under the database's cutover lock."""
    # 1. Checklist: pre-approved by parameters, or answered in the UI's form while the run waits.
    answers: dict[str, Any] = {"mode": "not needed: production is already at the target"}
    if not plan.at_target:
        answers, refusal = approve(
            plan.database, _form_description(plan, settings), approved_by=approved_by, ticket=ticket,
            checklist=checklist, dry_run=dry_run, timeout=approval_timeout_seconds or settings.approval_timeout)
        if refusal:
            return Cancelled(name="NotApproved", message=f"Not approved: {refusal}; nothing was changed.")
    rec = RunRecorder(
        Manifest(
            run_id=str(flow_run.id or uuid.uuid4()),
            flow_run_id=flow_run.id,
            database=plan.database,
            host=kit.conn.host,
            port=kit.conn.port,
            dry_run=dry_run,
            auto_rollback=rollback_on_failure,
            baseline_rev=plan.baseline_rev,
            target_rev=plan.target_rev,
            revision_before=plan.revision_before,
            checklist=answers,
        ),
        plan.run_dir,
        settings.secrets,
    )
    progress = Progress(plan.database, _planned_steps(plan, dry_run, store is not None, settings))
    rec.listeners.append(progress.step_finished)
    mirroring = None
    restoring = None
    sampling = None
    stopped_backend = False
    sessions: list[AlembicSession] = []
    beside = ThreadPoolExecutor(1, thread_name_prefix="beside-restore")
    # Work that needs no production state runs beside the critical path from the start.
    baseline_build = build_baseline.submit(kit, pg, plan) if plan.needs_stamp and not plan.at_target else None
    rendering = (upgrade_sql.submit(kit, plan, prod_alembic) if settings.lint != "off" and not plan.at_target
                 else None)
    try:
        if plan.at_target:
            log.info("Production is already at %s: nothing to change.", plan.target_rev)
            _validate(rec, kit, plan, pg, at_target=True)
            rec.update(revision_after=plan.revision_before)
            rec.finish("noop")
            progress.complete()
            return _summary(rec)

        # The scratch copy's alembic interpreter starts now, before the backup: by the time its
        # commands are due, Python and the app's imports are paid for.
        scratch_alembic = AlembicSession(kit.alembic, plan.scratch_db)
        sessions.append(scratch_alembic)

        # 1. Writes paused, checked rather than assumed (and enforced with CUTOVER_WRITE_FREEZE=stop-service).
        # The instant check now; the counter sample runs beside the backup's start and must pass
        # before anything reads the scratch copy as production's twin, let alone touches production.
        with rec.step("writes-paused") as step:
            result = check_writes_paused(kit, plan.database, since=plan.write_reading)
            stopped_backend = bool(result.get("service_stopped"))
            rec.update(backend_stopped=bool(result.get("backend_stopped")))
            step.detail = {"summary": "no other session holds a transaction id; rows changed sampled beside the backup"
                           if result.get("checked") else result.get("reason", "")}
        sampling = writes_sample.submit(kit, plan.database, result["sample_start"]) if result.get("checked") else None
        write_reading = None

        # 3. (first) The claim `alembic stamp` makes: the pilot is exactly the baseline.
        if baseline_build is not None:
            with rec.step("baseline-parity") as step:
                result = baseline_parity(kit, pg, plan, baseline_build.result())
                step.detail = {"summary": f"equal to the baseline ({result['accepted']} allowed differences; "
                                          f"{result['compared']})"}
                if result["bootstrap"]:
                    step.detail["bootstrap"] = f"first schema laid down by CUTOVER_BASELINE_BOOTSTRAP: {result['bootstrap']}"
        else:
            rec.skip("baseline-parity", f"no stamp: production is already at {plan.revision_before}")

        # 2. Backup (mandatory)
        with rec.step("row-counts"):
            rec.update(row_counts=db.row_counts(kit.conn, plan.database, plan.tables))
        rec.update(scratch_db=plan.scratch_db)
        with rec.step("backup-full") as step:
            backup, restoring = full_backup(pg, plan, settings.dump_compression or None)
            rec.update(backup=backup)
            step.detail = {"summary": "scratch restore fed from the backup file while it was written"}
        # Production is paused and now backed up: its half of data parity is read while the
        # scratch copy is still being restored, so only scratch's half is left in the window.
        production_side = read_production_side(kit, plan, beside, rec.manifest.row_counts)
        with rec.step("backup-schema"):
            backup.schema_path = schema_snapshot(pg, plan)
            rec.update(backup=backup)
        with rec.step("backup-verify"):
            rec.update(backup=verify_backup(pg, plan, backup))
        # The off-site copy uploads while the scratch dry run works: it adds no wall time
        # unless it is the slower of the two.
        if store is not None:
            mirroring = mirror.submit(store, plan, backup, settings.s3_link_seconds, settings.s3_console_url)

        # 3. Schema parity: dry run on a scratch clone restored from the backup
        with rec.step("scratch-restore") as step:
            scratch_rows = restore_scratch(kit, plan, restoring, rec.manifest.row_counts)
            restoring = None
            step.detail = {"summary": "waited for the streamed restore, then compared row counts"}
        if sampling is not None:
            pending, sampling = sampling, None
            with rec.step("writes-sample") as step:
                sample = pending.result()
                write_reading = sample["reading"]
                step.detail = {"summary": f"no rows changed over {sample['seconds']:.1f} s (sampled beside the backup)"}
        # Both read the restored copy only: amcheck runs beside data parity.
        amcheck = scratch_amcheck.submit(kit, plan)
        try:
            with rec.step("data-parity") as step:
                result = data_parity(kit, plan, production_side, scratch_rows)
                step.detail = {"summary": f"{result['tables']} tables equal ({result['checksummed']} checksummed)"}
                rec.update(production_checksums=result["production_checksums"])
        finally:
            amcheck.wait()
        with rec.step("scratch-amcheck") as step:
            checked = amcheck.result()
            if checked.get("unavailable"):  # a check that could not run is no success
                step.status, step.error = "warning", f"no index checked: {checked['unavailable']}"
            else:
                step.detail = {"summary": f"{checked['checked']} indexes checked (beside data-parity)"}
        with rec.step("scratch-migrate"):
            migrate_scratch(kit, plan, scratch_alembic)
            scratch_alembic.close(wait=False)  # its exit is collected at the end, off the path
            scratch_schema = scratch_fingerprint(kit, plan)
        if mirroring is not None:
            pending, mirroring = mirroring, None
            _await_mirror(rec, store, pending, required=settings.require_offsite)

        if dry_run:
            rec.skip("production-stamp", "dry run")
            rec.skip("production-upgrade", "dry run")
            _drop_scratch(rec, pg, plan, cleanup_scratch)
            rec.update(revision_after=plan.revision_before)
            _restart_backend(rec, kit, stopped_backend)
            rec.finish("dry-run")
            progress.complete()
            return _summary(rec)

        sql_review: dict[str, Any] = {}
        if rendering is not None:
            with rec.step("upgrade-sql") as step:
                sql_review = rendering.result()
                if not sql_review["rendered"]:
                    # SQL nobody could read is not SQL that passed review.
                    if settings.lint == "strict":
                        raise StepFailed(f"CUTOVER_LINT=strict and the upgrade SQL could not be rendered offline "
                                         f"({sql_review['reason']}), so it cannot be reviewed; production untouched.")
                    step.status = "warning"
                    step.error = f"upgrade SQL not reviewed: it could not be rendered offline ({sql_review['reason']})"
                    log.warning(step.error)
                else:
                    step.detail = {"summary": f"{sql_review['findings']} lint findings"}
                if settings.lint == "strict" and sql_review["findings"]:
                    raise StepFailed(f"CUTOVER_LINT=strict and squawk reports {sql_review['findings']} findings "
                                     f"({', '.join(sql_review['rules'])}) in the upgrade SQL; production untouched.")

        # 1. (again) Enough window left for the upgrade and, should it fail, a full rollback?
        with rec.step("window-check") as step:
            measured = {s.name: s.seconds or 0.0 for s in rec.manifest.steps}
            fits = record_window(plan.database, check_production(
                window, measured.get("scratch-migrate", 0.0), measured.get("scratch-restore", 0.0)), "production")
            step.detail = {"summary": fits.reason, **fits.as_dict()}
        if not fits.ok:
            _drop_scratch(rec, pg, plan, cleanup_scratch)
            _restart_backend(rec, kit, stopped_backend)
            rec.update(revision_after=plan.revision_before)
            rec.finish("deferred")
            return Cancelled(name="Deferred", message=f"Deferred before production: {fits.reason}; production untouched.",
                             data=_summary(rec))

        # 4. Production stamp + upgrade, only after the scratch pass, with nothing written since the
        # backup (a rollback would lose it) and nobody in the way
        if write_reading is not None:
            with rec.step("writes-still-paused") as step:
                writes_still_paused(kit, plan.database, write_reading)
                step.detail = {"summary": "no rows changed since the writes-paused sample began"}
        with rec.step("blocking-sessions"):
            blocking_sessions(kit, plan)
            # Production's counters right before its first change: should the upgrade fail, what moved
            # after this is the cutover's or somebody else's, and the rollback must tell which.
            rec.update(gate_state=changes.snapshot(kit.conn, plan.database, "right before production was touched"))
        transcripts = []
        if plan.needs_stamp:
            with rec.step("production-stamp") as step, _attempts_on(step) as attempts:
                transcripts.append(stamp_production(kit, plan, prod_alembic, attempts))
        else:
            rec.skip("production-stamp", f"already at {plan.revision_before}")
        with rec.step("production-upgrade") as step, _attempts_on(step) as attempts:
            transcripts.append(upgrade_production(kit, plan, prod_alembic, attempts,
                                                  single_transaction=bool(sql_review.get("single_transaction"))))
        prod_alembic.close(wait=False)  # its exit is collected at the end, off the path
        with rec.step("production-current"):
            rec.update(revision_after=production_current(kit, plan, transcripts))
            # What production looks like as the cutover lets go of it: a later rollback refuses to
            # restore over anything written after this (pg_cutover.checks.changes).
            _record_production_state(rec, kit, plan.database, late_writes.AFTER_UPGRADE)

        # 5. Post-migration validation
        _restart_backend(rec, kit, stopped_backend)
        stopped_backend = False
        _validate(rec, kit, plan, pg, at_target=False, scratch_schema=scratch_schema)

        # 7. Cleanup
        _drop_scratch(rec, pg, plan, cleanup_scratch)
        if store is not None and rec.manifest.offsite is not None:
            _prune(rec, store, plan.database, settings.s3_keep)
        rec.finish("succeeded")
        progress.complete()
        return _summary(rec)
    except BaseException:
        if sampling is not None:
            sampling.wait()  # its artifact says what it saw, whatever ended the run
        if restoring is not None:
            restoring.abort()  # the run failed between the backup and the end of its scratch restore
        if mirroring is not None:
            # Finish the off-site copy even though the run failed: the rollback may need it.
            _await_mirror(rec, store, mirroring, required=False)
        if stopped_backend and not rec.manifest.production_touched:
            _restart_backend(rec, kit, stopped_backend)  # untouched production: let its writers back in
        if rec.manifest.production_touched and rec.manifest.production_state is None:
            _record_production_state(rec, kit, plan.database, "when the cutover failed after touching it")
        rec.finish("failed")
        if rec.manifest.scratch_db:
            log.warning("Scratch copy %s kept for inspection.", rec.manifest.scratch_db)
        raise
    finally:
        if rendering is not None:
            rendering.wait()  # it may still use production's interpreter (a dry run never waits for it)
        for session in sessions:
            session.reap()
        beside.shutdown(wait=True, cancel_futures=True)
        # 5.4 Record migration evidence, whatever the outcome.
        publish_report(rec.manifest, plan.run_dir, store if rec.manifest.offsite else None)


def _scheduled_start() -> datetime | None:
    """The run's expected start (its schedule slot), so a late start counts against the window."""
    value = flow_run.scheduled_start_time
    return value if isinstance(value, datetime) else None


def _form_description(plan, settings) -> str:
    return (
        f"## Cutover of `{plan.database}` on `{settings.postgres_host}:{settings.postgres_port}`\n\n"
        f"Revision now: `{plan.revision_before or 'none (legacy)'}`; target `{plan.target_rev}` "
        f"(baseline `{plan.baseline_rev}`{', stamped first' if plan.needs_stamp else ''}).\n\n"
        "Tick every item of runbook section 1 and name the operator, reviewer and rollback owner. "
        "Anything unticked or left empty ends the run without changing anything."
    )


def _planned_steps(plan, dry_run: bool, mirrored: bool, settings) -> list[str]:
    return steps.plan(at_target=plan.at_target, dry_run=dry_run, sampled=settings.write_freeze != "off",
                      mirrored=mirrored, linted=settings.lint != "off")


@contextmanager
def _attempts_on(step):
    """A stamp's or upgrade's attempts (lock timeouts retried), on its step record whatever the outcome."""
    attempts: list[dict] = []
    try:
        yield attempts
    finally:
        if len(attempts) > 1:
            step.detail = {**step.detail, "attempts": attempts,
                           "summary": f"{len(attempts)} attempts: " + "; ".join(a["outcome"] for a in attempts)}


def _record_production_state(rec: RunRecorder, kit: Toolkit, database: str, moment: str) -> None:
    """Production's counters once the migration's own sessions have ended; unreadable is said, not guessed."""
    try:
        rec.update(production_state=changes.settled_snapshot(kit.conn, database, moment,
                                                             applications=(MIGRATION_APPLICATION,)))
    except Exception as exc:
        get_run_logger().warning("Could not record %s's state %s (%s): a later rollback will say it cannot "
                                 "tell what changed since.", database, moment, exc)


def _restart_backend(rec: RunRecorder, kit: Toolkit, stopped: bool) -> None:
    """Start the backend again when this run stopped it (CUTOVER_WRITE_FREEZE=stop-service)."""
    if stopped:
        with rec.step("start-backend"):
            rec.update(backend_stopped=False)  # from here its writers may be back
            kit.service.start()


def _validate(rec: RunRecorder, kit: Toolkit, plan, pg, *, at_target: bool, scratch_schema: dict | None = None) -> None:
    name = "validate" if not at_target else "validate-unchanged"
    with rec.step(name) as step:
        if at_target:
            production_current(kit, plan, [])
        # Independent read-only checks, side by side; every one is waited for, the first failure raised.
        checks = [service_status.submit(kit, plan), api_health.submit(kit, plan),
                  db_objects.submit(kit, plan, pg, compare_with_scratch=not at_target)]
        if scratch_schema is not None:
            checks.append(schema_parity.submit(kit, pg, plan, scratch_schema))
        wait(checks)
        failed = next((check for check in checks if not check.state.is_completed()), None)
        if failed is not None:
            failed.result()  # raises the check's own error
        rows, tables = checks[1].result(), checks[2].result()
        step.detail = {"summary": f"{len(rows)} health paths OK, {len(tables)} tables"
                       + (f", schema equal to the upgraded scratch copy ({checks[3].result()})"
                          if scratch_schema is not None else "")}


def _await_mirror(rec: RunRecorder, store: S3Store, mirroring, *, required: bool) -> None:
    """Production is touched only once the off-site copy is proven, unless CUTOVER_REQUIRE_OFFSITE=false."""
    with rec.step("offsite-mirror") as step:
        try:
            offsite = mirroring.result()
        except Exception as exc:
            if required:
                raise StepFailed(f"The off-site copy failed and CUTOVER_REQUIRE_OFFSITE is on: {exc}") from None
            step.status, step.error = "warning", f"off-site copy failed, continuing (CUTOVER_REQUIRE_OFFSITE=false): {exc}"
            get_run_logger().warning(step.error)
            return
        step.detail = {"summary": f"{len(offsite.objects)} objects verified; upload took {offsite.seconds:.1f}s"}
        rec.update(offsite=offsite)
        rec.sinks.append(lambda name, text: store.put_text(offsite.prefix + name, text))


def _prune(rec: RunRecorder, store: S3Store, database: str, keep: int) -> None:
    with rec.step("offsite-prune") as step:
        try:
            result = prune(store, database, keep)
            step.detail = {"summary": f"{len(result['deleted'])} old runs deleted"}
        except Exception as exc:
            # Retention is housekeeping: the cutover itself has succeeded.
            step.status, step.error = "warning", f"pruning failed: {exc}"


def _drop_scratch(rec: RunRecorder, pg, plan, cleanup: bool) -> None:
    if not cleanup:
        rec.skip("scratch-drop", f"cleanup_scratch is false: {plan.scratch_db} kept")
        return
    with rec.step("scratch-drop"):
        drop_scratch(pg, plan.scratch_db)
        rec.update(scratch_db=None)


def _summary(rec: RunRecorder) -> dict[str, Any]:
    m = rec.manifest
    return {
        "status": m.status,
        "database": m.database,
        "revision_before": m.revision_before,
        "revision_after": m.revision_after,
        "backup": m.backup.path if m.backup else None,
        "manifest": str(rec.path),
        "run_dir": str(rec.run_dir),
    }
