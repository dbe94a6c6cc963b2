"""`cutover` on the command line: runs the flows with the environment's configuration."""

from __future__ import annotations

import argparse
import json
import sys

from cutover.errors import ConfigError, CutoverError


def _run(args: argparse.Namespace) -> int:
    from cutover.settings import load_settings

    load_settings()  # a bad setting is reported before Prefect starts
    if not args.dry_run and not (args.approved_by and args.confirm_checklist):
        # On the command line nobody can answer the UI's form: approval comes as flags.
        raise ConfigError("cutover run needs --approved-by NAME and --confirm-checklist (or --dry-run); "
                          "to answer the checklist form instead, run the cutover deployment from the Prefect UI.")
    from prefect.exceptions import CancelledRun

    from flows.cutover import cutover
    from tasks.checklist import Checklist

    checklist = Checklist.all_confirmed() if args.confirm_checklist else Checklist()
    try:
        summary = cutover(
            baseline_rev=args.baseline_rev,
            target_rev=args.target_rev,
            dry_run=args.dry_run,
            cleanup_scratch=not args.keep_scratch,
            approved_by=args.approved_by,
            ticket=args.ticket,
            checklist=checklist,
        )
    except CancelledRun as exc:  # deferred (window) or not approved: nothing was changed
        print(f"cutover: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(summary, indent=2))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from cutover.settings import load_settings

    load_settings()
    from flows.rollback import rollback

    print(json.dumps(rollback(manifest=args.manifest, strategy=args.strategy), indent=2))
    return 0


def _prune(args: argparse.Namespace) -> int:
    from cutover.errors import ConfigError
    from cutover.retention import apply_prune, plan_prune
    from cutover.settings import load_settings
    from cutover.storage import S3Store

    settings = load_settings()
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
    rb = sub.add_parser("rollback", help="restore production from a failed cutover's backup (runbook 6)")
    rb.add_argument("--manifest", required=True,
                    help="the cutover's manifest.json or run directory, an s3:// URI, or the cutover's flow run id")
    rb.add_argument("--strategy", choices=("rename", "drop-recreate"), default="rename",
                    help="rename (default) keeps the failed database aside; drop-recreate follows the runbook literally")
    prune = sub.add_parser("prune", help="delete off-site backups beyond CUTOVER_S3_KEEP for POSTGRES_DB")
    prune.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete nothing")
    prune.add_argument("--keep", type=int, help="override CUTOVER_S3_KEEP")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "rollback":
            return _rollback(args)
        if args.command == "prune":
            return _prune(args)
    except CutoverError as exc:
        print(f"cutover: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the flow already logged the traceback; keep the last word short
        print(f"cutover: failed: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
