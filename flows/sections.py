"""The cutover's runbook sections after preflight and approval, in the runbook's order.

`flows/cutover.py` calls them one by one; each is a method of `Cutover`, which owns the
run's manifest, its progress artifact and its work in flight. Work that pays to overlap at
gigabyte scale runs beside the critical path inside its section (the streamed scratch
restore, the off-site upload, production's half of data parity), owned by one `InFlight`
that settles whatever is still running on the way out.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Any

from prefect import get_run_logger
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.states import Cancelled, State

from pg_cutover.checks import changes
from pg_cutover.checks.window import Window, WindowCheck, check_production
from pg_cutover.errors import StepFailed
from pg_cutover.flows.inflight import InFlight
from pg_cutover.migrations.runner import MIGRATION_APPLICATION
from pg_cutover.migrations.session import AlembicSession
from pg_cutover.pg import db
from pg_cutover.pg.tools import PgClient
from pg_cutover.rollback import late_writes
from pg_cutover.runbook import briefing, steps
from pg_cutover.runbook.checklist import Checklist
from pg_cutover.runbook.manifest import RUN_MANIFESTS, Manifest, RunRecorder
from pg_cutover.runbook.plan import Plan, derived_name
from pg_cutover.runbook.report import write_pause_seconds
from pg_cutover.settings import Settings
from pg_cutover.storage.links import LinkPolicy
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
from pg_cutover.tasks.events import run_link
from pg_cutover.tasks.evidence import Progress, publish_markdown
from pg_cutover.tasks.offsite import mirror, prune
from pg_cutover.tasks.parity import (
    baseline_parity,
    baseline_unchanged,
    blocking_sessions,
    build_baseline,
    data_parity,
    read_production_side,
    schema_parity,
    scratch_amcheck,
    scratch_fingerprint,
    upgrade_sql,
)
from pg_cutover.tasks.production import production_current, stamp_production, upgrade_production
from pg_cutover.tasks.report import publish_report
from pg_cutover.tasks.scratch import migrate_scratch, restore_scratch
from pg_cutover.tasks.status_board import publish_manifest_status
from pg_cutover.tasks.validation import api_health, db_objects, service_status
from pg_cutover.toolkit import Toolkit


class Cutover:
    """One cutover after preflight and approval, under the database's lock: runbook sections in order.

    It owns the run's manifest (`rec`), its progress artifact and its work in flight. On the way
    out, whatever the outcome, what is still in flight is settled, a failure is recorded in the
    manifest (with production's state when it was touched) and the report is published.
    """

    def __init__(self, settings: Settings, kit: Toolkit, window: Window, plan: Plan, pg: PgClient,
                 store: S3Store | None, prod_alembic: AlembicSession, inflight: InFlight, *,
                 dry_run: bool, rollback_on_failure: bool):
        self.settings, self.kit, self.window, self.plan, self.pg, self.store = settings, kit, window, plan, pg, store
        self.prod_alembic = prod_alembic
        self.log = get_run_logger()
        self.rec = RunRecorder(
            Manifest(
                run_id=str(flow_run.id or uuid.uuid4()),
                flow_run_id=flow_run.id,
                database=plan.database,
                host=kit.conn.host,
                port=kit.conn.port,
                dry_run=dry_run,
                strategy=plan.strategy,
                auto_rollback=rollback_on_failure,
                baseline_rev=plan.baseline_rev,
                target_rev=plan.target_rev,
                revision_before=plan.revision_before,
                checklist={},
            ),
            plan.run_dir,
            settings.secrets,
        )
        if flow_run.id:
            RUN_MANIFESTS[str(flow_run.id)] = self.rec.path
        self.progress = Progress(plan.database, steps.plan(
            at_target=plan.at_target, dry_run=dry_run, sampled=settings.write_freeze != "off",
            mirrored=store is not None, linted=settings.lint != "off", strategy=plan.strategy))
        self.rec.listeners.append(self.progress.step_finished)
        self.rec.started.append(self.progress.step_started)
        self.inflight = inflight  # the flow's: it may hold the baseline build started before preflight
        self.baseline_key = f"baseline-build:{plan.baseline_rev}"
        self.stopped_backend = False  # by this run (CUTOVER_WRITE_FREEZE=stop-service), and not started again yet
        self.write_reading = None  # the writes sample's first reading, once the sample has passed
        self.scratch_schema: dict | None = None
        self.proven: tuple[Any, dict] | None = None  # the baseline and the pilot's schema baseline parity proved equal
        self.sql_review: dict[str, Any] = {}
        self.fits: WindowCheck | None = None
        self.refusal: str | None = None  # the checklist's "no", when it was one

    def __enter__(self) -> "Cutover":
        # Work that needs no production state runs beside the critical path from the start.
        plan, kit = self.plan, self.kit
        if not plan.at_target:
            if plan.needs_stamp and not self.inflight.has(self.baseline_key):
                self.inflight.start(self.baseline_key, build_baseline.submit(
                    kit, self.pg, plan.baseline_rev, derived_name(plan.database, "baseline", plan.timestamp)))
            if self.settings.lint != "off":
                # It uses production's interpreter: waited for before that interpreter closes.
                self.inflight.start("upgrade-sql", upgrade_sql.submit(kit, plan, self.prod_alembic))
            # The scratch copy's alembic interpreter starts before the backup: by the time its commands
            # are due, Python and the app's imports are paid for. Its exit is collected on the way out.
            self.inflight.start("scratch-alembic", AlembicSession(kit.alembic, plan.scratch_db),
                                lambda session, failed: session.reap())
        return self

    def __exit__(self, kind, exc, tb) -> None:
        try:
            self.inflight.settle(failed=exc is not None)
            if exc is not None:
                self._record_failure()
        finally:
            # 5.4 Record migration evidence, whatever the outcome.
            publish_report(self.rec.manifest, self.plan.run_dir, self.store if self.rec.manifest.offsite else None)
            publish_manifest_status(self.rec.manifest)  # this database's row on the pg-cutover-status board

    # -- the sections, in the runbook's order --------------------------------------------------

    def nothing_to_change(self) -> dict[str, Any]:
        self.log.info("Production is already at %s: nothing to change.", self.plan.target_rev)
        _validate(self.rec, self.kit, self.plan, self.pg, at_target=True)
        self.rec.update(revision_after=self.plan.revision_before)
        return self._finish("noop")

    def brief_the_approver(self) -> None:
        """1. (before the form) The plan, beside the baseline parity and upgrade SQL artifacts already posted."""
        plan, kit = self.plan, self.kit
        runs = briefing.last_runs(self.settings.backup_dir, plan.database, exclude=plan.run_dir)
        publish_markdown(plan.database, "plan", briefing.render_plan(plan, kit.conn.host, kit.conn.port,
                                                                     dry_run=self.rec.manifest.dry_run, runs=runs),
                         f"What this run will do to {plan.database}: read before approving")

    def get_approval(self, *, approved_by: str | None, ticket: str | None, checklist: Checklist, timeout: int) -> bool:
        """1. Checklist: pre-approved by parameters, or answered in the UI's form while the run waits."""
        plan, kit = self.plan, self.kit
        with self.rec.step("approval") as step:
            description = briefing.form_description(plan, kit.conn.host, kit.conn.port,
                                                    f"{run_link()}?tab=Artifacts" if run_link() else "")
            answers, refusal = approve(plan.database, description, approved_by=approved_by, ticket=ticket,
                                       checklist=checklist, dry_run=self.rec.manifest.dry_run, timeout=timeout,
                                       host=kit.conn.host, port=kit.conn.port)
            self.rec.update(checklist=answers)
            who = answers.get("approved_by") or answers.get("operator") or ""
            ticket_note = f", ticket {answers['ticket']}" if answers.get("ticket") else ""
            step.detail = {"summary": f"{answers.get('mode')}{f' by {who}' if who else ''}{ticket_note}"}
            if refusal:
                step.status, step.error = "warning", f"not approved: {refusal}"
        if refusal:
            self.refusal = refusal
            self.rec.finish("not-approved")
        return refusal is None

    def not_approved(self) -> State:
        return Cancelled(name="NotApproved", message=f"Not approved: {self.refusal}; nothing was changed.",
                         data=_summary(self.rec))

    def check_writes_paused(self) -> None:
        """1. Writes paused, checked rather than assumed (and enforced with CUTOVER_WRITE_FREEZE=stop-service).

        The instant check now; the counter sample runs beside the backup's start and must pass
        before anything reads the scratch copy as production's twin, let alone touches production.
        """
        rec, kit, plan = self.rec, self.kit, self.plan
        with rec.step("writes-paused") as step:
            result = check_writes_paused(kit, plan.database, since=plan.write_reading)
            self.stopped_backend = bool(result.get("service_stopped"))
            rec.update(backend_stopped=bool(result.get("backend_stopped")))
            step.detail = {"summary": "no other session holds a transaction id; rows changed sampled beside the backup"
                           if result.get("checked") else result.get("reason", "")}
        if result.get("checked"):
            self._sample_writes(result["sample_start"])

    def _sample_writes(self, start) -> None:
        """The counter sample, beside the backup; collected before the scratch copy is read as production's twin."""
        self.inflight.start("writes-sample", writes_sample.submit(self.kit, self.plan.database, start))

    def check_baseline_parity(self) -> None:
        """3. (first) The claim `alembic stamp` makes: the pilot is exactly the baseline."""
        if not self.plan.needs_stamp:
            self.rec.skip("baseline-parity", f"no stamp: production is already at {self.plan.revision_before}")
            return
        with self.rec.step("baseline-parity") as step:
            built = self.inflight.take(self.baseline_key).result()
            result = baseline_parity(self.kit, self.pg, self.plan, built)
            self.proven = built, result["fingerprint"]
            step.detail = {"summary": f"equal to the baseline ({result['accepted']} allowed differences; "
                                      f"{result['compared']})"}
            if result["bootstrap"]:
                step.detail["bootstrap"] = f"first schema laid down by CUTOVER_BASELINE_BOOTSTRAP: {result['bootstrap']}"

    def back_up(self) -> None:
        """2. Backup (mandatory): row counts, the full dump feeding the scratch restore, schema, verification."""
        rec, kit, plan, pg = self.rec, self.kit, self.plan, self.pg
        with rec.step("row-counts"):
            rec.update(row_counts=db.row_counts(kit.conn, plan.database, plan.tables))
        rec.update(scratch_db=plan.scratch_db)
        with rec.step("backup-full") as step:
            backup, restoring = full_backup(pg, plan, self.settings.dump_compression or None)
            # Should the run fail before the scratch restore is collected, the restore is stopped.
            self.inflight.start("scratch-restore", restoring, lambda restore, failed: restore.abort())
            rec.update(backup=backup)
            step.detail = {"summary": "scratch restore fed from the backup file while it was written"}
        # Production is paused and now backed up: its half of data parity is read while the
        # scratch copy is still being restored, so only scratch's half is left in the window.
        self.inflight.start("production-side", read_production_side.submit(kit, plan, rec.manifest.row_counts))
        with rec.step("backup-schema"):
            backup.schema_path = schema_snapshot(pg, plan)
            rec.update(backup=backup)
        with rec.step("backup-verify"):
            rec.update(backup=verify_backup(pg, plan, backup))
        if self.store is not None:
            # The off-site copy uploads while the scratch dry run works: it adds no wall time unless it
            # is the slower of the two. Should the run fail first, it is finished anyway: the rollback
            # may need it.
            self.inflight.start("offsite-mirror", mirror.submit(
                self.store, plan, rec.manifest.backup, LinkPolicy.from_settings(self.settings)),
                lambda mirroring, failed: _await_mirror(rec, self.store, mirroring, required=False))

    def dry_run_on_scratch(self) -> None:
        """3. Schema parity: the dry run on the scratch copy restored from the backup."""
        rec, kit, plan = self.rec, self.kit, self.plan
        with rec.step("scratch-restore") as step, self.inflight.using("scratch-restore") as restoring:
            scratch_rows = restore_scratch(kit, plan, restoring, rec.manifest.row_counts)
            step.detail = {"summary": "waited for the streamed restore, then compared row counts"}
        self._writes_sample()
        # Both read the restored copy only: amcheck runs beside data parity.
        self.inflight.start("scratch-amcheck", scratch_amcheck.submit(kit, plan))
        with rec.step("data-parity") as step:
            production_side = self.inflight.take("production-side").result()
            result = data_parity(kit, plan, production_side, scratch_rows)
            step.detail = {"summary": f"{result['tables']} tables equal ({result['checksummed']} checksummed)"}
            rec.update(production_checksums=result["production_checksums"])
        with rec.step("scratch-amcheck") as step:
            checked = self.inflight.take("scratch-amcheck").result()
            if checked.get("unavailable"):  # a check that could not run is no success
                step.status, step.error = "warning", f"no index checked: {checked['unavailable']}"
            else:
                step.detail = {"summary": f"{checked['checked']} indexes checked (beside data-parity)"}
        with rec.step("scratch-migrate"):
            scratch_alembic = self.inflight.get("scratch-alembic")
            migrate_scratch(kit, plan, scratch_alembic)
            scratch_alembic.close(wait=False)  # its exit is collected on the way out, off the path
            self.scratch_schema = scratch_fingerprint(kit, plan)
        if self.inflight.has("offsite-mirror"):
            _await_mirror(rec, self.store, self.inflight.take("offsite-mirror"),
                          required=self.settings.require_offsite)

    def end_dry_run(self, cleanup_scratch: bool) -> dict[str, Any]:
        self.rec.skip("production-stamp", "dry run")
        self.rec.skip("production-upgrade", "dry run")
        self._drop_scratch(cleanup_scratch)
        self.rec.update(revision_after=self.plan.revision_before)
        self._restart_backend()
        return self._finish("dry-run")

    def review_upgrade_sql(self) -> None:
        """4. (before) The SQL production is about to run, rendered offline and linted."""
        if not self.inflight.has("upgrade-sql"):
            return
        lint = self.settings.lint
        with self.rec.step("upgrade-sql") as step:
            self.sql_review = review = self.inflight.take("upgrade-sql").result()
            if not review["rendered"]:
                # SQL nobody could read is not SQL that passed review.
                if lint == "strict":
                    raise StepFailed(f"CUTOVER_LINT=strict and the upgrade SQL could not be rendered offline "
                                     f"({review['reason']}), so it cannot be reviewed; production untouched.")
                step.status = "warning"
                step.error = f"upgrade SQL not reviewed: it could not be rendered offline ({review['reason']})"
                self.log.warning(step.error)
            else:
                step.detail = {"summary": f"{review['findings']} lint findings"}
            if lint == "strict" and review["findings"]:
                raise StepFailed(f"CUTOVER_LINT=strict and squawk reports {review['findings']} findings "
                                 f"({', '.join(review['rules'])}) in the upgrade SQL; production untouched.")

    def window_fits(self) -> bool:
        """1. (again) Enough window left for the upgrade and, should it fail, a full rollback?"""
        with self.rec.step("window-check") as step:
            measured = {s.name: s.seconds or 0.0 for s in self.rec.manifest.steps}
            self.fits = record_window(self.plan.database, check_production(
                self.window, measured.get("scratch-migrate", 0.0), measured.get("scratch-restore", 0.0)), "production")
            step.detail = {"summary": self.fits.reason, **self.fits.as_dict()}
        return self.fits.ok

    def defer(self, cleanup_scratch: bool) -> State:
        self._drop_scratch(cleanup_scratch)
        self._restart_backend()
        self.rec.update(revision_after=self.plan.revision_before)
        self.rec.finish("deferred")
        return Cancelled(name="Deferred", message=f"Deferred before production: {self.fits.reason}; production "
                                                  f"untouched.", data=_summary(self.rec))

    def upgrade_production(self) -> None:
        """4. Production stamp + upgrade, only after the scratch pass, with nothing written since the
        backup (a rollback would lose it) and nobody in the way."""
        rec, kit, plan, prod_alembic = self.rec, self.kit, self.plan, self.prod_alembic
        self._writes_still_paused()
        self._baseline_unchanged()
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
                                                  single_transaction=bool(self.sql_review.get("single_transaction"))))
        prod_alembic.close(wait=False)  # its exit is collected at the end, off the path
        with rec.step("production-current"):
            rec.update(revision_after=production_current(kit, plan, transcripts))
            # What production looks like as the cutover lets go of it: a later rollback refuses to
            # restore over anything written after this (pg_cutover.checks.changes).
            _record_production_state(rec, kit, plan.database, late_writes.AFTER_UPGRADE)

    def _baseline_unchanged(self) -> None:
        """3. (again) What baseline parity proved before the approval still holds as the stamp is about to claim it."""
        if not self.plan.needs_stamp or self.proven is None:
            self.rec.skip("baseline-unchanged", f"no stamp: production is already at {self.plan.revision_before}")
            return
        with self.rec.step("baseline-unchanged") as step:
            result = baseline_unchanged(self.kit, self.pg, self.plan, *self.proven)
            step.detail = {"summary": "the schema baseline parity proved, read again: unchanged" if not result["changed"]
                           else f"{result['changed']} schema changes since baseline parity, proven again: "
                                f"equal to the baseline ({result['compared']})"}

    def validate(self) -> None:
        """5. Post-migration validation, with the backend started again when this run stopped it."""
        self._restart_backend()
        _validate(self.rec, self.kit, self.plan, self.pg, at_target=False, scratch_schema=self.scratch_schema)

    def clean_up(self, cleanup_scratch: bool) -> dict[str, Any]:
        """7. Cleanup: the scratch copy, and off-site runs past CUTOVER_S3_KEEP."""
        self._drop_scratch(cleanup_scratch)
        if self.store is not None and self.rec.manifest.offsite is not None:
            _prune(self.rec, self.store, self.plan.database, self.settings.s3_keep)
        return self._finish("succeeded")

    # -- shared by the sections ------------------------------------------------------------------

    def _writes_sample(self) -> None:
        """The writes sample started at writes-paused, collected: it must have passed before anything
        reads a copy as production's twin."""
        if self.inflight.has("writes-sample"):
            with self.rec.step("writes-sample") as step:
                sample = self.inflight.take("writes-sample").result()
                self.write_reading = sample["reading"]
                step.detail = {"summary": f"no rows changed over {sample['seconds']:.1f} s"}

    def _writes_still_paused(self) -> None:
        """Right before production's first change: nothing written since the sample began."""
        if self.write_reading is not None:
            with self.rec.step("writes-still-paused") as step:
                writes_still_paused(self.kit, self.plan.database, self.write_reading)
                step.detail = {"summary": "no rows changed since the writes-paused sample began"}

    def _finish(self, status: str) -> dict[str, Any]:
        self.rec.finish(status)
        self.progress.complete()
        return _summary(self.rec)

    def _restart_backend(self) -> None:
        """Start the backend again when this run stopped it (CUTOVER_WRITE_FREEZE=stop-service)."""
        if self.stopped_backend:
            with self.rec.step("start-backend"):
                self.rec.update(backend_stopped=False)  # from here its writers may be back
                self.kit.service.start()
            self.stopped_backend = False

    def _drop_scratch(self, cleanup: bool) -> None:
        if not cleanup:
            self.rec.skip("scratch-drop", f"cleanup_scratch is false: {self.plan.scratch_db} kept")
            return
        with self.rec.step("scratch-drop"):
            drop_scratch(self.pg, self.plan.scratch_db)
            self.rec.update(scratch_db=None)

    def _record_failure(self) -> None:
        rec = self.rec
        if self.stopped_backend and not rec.manifest.production_touched:
            self._restart_backend()  # untouched production: let its writers back in
        if rec.manifest.production_touched and rec.manifest.production_state is None:
            _record_production_state(rec, self.kit, self.plan.database, "when the cutover failed after touching it")
        rec.finish("failed")
        if rec.manifest.scratch_db:
            self.log.warning("Scratch copy %s kept for inspection.", rec.manifest.scratch_db)


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


def _validate(rec: RunRecorder, kit: Toolkit, plan, pg, *, at_target: bool, scratch_schema: dict | None = None,
              compare_with_scratch: bool = True) -> None:
    name = "validate" if not at_target else "validate-unchanged"
    with rec.step(name) as step:
        if at_target:
            production_current(kit, plan, [])
        # Independent read-only checks, side by side; every one is waited for, the first failure raised.
        checks = [service_status.submit(kit, plan), api_health.submit(kit, plan),
                  db_objects.submit(kit, plan, pg, compare_with_scratch=compare_with_scratch and not at_target)]
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


def _summary(rec: RunRecorder) -> dict[str, Any]:
    m = rec.manifest
    return {
        "status": m.status,
        "strategy": m.strategy,
        "database": m.database,
        "revision_before": m.revision_before,
        "revision_after": m.revision_after,
        "backup": m.backup.path if m.backup else None,
        "manifest": str(rec.path),
        "run_dir": str(rec.run_dir),
        "write_pause_seconds": write_pause_seconds(m),
    }
