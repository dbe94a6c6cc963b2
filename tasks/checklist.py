"""Runbook section 1 as a real gate: approval (form or pre-approval), the window, writes paused."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from pg_cutover.checks.window import WindowCheck
from pg_cutover.checks.writes import CounterReading, SampleStart, begin_sample, changes_since, finish_sample
from pg_cutover.errors import PreflightError, StepFailed
from pg_cutover.runbook.checklist import ITEMS, Checklist
from pg_cutover.tasks.events import emit
from pg_cutover.tasks.evidence import drain_evidence, publish_markdown, publish_table
from pg_cutover.toolkit import Toolkit


class ApprovalForm(RunInput):
    """The form the UI shows while the run waits: the checklist's boxes and who answers for it.

    Every field is required in the form's schema, so the UI will not submit it half-filled; a box
    left unticked is still a "no" (the run ends, nothing changed).
    """

    window_approved: bool = Field(title="Window approved", description=ITEMS["window_approved"])
    writes_paused: bool = Field(title="Writes paused", description=ITEMS["writes_paused"])
    operator_and_reviewer_present: bool = Field(title="Operator and reviewer present",
                                                description=ITEMS["operator_and_reviewer_present"])
    backup_storage_confirmed: bool = Field(title="Backup storage confirmed", description=ITEMS["backup_storage_confirmed"])
    rollback_owner_assigned: bool = Field(title="Rollback owner assigned", description=ITEMS["rollback_owner_assigned"])
    operator: str = Field(title="Operator", min_length=1, description="Migration operator (name)")
    reviewer: str = Field(title="Reviewer", min_length=1, description="Reviewer (name)")
    rollback_owner: str = Field(title="Rollback owner", min_length=1, description="Rollback owner (name)")
    ticket: str = Field(title="Ticket", min_length=1, description="Change ticket or approval reference")


def approve(database: str, summary: str, *, approved_by: str | None, ticket: str | None,
            checklist: Checklist, dry_run: bool, timeout: int, host: str = "", port: int = 0) -> tuple[dict, str | None]:
    """Returns (answers for the evidence, reason it is NOT approved or None).

    Pre-approval (approved_by and every box ticked, for unattended scheduled runs) passes
    at once; approved_by with boxes unticked is a "no"; otherwise the run pauses and the
    UI shows the form until someone answers or the timeout passes.
    """
    if dry_run:
        answers = {"mode": "dry run: production is not touched", "approved_by": approved_by or "", **checklist.model_dump()}
        return _record(database, answers, None), None
    if approved_by and approved_by.strip():
        answers = {"mode": "pre-approved", "approved_by": approved_by.strip(), "ticket": ticket or "",
                   **checklist.model_dump()}
        missing = checklist.unchecked()
        reason = f"the checklist is not complete ({', '.join(missing)})" if missing else None
        return _record(database, answers, reason), reason
    log = get_run_logger()
    log.warning("Waiting up to %s s for the maintenance checklist form (Prefect UI: Resume).", timeout)
    form = ApprovalForm.with_initial_data(description=summary, **({"ticket": ticket} if ticket else {}))
    drain_evidence(log)  # the plan, baseline parity and upgrade SQL are in the API before anyone is asked to sign
    emit("approval.waiting", database, host, port, f"waiting up to {timeout} s for the checklist form (Resume in the "
         "Prefect UI)", timeout_seconds=timeout)
    try:
        reply = pause_flow_run(wait_for_input=form, timeout=timeout, poll_interval=2 if timeout < 60 else 10)
    except FlowPauseTimeout:
        # The server fails a run whose pause expired, whatever the flow returns next; the
        # evidence says why, and nothing has been changed.
        reason = f"nobody answered the checklist form within {timeout} s"
        _record(database, {"mode": "form", "answer": "none (timed out)"}, reason)
        raise PreflightError(f"Not approved: {reason}; nothing was changed.") from None
    answers = {"mode": "form", **{k: v for k, v in reply.model_dump().items() if k in ApprovalForm.model_fields}}
    answers["approved_by"] = reply.operator
    missing = [name for name in ITEMS if not answers.get(name)]
    missing += [name for name in ("operator", "reviewer", "rollback_owner", "ticket")
                if not str(answers.get(name, "")).strip()]
    reason = f"the checklist form was answered incomplete ({', '.join(missing)})" if missing else None
    return _record(database, answers, reason), reason


def _record(database: str, answers: dict, refusal: str | None) -> dict:
    rows = "\n".join(f"| {'x' if answers.get(name) else ' '} | {label} |" for name, label in ITEMS.items())
    people = ", ".join(f"{k.replace('_', ' ')}: **{answers[k]}**" for k in
                       ("approved_by", "operator", "reviewer", "rollback_owner", "ticket") if answers.get(k))
    verdict = f"**Not approved: {refusal}.** Nothing was changed." if refusal else "Approved."
    publish_markdown(database, "checklist",
                     f"# Maintenance window checklist\n\nHow: {answers.get('mode')}. {people}\n\n"
                     f"| done | item |\n|---|---|\n{rows}\n\n{verdict}\n",
                     "Runbook section 1, as answered for this run")
    return answers


@task(name="window-check", cache_policy=NO_CACHE)
def record_window(database: str, check: WindowCheck, when: str) -> WindowCheck:
    rows = [{"check": when, "ok": check.ok, "reason": check.reason, "now": check.now,
             "window end": check.window_end or "-", "seconds left": _num(check.seconds_left),
             "upgrade estimate s": _num(check.upgrade_estimate), "rollback estimate s": _num(check.rollback_estimate),
             "needed s": _num(check.needed_seconds)}]
    publish_table(database, f"window-{when}", rows, f"Maintenance window check ({when})")
    if not check.ok:
        get_run_logger().warning("Deferred (%s): %s", when, check.reason)
    return check


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


@task(name="writes-paused", cache_policy=NO_CACHE, timeout_seconds=900)
def check_writes_paused(kit: Toolkit, database: str, since: CounterReading | None = None) -> dict:
    """Before the backup: nobody else holds a transaction id on the database (runbook 1, checked, not assumed).

    The instant part of the check; the counter sample it starts (`sample_start` in the result)
    is finished by `writes_sample`, beside the backup. `since`: the sample's first reading,
    taken at preflight or before. Ignored when this task stops the backend: only writes after
    the stop count then.
    """
    settings = kit.settings
    stopped = None
    if settings.write_freeze == "stop-service":
        result = kit.service.stop()
        stopped = result.transcript() if result else "no CUTOVER_SERVICE_STOP configured"
    if settings.write_freeze == "off":
        return {"checked": False, "reason": "CUTOVER_WRITE_FREEZE=off"}
    start = begin_sample(kit.conn, database, settings.write_sample_seconds,
                         since=None if settings.write_freeze == "stop-service" else since)
    if start.writers:
        _publish_sample(database, start.writers, "Sessions holding a transaction id before the backup: NOT paused")
        raise StepFailed(f"Writes are not paused on {database}: other sessions hold a transaction id "
                         f"({_who(start.writers)}). Nothing was backed up or changed.")
    return {"checked": True, "service_stopped": stopped, "sample_start": start,
            "backend_stopped": settings.write_freeze == "stop-service" and stopped is not None
            and not stopped.startswith("no CUTOVER_SERVICE_STOP")}


@task(name="writes-sample", cache_policy=NO_CACHE)
def writes_sample(kit: Toolkit, database: str, start: SampleStart) -> dict:
    """Beside the backup's start: no row changed over the configured seconds, nobody holds a transaction id.

    Nothing touches production before this has passed, so a write seen here still ends the
    run with production untouched.
    """
    sample = finish_sample(kit.conn, database, kit.settings.write_sample_seconds, start)
    _publish_sample(database, sample.writers,
                    f"Writes over {sample.seconds:.1f} s{' (sampled again after a long wait)' if sample.restarted else ''}"
                    f": {sample.tuples_changed} rows changed; {'paused' if sample.paused else 'NOT paused'}")
    if not sample.paused:
        raise StepFailed(f"Writes are not paused on {database}: {sample.tuples_changed} rows changed in "
                         f"{sample.seconds:.0f} s; writers: {_who(sample.writers) or 'sessions that finished during the sample'}. "
                         "Production untouched; the backup taken meanwhile may miss those writes.")
    return {"seconds": sample.seconds, "tuples_changed": 0, "reading": sample.start}


@task(name="writes-still-paused", cache_policy=NO_CACHE)
def writes_still_paused(kit: Toolkit, database: str, since: CounterReading) -> int:
    """Right before the first production change: no row changed since the sample began.

    A write after the backup's start is one a rollback would lose: the run stops with
    production untouched instead. Writes committed within the last stats flush beat may not
    be counted yet; sessions still inside a write hold a transaction id, and those are caught.
    """
    changed, writers = changes_since(kit.conn, since)
    _publish_sample(database, writers, f"Rows changed since the writes-paused sample began: {changed}; "
                                       f"{'still paused' if not changed and not writers else 'NOT paused'}",
                    key="writes-still-paused")
    if changed or writers:
        raise StepFailed(f"Writes resumed on {database} during the cutover: {changed} rows changed since the "
                         f"writes-paused sample began{'; ' + _who(writers) if writers else ''}. The backup may "
                         "miss them, so production is left untouched; pause the writers and run again.")
    return changed


def _publish_sample(database: str, writers: list[dict], description: str, key: str = "writes-paused") -> None:
    publish_table(database, key,
                  writers or [{"pid": "-", "user": "-", "application": "-", "client": "-", "state": "-",
                               "transaction_seconds": 0, "query": "no other session holds a transaction id"}],
                  description)


def _who(writers: list[dict]) -> str:
    return "; ".join(f"pid {w['pid']} {w['user']}@{w['client']} ({w['application'] or 'no name'}): {w['query'][:80]}"
                     for w in writers)
