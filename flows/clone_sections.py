"""The clone strategy's sections: clone the paused database, upgrade the clone, swap the names.

The window holds a file-level copy and one upgrade instead of a dump, a restore and two
upgrades; the original is never written to, and until the swap production is untouched.
`CloneCutover` shares the runbook strategy's manifest, progress, writes checks, baseline
parity and validation (`flows/sections.py`) and replaces what differs.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timezone

from prefect import get_run_logger

from pg_cutover.checks import changes, parity
from pg_cutover.clone import databases
from pg_cutover.flows.sections import Cutover, _validate
from pg_cutover.migrations.runner import MIGRATION_APPLICATION
from pg_cutover.pg import db, dbprops
from pg_cutover.rollback import late_writes
from pg_cutover.runbook.manifest import CloneRecord
from pg_cutover.runbook.plan import derived_name
from pg_cutover.storage.links import LinkPolicy
from pg_cutover.tasks.backup import verify_backup
from pg_cutover.tasks.cleanup import drop_scratch
from pg_cutover.tasks.clone import clone_schema_parity, create_clone, dump_original, restore_check, swap_in
from pg_cutover.tasks.offsite import mirror
from pg_cutover.tasks.parity import (
    build_baseline,
    data_parity,
    scratch_amcheck,
    scratch_fingerprint,
)
from pg_cutover.tasks.scratch import migrate_scratch

TARGET_BUILD = "target-build"


@contextmanager
def _warning_on_failure(step, what: str):
    """After the window production is upgraded and serving: a failure is said, never rolled back."""
    try:
        yield
    except Exception as exc:
        step.status, step.error = "warning", f"{what} ({' '.join(str(exc).split())[:500]}); production stays " \
                                             "upgraded and the original is kept"
        get_run_logger().warning("After the window: %s", step.error)


def _drop_quietly(kit, pg, name: str) -> None:
    """The check database goes whatever happened; failing to drop it is said, not raised."""
    try:
        if db.database_exists(kit.conn, name):
            parity.drop_database(kit.conn, name, pg)
    except Exception as exc:
        get_run_logger().warning("Could not drop the check database %s (%s); drop it by hand.", name, exc)


class CloneCutover(Cutover):
    """One clone-strategy cutover: `plan.scratch_db` is the clone, `plan.before_db` the original's name after the swap."""

    def __enter__(self) -> "CloneCutover":
        super().__enter__()
        plan = self.plan
        if not plan.at_target:
            # What the upgraded clone must equal, built from nothing beside the window.
            self.inflight.start(TARGET_BUILD, build_baseline.submit(
                self.kit, self.pg, plan.target_rev, derived_name(plan.database, "target", plan.timestamp)))
        return self

    def _sample_writes(self, start) -> None:
        """No counter sample to wait for: the clone itself is refused while any other session is connected
        to production, which no writer survives. Before the swap, writes-still-paused counts from here."""
        self.write_reading = start.reading

    def clone(self) -> None:
        """3.1 The copy, then data parity: both databases read side by side (the original is paused and,
        with no session left on it, nobody writes to it again), amcheck of the copy beside them."""
        rec, kit, plan = self.rec, self.kit, self.plan
        rec.update(clone=CloneRecord(original_oid=databases.oid_of(kit.conn, plan.database), clone=plan.scratch_db,
                                     before=plan.before_db))
        with rec.step("clone") as step:
            made = create_clone(kit, plan)
            rec.manifest.clone.clone_oid, rec.manifest.clone.copy_strategy = made.oid, made.strategy
            rec.manifest.clone.clone_seconds = round(made.seconds, 3)
            rec.update(scratch_db=plan.scratch_db)
            # Production's own database settings, grants and owner, before the upgrade: the clone is
            # upgraded under the settings production's upgrade would have run under.
            props, problems = dbprops.carry_properties(kit.conn, plan.database, plan.scratch_db)
            step.detail = {"summary": f"{plan.database} copied into {made.name} in {made.seconds:.1f} s "
                                      f"({made.strategy}); carried {props.describe()}"}
            problems += plan.notes  # a precondition that could not be checked is no pass
            if problems:
                step.status, step.error = "warning", "; ".join(problems)
        self.inflight.start("clone-amcheck", scratch_amcheck.submit(kit, plan))
        with rec.step("data-parity") as step:
            result = data_parity(kit, plan)
            step.detail = {"summary": f"{result['tables']} tables equal in the clone "
                                      f"({result['checksummed']} checksummed), both sides read at once"}
            rec.update(row_counts=result["production_rows"], production_checksums=result["production_checksums"])
        with rec.step("clone-amcheck") as step:
            checked = self.inflight.take("clone-amcheck").result()
            if checked.get("unavailable"):
                step.status, step.error = "warning", f"no index checked: {checked['unavailable']}"
            else:
                step.detail = {"summary": f"{checked['checked']} indexes checked (beside data-parity)"}

    def upgrade_clone(self) -> None:
        """3.2-3.3 on the clone, which is the dry run and the production candidate at once."""
        rec, kit, plan = self.rec, self.kit, self.plan
        with rec.step("clone-migrate"):
            session = self.inflight.get("scratch-alembic")
            migrate_scratch(kit, plan, session)
            session.close(wait=False)
            upgraded = scratch_fingerprint(kit, plan)
        with rec.step("clone-schema-parity") as step:
            try:
                target = self.inflight.take(TARGET_BUILD).result()
            except Exception as exc:  # a check that could not run is a warning with its reason
                step.status, step.error = "warning", f"not compared: {plan.target_rev} could not be built from nothing ({exc})"
                self.log.warning(step.error)
                return
            result = clone_schema_parity(kit, self.pg, plan, upgraded, target)
            if result["differences"]:
                step.status = "warning"
                step.error = (f"{result['differences']} differences from {plan.target_rev} built from nothing (first: "
                              f"{result['first']}): drift that was there before this cutover, not the migrations'")
                self.log.warning(step.error)
            else:
                step.detail = {"summary": f"equal to {plan.target_rev} built from nothing ({result['accepted']} allowed "
                                          f"differences; {result['compared']})"}

    def swap(self) -> None:
        """4. The clone takes production's name; the original, never written to, waits as <db>_before_<ts>."""
        rec, kit, plan = self.rec, self.kit, self.plan
        self._writes_still_paused()
        # The upgraded clone as it will be let go of, taken before any application can reach it: a
        # later rollback refuses to swap back over rows written to it after this.
        state = changes.settled_snapshot(kit.conn, plan.scratch_db, late_writes.AFTER_SWAP,
                                         applications=(MIGRATION_APPLICATION,))
        rec.update(production_state=state.model_copy(update={"database": plan.database}))
        with rec.step("swap") as step:
            started = datetime.now(timezone.utc)
            swap_in(kit, plan, self.write_reading)
            seconds = (datetime.now(timezone.utc) - started).total_seconds()
            rec.manifest.clone.swap_seconds, rec.manifest.clone.swapped_at = round(seconds, 3), started.isoformat()
            rec.update(scratch_db=None, revision_after=db.alembic_revision(kit.conn, plan.database))
            step.detail = {"summary": f"{plan.database} -> {plan.before_db}; {plan.scratch_db} -> {plan.database} "
                                      f"in {seconds:.2f} s"}

    def validate(self) -> None:
        """5. The backend on the upgraded database; its schema was compared on the clone before the swap."""
        self._restart_backend()
        _validate(self.rec, self.kit, self.plan, self.pg, at_target=False, compare_with_scratch=False)

    def keep_original(self) -> None:
        """After the window, the backend serving: the frozen original dumped, its dump proven by a restore
        fed from the file as it is written, and sent off-site. A failure here never rolls production back;
        it is a warning, and the original stays (`cutover finalize` drops it only once its dump is proven)."""
        rec, plan, clone = self.rec, self.plan, self.rec.manifest.clone
        check = derived_name(plan.database, "check", plan.timestamp) if self.settings.verify_restore else None
        restoring = None
        try:
            with rec.step("original-dump") as step, _warning_on_failure(step, "the original's dump failed"):
                backup, restoring = dump_original(self.pg, plan, self.settings.dump_compression or None, check)
                rec.update(backup=backup)
                step.detail = {"summary": f"{plan.before_db} -> {backup.path} ({backup.size_bytes} bytes)"
                                          + (f"; restored into {check} as it was written" if check else "")}
            if rec.manifest.backup is None:
                return
            with rec.step("original-verify") as step, _warning_on_failure(step, "the original's dump did not verify"):
                rec.update(backup=verify_backup(self.pg, plan, rec.manifest.backup))
                clone.dump_verified = True
                step.detail = {"summary": f"SHA-256 {rec.manifest.backup.sha256[:12]}..., {len(plan.tables)} tables "
                                          "listed"}
            if restoring is None:
                rec.skip("original-restore-check", "CUTOVER_VERIFY_RESTORE is off")
            elif clone.dump_verified:
                with rec.step("original-restore-check") as step, \
                        _warning_on_failure(step, "the original's dump did not restore"):
                    checked = restore_check(self.kit, plan, restoring, check, rec.manifest.row_counts)
                    restoring = None
                    clone.restore_checked = True
                    step.detail = {"summary": f"{checked['rows']} rows in {checked['tables']} tables restored into "
                                              f"{check} in {checked['seconds']:.1f} s, equal to the original's counts"}
        finally:
            if restoring is not None:
                restoring.abort()
            if check is not None:
                _drop_quietly(self.kit, self.pg, check)
        if self.store is not None and clone.dump_verified:
            with rec.step("original-offsite") as step, _warning_on_failure(step, "the off-site copy failed"):
                offsite = mirror(self.store, plan, rec.manifest.backup, LinkPolicy.from_settings(self.settings))
                clone.offsite_verified = True
                rec.update(offsite=offsite)
                rec.sinks.append(lambda name, text: self.store.put_text(offsite.prefix + name, text))
                step.detail = {"summary": f"{len(offsite.objects)} objects verified in {offsite.seconds:.1f} s"}
        rec.save()

    def end_dry_run(self, cleanup_scratch: bool):
        """A dry run clones, upgrades and checks the clone, then drops it (with cleanup_scratch)."""
        self._drop_scratch(cleanup_scratch)
        self.rec.update(revision_after=self.plan.revision_before)
        self._restart_backend()
        return self._finish("dry-run")

    def clean_up(self, cleanup_scratch: bool):
        """7. Nothing to drop: the clone is production, the original is kept (CUTOVER_KEEP_ORIGINAL_HOURS)."""
        return self._finish("succeeded")

    def _drop_scratch(self, cleanup: bool) -> None:
        if self.rec.manifest.scratch_db is None:
            return  # never made
        if not cleanup:
            self.rec.skip("clone-drop", f"cleanup_scratch is false: {self.plan.scratch_db} kept")
            return
        with self.rec.step("clone-drop"):
            drop_scratch(self.pg, self.plan.scratch_db)
            self.rec.update(scratch_db=None)
