"""What the approver reads before signing: the plan, and the form's short description that points to it.

The form's description is squeezed into a small pane by the UI, so it stays a few lines: which
database, which revisions, and where the evidence is (the run's artifacts, posted before the pause).
The plan artifact holds the rest, including what the last run of this database took.
"""

from __future__ import annotations

from pathlib import Path

from pg_cutover.runbook.manifest import MANIFEST_NAME, Manifest, load_manifest
from pg_cutover.runbook.plan import Plan
from pg_cutover.runbook.report import cell, write_pause_seconds

# The steps of a dry run that fall inside the write-pause window of the real run.
_PAUSED_STEPS = ("writes-paused", "row-counts", "backup-full", "backup-schema", "backup-verify", "scratch-restore",
                 "writes-sample", "data-parity", "scratch-amcheck", "scratch-migrate", "clone", "clone-amcheck",
                 "clone-migrate", "clone-schema-parity")


def last_runs(backup_dir: Path, database: str, *, exclude: Path | None = None) -> list[Manifest]:
    """This database's earlier cutover runs on this machine, newest first (unreadable ones left out)."""
    found = []
    for path in sorted(Path(backup_dir).glob(f"{database}/*/{MANIFEST_NAME}"), reverse=True):
        if exclude is not None and path.parent == exclude:
            continue
        try:
            found.append(load_manifest(path))
        except Exception:
            continue
    return found


def expected_window(runs: list[Manifest]) -> str:
    """The write-pause window to expect, from the newest run that measured it; said as unknown otherwise."""
    for m in runs:
        seconds = write_pause_seconds(m)
        if seconds is not None:
            return f"{seconds:.1f} s, measured by the cutover of {m.started_at} ({m.strategy})"
        if m.status == "dry-run":
            inside = [s.seconds or 0.0 for s in m.steps if s.name in _PAUSED_STEPS]
            upgrade = next((s.seconds or 0.0 for s in m.steps if s.name in ("scratch-migrate", "clone-migrate")), 0.0)
            return (f"about {sum(inside) + upgrade:.0f} s plus validation, from the dry run of {m.started_at} "
                    f"({sum(inside):.1f} s of checks and copy, {upgrade:.1f} s of migration, counted twice: once on "
                    "the copy, once on production)")
    return "unknown: no earlier run of this database on this worker (a dry run measures it)"


def render_plan(plan: Plan, host: str, port: int, *, dry_run: bool, runs: list[Manifest],
                notes: list[str] | None = None) -> str:
    lines = [
        f"# Plan: cutover of `{plan.database}`",
        "",
        "| | |",
        "|---|---|",
        f"| database | `{plan.database}` on `{host}:{port}` |",
        f"| revision now | `{plan.revision_before or 'none (legacy, no alembic_version)'}` |",
        f"| target | `{plan.target_rev}` |",
        f"| baseline | `{plan.baseline_rev}`{' (stamped first: proven by baseline parity)' if plan.needs_stamp else ''} |",
        f"| strategy | {plan.strategy} |",
        f"| dry run | {'yes: production is not touched' if dry_run else 'no'} |",
        f"| expected write-pause window | {cell(expected_window(runs))} |",
        f"| run directory | `{plan.run_dir}` |",
    ]
    if runs:
        m = runs[0]
        lines.append(f"| last run | {m.started_at}: {m.status}"
                     f"{f' (revision {m.revision_before} -> {m.revision_after})' if m.revision_after else ''} |")
    for note in notes or plan.notes:
        lines.append(f"| note | {cell(note)} |")
    lines += ["", "Read with it, in this run's artifacts: `baseline-parity` (the schema equals the baseline, the "
              "claim the stamp makes) and `upgrade-sql` (the SQL production will run, with its lint findings)."]
    return "\n".join(lines) + "\n"


def form_description(plan: Plan, host: str, port: int, artifacts_link: str) -> str:
    """A few lines: what is being signed, and where the evidence is."""
    evidence = f"[this run's artifacts]({artifacts_link})" if artifacts_link else "this run's Artifacts tab"
    return (f"**Cutover of `{plan.database}`** on `{host}:{port}`: `{plan.revision_before or 'legacy'}` to "
            f"`{plan.target_rev}` ({plan.strategy}). Read the plan, the upgrade SQL and baseline parity in "
            f"{evidence} first. Every field is required.")
