"""The one step table (pg_cutover.runbook.steps): the plan a run shows is the steps it records, and every step
the flow records is in the table."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from pg_cutover.runbook import steps
from pg_cutover.runbook.manifest import Manifest, RunRecorder, StepRecord

FLOWS = Path(__file__).resolve().parents[1] / "flows"


def test_every_step_the_cutover_flow_records_is_in_the_table():
    source = "".join((FLOWS / name).read_text() for name in ("cutover.py", "sections.py", "clone_sections.py"))
    recorded = set(re.findall(r'rec\.(?:step|skip)\("([a-z-]+)"', source))
    # Every step but validate-unchanged's (recorded in the shared _validate) is named literally.
    assert recorded and recorded <= steps.NAMES, recorded - steps.NAMES
    assert steps.NAMES - recorded <= {"validate", "validate-unchanged"}, steps.NAMES - recorded


def test_production_is_touched_from_the_stamp_on():
    assert steps.PRODUCTION_STEPS == ("production-stamp", "production-upgrade", "swap", "validate")


@pytest.mark.parametrize("dry_run, sampled, mirrored, linted", list(itertools.product([False, True], repeat=4)))
def test_the_plan_follows_the_settings(dry_run, sampled, mirrored, linted):
    plan = steps.plan(at_target=False, dry_run=dry_run, sampled=sampled, mirrored=mirrored, linted=linted)
    before = ["baseline-parity"] + (["upgrade-sql"] if linted and not dry_run else []) + ["approval"]
    # Everything the approver reads comes before the form, and the form before the pause.
    assert plan[:len(before) + 2] == before + ["writes-paused", "row-counts"] and plan[-1] == "scratch-drop"
    assert ("writes-sample" in plan) == sampled and ("offsite-mirror" in plan) == mirrored
    # A dry run returns before the upgrade SQL is due: never planned there.
    assert ("upgrade-sql" in plan) == (linted and not dry_run)
    assert ("writes-still-paused" in plan) == (sampled and not dry_run)
    assert ("validate" in plan) == (not dry_run) and ("window-check" in plan) == (not dry_run)
    # Recorded either way (skipped in a dry run), so the progress bar counts them either way.
    assert {"production-stamp", "production-upgrade"} <= set(plan)
    assert len(plan) == len(set(plan))


@pytest.mark.parametrize("dry_run", [False, True])
def test_the_clone_strategy_plans_the_clone_and_the_swap_instead_of_the_backup_and_the_upgrade(dry_run):
    plan = steps.plan(at_target=False, dry_run=dry_run, sampled=True, mirrored=True, linted=True, strategy="clone")
    assert {"clone", "clone-migrate", "clone-schema-parity"} <= set(plan)
    assert ("swap" in plan) == (not dry_run) and ("clone-drop" in plan) == dry_run
    assert not {"backup-full", "scratch-restore", "production-stamp", "production-upgrade", "scratch-drop"} & set(plan)
    assert plan.index("clone") < plan.index("clone-migrate") < plan.index("window-check" if not dry_run else "clone-drop")


def test_at_the_target_only_validation_is_planned():
    assert steps.plan(at_target=True, dry_run=False, sampled=True, mirrored=True, linted=True) == ["validate-unchanged"]


def test_a_skipped_step_advances_whoever_listens(tmp_path):
    heard: list[StepRecord] = []
    rec = RunRecorder(Manifest(run_id="r", database="d", host="h", port=1), tmp_path, ())
    rec.listeners.append(heard.append)
    rec.skip("production-stamp", "dry run")
    with rec.step("scratch-drop") as step:
        step.status = "warning"  # set as text, kept as the typed status
    assert [(r.name, r.status) for r in heard] == [("production-stamp", steps.Status.SKIPPED),
                                                   ("scratch-drop", steps.Status.WARNING)]
    assert '"status":"warning"' in rec.manifest.model_dump_json()
