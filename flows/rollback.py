"""The rollback flow: runbook section 6, decided from the run manifest alone.

Started by the cutover's failure hooks, by the server-side trigger in
prefect.yaml when the cutover's process died, or by hand (UI or
`cutover rollback --manifest ...`). Any number of these may fire for one
cutover: an advisory lock and the manifest's rollback status make exactly one
of them restore.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from pg_cutover.checks import changes
from pg_cutover.clone import databases as clone_databases
from pg_cutover.errors import ConfigError
from pg_cutover.launcher.prefect_internals import heartbeats
from pg_cutover.pg import db
from pg_cutover.pg.db import TOOL_APPLICATION
from pg_cutover.rollback import late_writes
from pg_cutover.rollback.restore import (
    ManifestSource,
    RollbackFailed,
    RollbackRefused,
    is_flow_run_id,
    locate_manifest,
    run_lock_name,
    unique_name,
)
from pg_cutover.runbook.inventory import Target
from pg_cutover.runbook.manifest import RUN_MANIFESTS, RollbackRecord, RunRecorder, load_manifest, utcnow
from pg_cutover.storage.encryption import RestoreIdentity
from pg_cutover.storage.s3 import S3Store
from pg_cutover.tasks.encryption_identity import restore_identity
from pg_cutover.tasks.events import emit
from pg_cutover.tasks.evidence import OUTBOX, evidence_drained, publish_markdown
from pg_cutover.tasks.report import publish_to_cutover
from pg_cutover.tasks.rollback import (
    carry_database_properties,
    drop_failed_copy,
    drop_recreate,
    fetch_backup,
    publish_incident,
    restore_copy,
    start_backend,
    stop_backend,
    swap,
    swap_back,
    verify_restored,
)
from pg_cutover.tasks.s3_credentials import offsite_store
from pg_cutover.tasks.status_board import publish_manifest_status
from pg_cutover.tasks.targets import flow_run_environment, flow_run_target, target_settings
from pg_cutover.toolkit import Toolkit

LOCK_WAIT_SECONDS = 4 * 3600  # a second rollback waits for the first to finish, then finds the work done


# What each ending is called in the UI: a person tells them apart at a glance, green or red.
FINAL_STATES = {
    "restored": (Completed, "Restored"),
    "not-needed": (Completed, "NothingToRestore"),
    "already-restored": (Completed, "AlreadyRestored"),
    "not-started": (Failed, "ManualRollbackNeeded"),  # production touched, left for a human by choice
    "refused": (Failed, "Refused"),
    "failed": (Failed, "RollbackFailed"),
}


def rollback_run_name() -> str:
    """`rollback-<database>-of-<cutover run name>`: which database, and which cutover it answers."""
    params = flow_run.parameters or {}
    target = params.get("target") or {}
    database = target.get("database") if isinstance(target, dict) else getattr(target, "database", None)
    ref = str(params.get("manifest", "")).strip()
    of = ref.rstrip("/").split("/")[-2] if "/" in ref else ref
    if is_flow_run_id(ref):
        try:
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                cutover_run = client.read_flow_run(ref)
            of = cutover_run.name
            target = (cutover_run.parameters or {}).get("target") or {}
            database = database or target.get("database") or flow_run_environment(ref).get("POSTGRES_DB")
        except Exception:
            of = ref[:8]
    return f"rollback-{database or os.environ.get('POSTGRES_DB') or 'database'}-of-{of}"[:120]


@flow(name="rollback", flow_run_name=rollback_run_name,
      description="Restore production from the cutover's verified backup, restart the backend, record the incident.")
def rollback(
    manifest: str,
    strategy: Literal["rename", "drop-recreate"] = "rename",
    automatic: bool = False,
    target: Target | None = None,
    discard_changes_since_cutover: bool = False,
) -> State:
    """Restore production from the cutover's verified backup, unless production changed since the cutover.

    Args:
        manifest: The failed cutover's manifest: a path, an s3:// URI, or the cutover's flow run id.
        strategy: "rename" keeps the failed database as <db>_failed_<timestamp>; "drop-recreate" restores under production's name while production waits renamed aside, and drops it after verification.
        automatic: Set by the failure hooks and the trigger; such a run restores only if the cutover allowed it (rollback_on_failure).
        target: The fleet target the cutover ran against; by default the one the cutover flow run was given, else the worker's POSTGRES_DB.
        discard_changes_since_cutover: Restore even though rows were written to production after the cutover let go of it; they stay in the database renamed aside and are listed in the incident. Off: such a rollback restores nothing and says what changed.
    """
    log = get_run_logger()
    with heartbeats(), evidence_drained(log):  # artifacts all in the API before the run's final state
        environment = {}
        if is_flow_run_id(manifest):
            # The cutover's own settings: a fleet target's, and those its deployment or run gave it.
            target = target or flow_run_target(manifest.strip())
            environment = flow_run_environment(manifest.strip())
            if environment:
                log.info("Settings of the cutover's run (job variables): %s", ", ".join(sorted(environment)))
        steps = _Steps(log, str(flow_run.id) if flow_run.id else None)
        try:
            summary = _roll_back(steps, manifest, strategy, automatic, target, discard_changes_since_cutover,
                                 environment)
        except (RollbackRefused, RollbackFailed) as exc:
            summary = {"status": "refused" if isinstance(exc, RollbackRefused) else "failed", "error": str(exc)}
            kind, name = FINAL_STATES[summary["status"]]
            state = kind(name=name, message=str(exc), data=exc)
        else:
            kind, name = FINAL_STATES.get(summary["status"], (Completed, "Completed"))
            state = kind(name=name, message=_ending(summary), data=summary)
        _tell_the_cutover(manifest, summary, name, steps.found)
        return state


def _ending(summary: dict[str, Any]) -> str:
    database = summary.get("database") or "production"
    return {
        "restored": f"{database} restored from {summary.get('restored_from')}; the failed database is kept as "
                    f"{summary.get('failed_database') or '-'}",
        "not-needed": f"The cutover of {database} never touched production: nothing to restore.",
        "already-restored": f"{database} was already restored by flow run {summary.get('by')}: nothing done.",
        "not-started": f"The cutover of {database} touched production and its automatic rollback is off "
                       "(rollback_on_failure=false): nothing restored; run the rollback by hand.",
    }.get(summary["status"], summary["status"])


def _tell_the_cutover(manifest: str, summary: dict[str, Any], state_name: str, m) -> None:
    """The rollback's ending where people look: an event for notifications, and, on the cutover's own
    run, a link to this run and its `outcome` row as it stands after the rollback."""
    database = (m.database if m else None) or summary.get("database") or os.environ.get("POSTGRES_DB", "")
    host, port = (m.host, m.port) if m else (os.environ.get("POSTGRES_HOST", ""), os.environ.get("POSTGRES_PORT", ""))
    event = {"restored": "rollback.restored", "refused": "rollback.refused", "failed": "rollback.failed",
             "not-started": "rollback.not-started"}.get(summary["status"])
    cutover_run = manifest.strip() if is_flow_run_id(manifest) else (m.flow_run_id if m else None)
    if event:
        emit(event, database, host, port, f"{state_name}: {summary.get('error') or _ending(summary)}"[:500],
             cutover_flow_run_id=cutover_run or "")
    if cutover_run:
        publish_to_cutover(cutover_run, database, m, state_name)
    if m is not None:
        publish_manifest_status(m)  # the database's row on the pg-cutover-status board, as the rollback left it


def rollback_without_prefect(manifest: str, strategy: Literal["rename", "drop-recreate"] = "rename", *,
                             automatic: bool = False, target: Target | None = None,
                             discard_changes_since_cutover: bool = False) -> tuple[dict[str, Any], list[str]]:
    """The same rollback with every step a plain call, for when the Prefect API cannot be reached.

    The path that must work when everything else is failing depends on no web server. Its evidence
    is the manifest and incident.md in the run directory; the artifacts it would have posted are
    returned by name.
    """
    with OUTBOX.offline() as unposted:
        summary = _roll_back(_Steps(logging.getLogger("pg-pg_cutover.rollback.restore"), None, direct=True), manifest,
                             strategy, automatic, target, discard_changes_since_cutover)
    return summary, unposted


@dataclass
class _Steps:
    """Runs the rollback's tasks: as Prefect task runs in a flow run, as plain calls without Prefect."""

    log: Any
    me: str | None  # this rollback's flow run id, when it is one
    direct: bool = False
    found: Any = None  # the cutover's manifest once read (and re-read under the lock)

    def __call__(self, task, *args, **kwargs):
        return task.fn(*args, **kwargs) if self.direct else task(*args, **kwargs)


def _roll_back(run: _Steps, manifest: str, strategy: str, automatic: bool, target: Target | None,
               discard_changes_since_cutover: bool, environment: dict[str, str] | None = None) -> dict[str, Any]:
    """Section 6, decided from the manifest; see `rollback`."""
    log, me = run.log, run.me
    settings = target_settings(target, environment)
    # First: a credentials block's secret joins settings.secrets before anything copies that list.
    store = offsite_store(settings)  # with CUTOVER_S3_CREDENTIALS_BLOCK's credentials when set
    identity = restore_identity(settings)  # CUTOVER_ENCRYPTION_IDENTITY, redacted too; used only to decrypt
    kit = Toolkit.from_settings(settings)

    source = locate_manifest(manifest, backup_dir=settings.backup_dir, database=settings.postgres_db, store=store)
    if source is None:
        publish_markdown(settings.postgres_db, "incident",
                         f"# Incident: cutover run `{manifest}` left no manifest\n\nIt stopped before its first step, "
                         "before production was touched: aborted before production; nothing to roll back.\n",
                         "Incident record (runbook 6.5)")
        return {"status": "not-needed", "reason": "no manifest"}

    run.found = source.manifest
    if source.manifest.database != settings.postgres_db:
        raise ConfigError(f"manifest={manifest!r} is a cutover of {source.manifest.database!r}, but POSTGRES_DB is "
                          f"{settings.postgres_db!r}; point POSTGRES_DB at the database the manifest is for. "
                          "Nothing was changed.")
    if discard_changes_since_cutover and not source.manifest.production_touched:
        raise ConfigError(f"--discard-changes-since-cutover (discard_changes_since_cutover) is for a cutover that "
                          f"touched production, and this cutover of {source.manifest.database} never did; there "
                          "is nothing to restore or discard. Nothing was changed.")
    if not source.manifest.production_touched:
        m = source.manifest
        rec = _recorder(source, settings, store)
        m.rollback = RollbackRecord(status="not-needed", flow_run_id=me, strategy=strategy, finished_at=utcnow(),
                                    attempts=(m.rollback.attempts if m.rollback else []))
        _attempt(m, me, "aborted before production; nothing to roll back")
        rec.save()
        run(publish_incident, m, source.run_dir, store)
        log.info("Cutover of %s failed before production was touched: nothing to roll back.", m.database)
        return {"status": "not-needed", "database": m.database}

    if automatic and not source.manifest.auto_rollback:
        m = source.manifest
        rec = _recorder(source, settings, store)
        if m.rollback is None:
            m.rollback = RollbackRecord(status="not-started", flow_run_id=me, strategy=strategy)
        _attempt(m, me, "automatic rollback is off for this cutover (rollback_on_failure=false); nothing restored")
        rec.save()
        run(publish_incident, m, source.run_dir, store)
        log.warning("Cutover of %s failed after touching production, and its automatic rollback is off: "
                    "run the rollback by hand.", m.database)
        return {"status": "not-started", "database": m.database}

    database = source.manifest.database
    # A cutover that still holds its lock is alive: restoring under it would race its own steps.
    with db.advisory_lock(kit.conn, run_lock_name(database), wait_seconds=0) as idle:
        if not idle:
            raise RollbackFailed(f"A cutover of {database} is still running; not restoring under it. Nothing was changed.")
    with db.advisory_lock(kit.conn, database, wait_seconds=LOCK_WAIT_SECONDS) as locked:
        if not locked:
            raise RollbackFailed(f"Another rollback of {database} held its lock for {LOCK_WAIT_SECONDS} s; nothing was changed.")
        m = run.found = source.reload()
        if m.status == "running":
            # Its lock was free, so the cutover's process is gone: it will never finish this record.
            m.status, m.finished_at = "crashed", m.finished_at or utcnow()
        rec = _recorder(source, settings, store, m)
        if m.rollback is not None and m.rollback.status == "restored":
            _attempt(m, me, f"found the work done by flow run {m.rollback.flow_run_id}; nothing restored")
            rec.save()
            run(publish_incident, m, source.run_dir, store)
            log.info("Rollback of %s was already done by %s.", database, m.rollback.flow_run_id)
            return {"status": "already-restored", "database": database, "by": m.rollback.flow_run_id}

        m.rollback = RollbackRecord(flow_run_id=me, strategy=strategy,
                                    attempts=(m.rollback.attempts if m.rollback else []))
        rec.save()
        refusal = _changes_since_cutover(rec, kit, m, discard_changes_since_cutover)
        if refusal is not None:
            m.rollback.status, m.rollback.error, m.rollback.finished_at = "refused", refusal, utcnow()
            _attempt(m, me, "refused: production changed since the cutover; nothing restored")
            rec.save()
            run(publish_incident, m, source.run_dir, store)
            log.error("ROLLBACK REFUSED for %s: %s", database, refusal)
            raise RollbackRefused(refusal)
        aside = None  # drop-recreate: where production waits while its name is restored
        try:
            pg = kit.pg_client(db.probe(kit.conn, "postgres") // 10000)
            # 6.1 Pause writes and stop the backend
            with rec.rollback_step("stop-backend") as step:
                step.detail = {"summary": kit.rollback_service.describe("stop")}  # before: a failure names it too
                run(stop_backend, kit)
                if not kit.rollback_service.stop_argv:
                    step.status = "skipped"  # nothing was stopped: the note says why
            if m.strategy == "clone" and (m.backup is None or clone_databases.name_of(kit.conn, m.clone.original_oid)):
                _swap_back(run, rec, kit, m)  # the original still stands (or there is nothing else)
            else:
                aside = _restore_backup(run, rec, kit, pg, m, source, store, strategy, identity)
            with rec.rollback_step("verify"):
                m.rollback.revision_after = run(verify_restored, kit, m)
                m.rollback.production_state = _settled(kit, database, "after the rollback's restore")
            # 6.4 Start the backend and verify health
            with rec.rollback_step("start-backend") as step:
                step.detail = {"summary": kit.rollback_service.describe("start")}
                m.rollback.health = run(start_backend, kit)
                if m.rollback.health:
                    step.detail["summary"] += f"; {len(m.rollback.health)} health paths answered"
                elif not kit.rollback_service.start_argv:
                    step.status = "skipped"  # nothing started and no health URL to wait on
                    step.detail["summary"] += "; no health URL to check (CUTOVER_HEALTH_URL)"
            if strategy == "drop-recreate":
                _drop_aside(run, rec, pg, m)
            m.rollback.status = "restored"
            _attempt(m, me, "swapped back to the original" if m.strategy == "clone" else "restored from the backup")
        except BaseException as exc:
            m.rollback.status = "failed"
            state = _production_state(kit, database, m.rollback.failed_database or aside)
            m.rollback.error = f"{str(m.rollback.error or exc).rstrip('.')}. {state}"
            _attempt(m, me, "failed: " + m.rollback.error)
            log.error("ROLLBACK FAILED for %s: %s", database, m.rollback.error)
            raise RollbackFailed(f"Rollback of {database} failed: {m.rollback.error}") from None
        finally:
            m.rollback.finished_at = utcnow()
            rec.save()
            # 6.5 Incident record
            run(publish_incident, m, source.run_dir, store)
    log.info("%s restored from %s; kept the failed database as %s", database, m.rollback.restored_from,
             m.rollback.failed_database)
    return {"status": "restored", "database": database, "failed_database": m.rollback.failed_database,
            "restored_from": m.rollback.restored_from, "revision": m.rollback.revision_after}


def _restore_backup(run: _Steps, rec: RunRecorder, kit: Toolkit, pg, m, source: ManifestSource,
                    store: S3Store | None, strategy: str, identity: RestoreIdentity | None = None) -> str | None:
    """6.2-6.3 from the verified backup; returns where production waits aside under drop-recreate."""
    database = m.database
    with rec.rollback_step("fetch-backup"):
        dump, origin = run(fetch_backup, m, store, source.run_dir / "restore", identity)
        m.rollback.restored_from, m.rollback.restored_sha256 = origin, m.backup.sha256
    if strategy == "rename":
        # 6.2/6.3 without dropping anything: restore beside production, then swap names.
        restored = unique_name(kit.conn, database, "restore")
        with rec.rollback_step("restore") as step:
            counts = run(restore_copy, pg, kit, restored, dump, m.row_counts)
            step.detail = {"summary": f"{sum(counts.values())} rows in {len(counts)} tables into {restored}"}
        _carry_properties(run, rec, kit, database, restored)
        failed_name = unique_name(kit.conn, database, "failed")
        with rec.rollback_step("swap") as step:
            run(swap, kit, database, restored, failed_name)
            m.rollback.failed_database = failed_name
            step.detail = {"summary": f"{database} -> {failed_name}; {restored} -> {database}"}
        return None
    # The runbook's drop, recreate, restore; but production waits aside, not dropped,
    # until the restore under its name has been verified.
    aside = unique_name(kit.conn, database, "failed")
    with rec.rollback_step("drop-recreate") as step:
        counts = run(drop_recreate, pg, kit, database, aside, dump, m.row_counts)
        m.rollback.failed_database = aside
        step.detail = {"summary": f"{database} -> {aside}; {sum(counts.values())} rows restored into {database}"}
    _carry_properties(run, rec, kit, aside, database)
    return aside


def _swap_back(run: _Steps, rec: RunRecorder, kit: Toolkit, m) -> None:
    """The clone strategy's rollback: two renames, whatever the size; the upgraded clone is kept aside."""
    aside = unique_name(kit.conn, m.database, "failed")
    with rec.rollback_step("swap-back") as step:
        step.detail = {"summary": run(swap_back, kit, m, aside)}
        m.rollback.restored_from = f"the original database, kept unchanged as {m.clone.before} (OID {m.clone.original_oid})"
        if db.database_exists(kit.conn, aside):
            m.rollback.failed_database = aside


def _changes_since_cutover(rec: RunRecorder, kit: Toolkit, m, discard: bool) -> str | None:
    """Rows written to production by others are never discarded silently (pg_cutover.rollback.late_writes).

    None when the restore may go on (nothing of others' changed, or the operator chose to discard
    it); else the refusal: one sentence per table, and how to go on.
    """
    with rec.rollback_step("changes-since-cutover") as step:
        found = late_writes.assess(kit.conn, m)
        m.rollback.changes_since = found.sentences
        if found.clean:
            step.detail = {"summary": found.summary}
            return None
        if discard:
            m.rollback.discarded_changes = True
            step.status = "warning"
            step.error = ("discarding, as asked (discard_changes_since_cutover): " + " ".join(found.sentences)
                          + " They stay in the database renamed aside.")
            return None
        step.detail = {"summary": "refused: " + " ".join(found.sentences)}
    if found.during_failed_run:
        what = (f"Production {m.database} changed while the failed cutover ran, and its own partial changes "
                "cannot be told apart from the application's writes (the cutover did not stop the backend; "
                "CUTOVER_WRITE_FREEZE=stop-service would have): " + " ".join(found.sentences))
    else:
        state = m.production_state
        what = (f"Production {m.database} changed since the cutover let go of it ({state.moment}, "
                f"{state.taken_at}): " + " ".join(found.sentences))
    return (what + " Nothing was restored and production is as it was. To restore the pre-cutover backup "
            f"anyway, discarding those changes (they stay in the database renamed aside, {m.database}_failed_"
            "<timestamp>), run `cutover rollback --discard-changes-since-cutover` or set the rollback flow's "
            "parameter discard_changes_since_cutover.")


def _settled(kit: Toolkit, database: str, moment: str):
    """The restored production's counters once the restore's own sessions have ended."""
    try:
        return changes.settled_snapshot(kit.conn, database, moment, applications=(TOOL_APPLICATION,))
    except Exception:
        return None  # the restore is verified; a later rollback would say it cannot tell


def _drop_aside(run: _Steps, rec: RunRecorder, pg, m) -> None:
    """drop-recreate's drop, last of all; production is already restored, so failing here is only a warning."""
    with rec.rollback_step("drop-failed-copy") as step:
        try:
            run(drop_failed_copy, pg, m.rollback.failed_database)
        except Exception as exc:
            step.status, step.error = "warning", f"{m.rollback.failed_database} kept: dropping it failed ({exc})"
            return
        step.detail = {"summary": f"dropped {m.rollback.failed_database} after the verified restore"}
        m.rollback.failed_database = None


def _carry_properties(run: _Steps, rec: RunRecorder, kit: Toolkit, source: str, target: str) -> None:
    """The database-level part of production (settings, grants, owner) onto the restored copy.

    Not a reason to stop a restore that has the data: what could not be carried is a
    warning in the manifest and the incident, named one by one.
    """
    with rec.rollback_step("database-properties") as step:
        try:
            described, problems = run(carry_database_properties, kit, source, target)
        except Exception as exc:
            described, problems = "nothing", [f"could not read or apply them: {exc}"]
        step.detail = {"summary": f"carried from {source}: {described}"}
        if problems:
            step.status, step.error = "warning", "; ".join(problems)
            run.log.warning("Database properties not carried to %s: %s", target, step.error)


def _recorder(source: ManifestSource, settings, store: S3Store | None, m=None) -> RunRecorder:
    m = m or source.manifest
    sinks = []
    if store is not None and m.offsite is not None:
        sinks.append(lambda name, text: store.put_text(m.offsite.prefix + name, text))
    return RunRecorder(m, source.run_dir, settings.secrets, sinks, save=False)


def _attempt(m, flow_run_id: str | None, outcome: str) -> None:
    m.rollback.attempts.append({"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                "flow_run_id": flow_run_id or "", "outcome": outcome})


def _production_state(kit: Toolkit, database: str, failed_name: str | None) -> str:
    """Say loudly where production is, so whoever is paged knows where to start."""
    try:
        here = db.database_exists(kit.conn, database)
        aside = bool(failed_name) and db.database_exists(kit.conn, failed_name)
    except Exception:
        return "The state of production could not be read; a human is needed."
    if aside and not here:
        return f"Production is intact under {failed_name!r} (renamed aside, not dropped); the backend is stopped; a human is needed."
    if aside and here:
        # The swap happened: the name holds the restored copy, the cutover's database is aside.
        return (f"{database!r} holds the restored copy, which failed a later check; the database as the cutover "
                f"left it is kept as {failed_name!r} (not dropped); the backend is stopped; a human is needed.")
    if here:
        return f"Production {database!r} is as the cutover left it (not dropped); the backend is stopped; a human is needed."
    return f"{database!r} does not exist; the backup is still available; a human is needed."


# -- how a failed cutover hands over to this flow ------------------------------------------------

ROLLBACK_DEPLOYMENT = "rollback/rollback"


def start_rollback(flow, flow_run, state) -> None:
    """The cutover's on_failure / on_crashed hook: hand a failed run that touched production to the rollback.

    Exactly one rollback run per failure. A crash goes to the server-side trigger in prefect.yaml
    when the `rollback` deployment exists (it also covers a process that died before any hook
    could run). A cutover that never touched production starts none: its own run says why it
    stopped. Any other failure is handed to one run of the `rollback` deployment, named after the
    database and the cutover; without that deployment (the command line) the rollback runs in
    this process, and without a Prefect API, without it. The rollback decides from the manifest
    what there is to restore.
    """
    from prefect.logging.loggers import flow_run_logger

    logger = flow_run_logger(flow_run, flow)
    ref = str(flow_run.id)
    target = flow_run.parameters.get("target")
    try:
        deployed = _rollback_deployed()
    except Exception as exc:  # the in-process rollback below is still worth a try
        logger.warning("Could not look up the rollback deployment (%s); rolling back in this process.", exc)
        deployed = False
    if deployed and state.is_crashed():
        logger.warning("Cutover %s: the server's trigger starts the rollback deployment.", state.name)
        return
    if _production_touched(ref, target) is False:
        logger.info("Cutover %s before production was touched: nothing to roll back, so no rollback run.", state.name)
        return
    # Started even with rollback_on_failure off: the rollback run then records the incident and
    # restores nothing, exactly as when the server-side trigger fires for such a run.
    if deployed:
        try:
            from prefect.deployments import run_deployment

            params = {"manifest": ref, "automatic": True}
            if target:  # a fleet target: the rollback needs its settings too
                params["target"] = target
            # The key makes a second call (a retried hook) find the first run instead of starting another.
            run = run_deployment(ROLLBACK_DEPLOYMENT, parameters=params, timeout=0, as_subflow=False,
                                 idempotency_key=f"rollback-of-{ref}")
            logger.warning("Cutover %s: rollback run %s started (%s).", state.name, run.name, run.id)
            return
        except Exception as exc:
            logger.warning("Could not start the rollback deployment (%s); rolling back in this process.", exc)
    from pg_cutover.flows.prefect_api import unreachable

    reason = unreachable()
    if reason is not None:  # the rollback must not depend on the API that just failed
        logger.warning("Cutover %s: the Prefect API cannot be reached (%s); rolling back in this process "
                       "without it (evidence in the run directory only).", state.name, reason)
        rollback_without_prefect(ref, automatic=True, target=Target.model_validate(target) if target else None)
        return
    logger.warning("Cutover %s: rolling back in this process.", state.name)
    rollback(manifest=ref, automatic=True, target=target, return_state=True)


def _rollback_deployed() -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(ROLLBACK_DEPLOYMENT)
            return True
        except ObjectNotFound:
            return False


def _production_touched(flow_run_id: str, target: dict | None) -> bool | None:
    """From the cutover's own manifest: False when the run never got as far as writing one (it stopped
    before its first step) or its manifest says so; None when that cannot be told.

    The manifest is found where this process's run recorded it, else (a hook run by another process)
    where the run's settings put it."""
    path = RUN_MANIFESTS.get(flow_run_id)
    try:
        if path is not None:
            return load_manifest(path).production_touched
        from pg_cutover.settings import load_settings

        try:
            settings = load_settings(**(Target.model_validate(target).overrides() if target else {}))
        except ConfigError:
            return False  # settings that do not load: the cutover stopped before any connection
        source = locate_manifest(flow_run_id, backup_dir=settings.backup_dir, database=settings.postgres_db, store=None)
        return False if source is None else source.manifest.production_touched
    except Exception:
        return None
