"""`cutover` on the command line: runs the flows with the environment's configuration."""

from __future__ import annotations

import argparse
import json
import sys

from pg_cutover.errors import ConfigError, CutoverError


def _run(args: argparse.Namespace) -> int:
    from pg_cutover.launcher.prefect_internals import temporary_server
    from pg_cutover.runbook.quick_preflight import check_cutover
    from pg_cutover.settings import load_settings

    settings = load_settings()  # a bad setting is reported before Prefect starts
    if not args.dry_run and not (args.approved_by and args.confirm_checklist):
        # On the command line nobody can answer the UI's form: approval comes as flags.
        raise ConfigError("cutover run needs --approved-by NAME and --confirm-checklist (or --dry-run); "
                          "to answer the checklist form instead, run the cutover deployment from the Prefect UI.")
    # What can be refused without Prefect is refused before it is imported or its server started: one line
    # in seconds rather than a failed flow run (the flow's preflight checks it all again, in the same words).
    check_cutover(settings, args.baseline_rev, args.target_rev, args.strategy or settings.strategy)
    # Before Prefect is imported (1.5-5 s with its start-up): with no Prefect API configured, the
    # temporary server boots meanwhile (pg_cutover.launcher.prefect_internals).
    with temporary_server() as server:
        from prefect.exceptions import CancelledRun

        from pg_cutover.flows.cutover import cutover
        from pg_cutover.launcher.prefect_internals import engine_heartbeats_replaced
        from pg_cutover.runbook.checklist import Checklist

        if server is not None:
            server.wait_until_healthy()
        checklist = Checklist.all_confirmed() if args.confirm_checklist else Checklist()
        failure: Exception | None = None
        with engine_heartbeats_replaced():  # the flow sends them: its end waits for no sleeping thread
            state = cutover(
                baseline_rev=args.baseline_rev,
                target_rev=args.target_rev,
                dry_run=args.dry_run,
                cleanup_scratch=not args.keep_scratch,
                approved_by=args.approved_by,
                ticket=args.ticket,
                checklist=checklist,
                strategy=args.strategy,
                return_state=True,  # its flow run id finds the run directory should it not succeed
            )
        try:
            summary = state.result()
        except Exception as exc:  # CancelledRun: deferred (window) or not approved, nothing was changed
            failure = exc
    if failure is not None:  # said once the server has stopped: these are the command's last lines
        cancelled = isinstance(failure, CancelledRun)
        print(_failure_line(failure, settings.secrets, own_sentence=cancelled), file=sys.stderr)
        where = _where_the_run_left_its_evidence(settings, state.state_details.flow_run_id)
        if where:
            print(where, file=sys.stderr)
        return 3 if cancelled else 1
    print(json.dumps(summary, indent=2))
    return 0


def _where_the_run_left_its_evidence(settings, flow_run_id) -> str | None:
    """The run's directory and the report and incident in it (else its manifest), as found; None without a
    manifest (the run stopped before its first step, before production was touched)."""
    from pg_cutover.rollback.restore import locate_manifest
    from pg_cutover.runbook.manifest import MANIFEST_NAME
    from pg_cutover.runbook.report import INCIDENT_NAME, REPORT_NAME

    if flow_run_id is None:
        return None
    source = locate_manifest(str(flow_run_id), backup_dir=settings.backup_dir, database=settings.postgres_db,
                             store=None)
    if source is None:
        return None
    files = [(label, source.run_dir / name) for label, name in (("report", REPORT_NAME), ("incident", INCIDENT_NAME))
             if (source.run_dir / name).is_file()]
    files = files or [("manifest", source.run_dir / MANIFEST_NAME)]  # the report could not be written
    return "; ".join([f"cutover: run directory: {source.run_dir}"] + [f"{label}: {path}" for label, path in files])


def _rollback(args: argparse.Namespace) -> int:
    from pg_cutover.launcher.prefect_internals import temporary_server
    from pg_cutover.runbook.quick_preflight import check_rollback
    from pg_cutover.settings import load_settings

    check_rollback(load_settings(), args.manifest)  # as for `cutover run`: refused before Prefect starts
    # With no API configured, the same temporary server as `cutover run`; whatever the API, a rollback
    # never waits on it: unreachable, and the same steps run without Prefect.
    with temporary_server() as server:
        reason = None
        if server is not None:
            try:
                server.wait_until_healthy()
            except CutoverError as exc:
                reason = str(exc)
        from pg_cutover.flows.prefect_api import unreachable
        from pg_cutover.flows.rollback import rollback, rollback_without_prefect

        reason = reason or unreachable()
        if reason is None:
            from pg_cutover.launcher.prefect_internals import engine_heartbeats_replaced

            with engine_heartbeats_replaced():
                summary = rollback(manifest=args.manifest, strategy=args.strategy,
                                   discard_changes_since_cutover=args.discard_changes_since_cutover)
        else:
            summary, unposted = rollback_without_prefect(
                args.manifest, args.strategy, discard_changes_since_cutover=args.discard_changes_since_cutover)
            print(f"cutover: the Prefect API could not be reached ({reason}), so the rollback ran without it and "
                  f"its evidence was not posted to Prefect ({len(unposted)} artifacts); it is in the run "
                  "directory's manifest.json and incident.md.", file=sys.stderr)
    print(json.dumps(summary, indent=2))
    return 0


def _finalize(args: argparse.Namespace) -> int:
    from pg_cutover.launcher.prefect_internals import temporary_server
    from pg_cutover.settings import load_settings

    load_settings()
    with temporary_server() as server:
        from pg_cutover.flows.finalize import finalize

        if server is not None:
            server.wait_until_healthy()
        summary = finalize(dry_run=args.dry_run)
    for row in summary["rows"]:
        print(f"{row['original']:<48} {row['action']:<10} {row['reason']}")
    if not summary["rows"]:
        print("no kept originals")
    return 0


def _drill(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pg_cutover.launcher.prefect_internals import temporary_server
    from pg_cutover.settings import load_settings

    settings = load_settings()  # a bad setting, or no bucket, is reported before Prefect starts
    if not settings.s3_bucket:
        raise ConfigError("CUTOVER_S3_BUCKET is not set; expected the bucket whose off-site backups to drill.")
    inventory = None
    if args.inventory:
        from pg_cutover.runbook.inventory import load_inventory

        load_inventory(args.inventory)
        inventory = str(Path(args.inventory).resolve())
    with temporary_server() as server:
        from pg_cutover.flows.drill import restore_drill

        if server is not None:
            server.wait_until_healthy()
        state = restore_drill(inventory=inventory, return_state=True)
    summary = state.result(raise_on_failure=False)
    if isinstance(summary, dict):
        for row in summary.get("results", []):
            print(f"{row['database']:<32} {row['result']}")
    print(f"restore-drill: {state.name}: {state.message or ''}", file=sys.stderr)
    return 0 if state.is_completed() else 1


def _prune(args: argparse.Namespace) -> int:
    from pg_cutover.backup.retention import apply_prune, plan_prune
    from pg_cutover.errors import ConfigError
    from pg_cutover.settings import load_settings
    from pg_cutover.storage.s3 import S3Store

    settings = load_settings()
    if settings.s3_credentials_block:  # the block is read from the Prefect API; without one, Prefect is not needed
        from pg_cutover.tasks.s3_credentials import offsite_store

        store = offsite_store(settings)
    else:
        store = S3Store.from_settings(settings)
    if store is None:
        raise ConfigError("CUTOVER_S3_BUCKET is not set; expected the bucket whose old cutover backups to prune.")
    keep = settings.s3_keep if args.keep is None else args.keep
    plan = plan_prune(store, settings.postgres_db, keep)
    for row in plan.rows():
        verb = "would delete" if args.dry_run and row["action"] == "delete" else row["action"]
        print(f"{row['run']}  {verb:<12}  {row['reason']}")
    if not args.dry_run:
        print(f"deleted {apply_prune(store, plan)} objects from {len(plan.delete)} runs")
    return 0


def _fleet(args: argparse.Namespace) -> int:
    from pg_cutover.runbook.inventory import load_inventory

    # A bad inventory is reported before Prefect starts.
    load_inventory(args.inventory, policy=args.policy, per_host_limit=args.per_host_limit,
                   max_parallel=args.max_parallel)
    if not args.dry_run and not (args.approved_by and args.confirm_checklist):
        raise ConfigError("cutover fleet needs --approved-by NAME and --confirm-checklist (or --dry-run); "
                          "to answer the checklist form instead, run the fleet deployment from the Prefect UI.")
    import os
    from pathlib import Path

    if not os.environ.get("PREFECT_API_URL"):
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            raise ConfigError("PREFECT_API_URL is not set; expected the URL of the Prefect server whose workers run "
                              "the cutover/fleet-target deployment, such as http://prefect:4200/api.")
    from pg_cutover.flows.fleet import fleet
    from pg_cutover.runbook.checklist import Checklist

    state = fleet(
        inventory=str(Path(args.inventory).resolve()),
        approved_by=args.approved_by,
        ticket=args.ticket,
        checklist=Checklist.all_confirmed() if args.confirm_checklist else Checklist(),
        dry_run=args.dry_run,
        policy=args.policy,
        per_host_limit=args.per_host_limit,
        max_parallel=args.max_parallel,
        return_state=True,
    )
    summary = state.result(raise_on_failure=False)
    if isinstance(summary, dict):
        for row in summary.get("targets", []):
            print(f"{row['target']:<20} {row['status']:<12} {row['revision_before'] or '-':>24} -> "
                  f"{row['revision_after'] or '-':<24} {row['rollback']}")
    print(f"fleet: {state.name}: {state.message or ''}", file=sys.stderr)
    return 0 if state.is_completed() else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cutover", description="Safe Alembic cutover of a live PostgreSQL database.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the cutover flow against POSTGRES_DB")
    run.add_argument("--baseline-rev", help="Alembic revision matching the legacy schema (default: BASELINE_REV)")
    run.add_argument("--target-rev", default="head", help="revision to upgrade to (default: head)")
    run.add_argument("--dry-run", action="store_true", help="stop after the scratch dry run; production untouched")
    run.add_argument("--keep-scratch", action="store_true", help="keep the scratch copy after success")
    run.add_argument("--approved-by", help="who approved the maintenance window")
    run.add_argument("--ticket", help="change ticket or approval reference, recorded in the evidence")
    run.add_argument("--confirm-checklist", action="store_true",
                     help="confirm every item of the runbook's section 1 checklist")
    run.add_argument("--strategy", choices=("runbook", "clone"),
                     help="runbook: backup, scratch dry run, upgrade in place; clone: upgrade a clone and swap the "
                          "names (default: CUTOVER_STRATEGY, else runbook)")
    rb = sub.add_parser("rollback", help="restore production from a failed cutover's backup (runbook 6)")
    rb.add_argument("--manifest", required=True,
                    help="the cutover's manifest.json or run directory, an s3:// URI, or the cutover's flow run id")
    rb.add_argument("--strategy", choices=("rename", "drop-recreate"), default="rename",
                    help="rename (default) restores beside production, then swaps names, keeping the failed database; "
                         "drop-recreate restores under production's name while production waits renamed aside, "
                         "and drops it after verification")
    rb.add_argument("--discard-changes-since-cutover", action="store_true",
                    help="restore even though production changed after the cutover let go of it; the changes stay "
                         "in the database renamed aside and are listed in the incident")
    prune = sub.add_parser("prune", help="delete off-site backups beyond CUTOVER_S3_KEEP for POSTGRES_DB")
    prune.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete nothing")
    prune.add_argument("--keep", type=int, help="override CUTOVER_S3_KEEP")
    fin = sub.add_parser("finalize", help="drop the clone strategy's kept originals whose dumps are proven and "
                                          "whose CUTOVER_KEEP_ORIGINAL_HOURS have passed")
    fin.add_argument("--dry-run", action="store_true", help="say what would be dropped; drop nothing")
    dr = sub.add_parser("drill", help="restore every database's newest successful cutover backup from S3 into a "
                                      "throwaway database, check it and drop it; exits 1 when any drill failed")
    dr.add_argument("--inventory", help="drill only the databases of this inventory file (TOML); default: every "
                                        "database with backups under CUTOVER_S3_PREFIX")
    fl = sub.add_parser("fleet", help="cut over every database of an inventory through the fleet-target deployment")
    fl.add_argument("--inventory", required=True, help="inventory file (TOML): [fleet], [defaults], [[target]]")
    fl.add_argument("--approved-by", help="who approved the maintenance window for the whole fleet")
    fl.add_argument("--ticket", help="change ticket, recorded in every target's evidence")
    fl.add_argument("--confirm-checklist", action="store_true", help="confirm runbook section 1 for the whole fleet")
    fl.add_argument("--dry-run", action="store_true", help="every target stops after its scratch dry run")
    fl.add_argument("--policy", choices=("continue", "halt"), help="after a failure: continue (default) or halt")
    fl.add_argument("--per-host-limit", type=int, help="cutovers at once on one PostgreSQL host")
    fl.add_argument("--max-parallel", type=int, help="cutovers at once in the whole fleet")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "rollback":
            return _rollback(args)
        if args.command == "prune":
            return _prune(args)
        if args.command == "finalize":
            return _finalize(args)
        if args.command == "fleet":
            return _fleet(args)
        if args.command == "drill":
            return _drill(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the flow already logged any traceback; keep the last word short
        print(_failure_line(exc, _secrets()), file=sys.stderr)
        return 1
    return 2


def _failure_line(exc: Exception, secrets: tuple[str, ...], *, own_sentence: bool = False) -> str:
    """One line: a CutoverError (or a run the flow cancelled, `own_sentence`) is the tool's own sentence;
    anything else is flattened and marked as a failure."""
    from pg_cutover.process import redact

    if own_sentence or isinstance(exc, CutoverError):
        text = str(exc)
    else:
        text = f"failed: {' '.join(str(exc).split()) or type(exc).__name__}"
    return redact(f"cutover: {text}", secrets)


def _secrets() -> tuple[str, ...]:
    """The settings' secrets, to be kept out of the last line even when a message slipped one in."""
    from pg_cutover.settings import load_settings

    try:
        return load_settings().secrets
    except CutoverError:  # its own sentence never holds the password (pg_cutover.settings)
        return ()


if __name__ == "__main__":
    sys.exit(main())
