"""What the Prefect UI shows of a fleet, read back from the API: one `fleet-summary` card with the final
states however many times the targets changed, a live table updated in place, and words a dry run earns."""

from __future__ import annotations

import json

from pg_cutover.runbook.fleet import FleetBoard, FleetRow, outcome_line, render_fleet_report, target_status


def _rows(*statuses: str) -> list[FleetRow]:
    return [FleetRow(target=f"t{i}", database=f"db{i}", host="h:5432", status=s) for i, s in enumerate(statuses, 1)]


def test_a_dry_run_says_it_passed_and_never_cut_over():
    assert target_status("dry-run") == "dry run passed" and target_status(None) == "succeeded"
    passed = _rows("dry run passed", "dry run passed")
    line = outcome_line(passed, seconds=12, dry_run=True)
    assert line == "Dry run passed on 2 targets in 12 s; no production database was touched."
    report = render_fleet_report(passed, policy="continue", per_host_limit=2, max_parallel=4, started="s",
                                 finished="f", seconds=12, halted_by=None, dry_run=True)
    assert report.startswith("# Fleet dry run: 2 targets") and "Outcome: 2 dry run passed." in report
    assert "cut over" not in report
    failed = outcome_line(_rows("dry run passed", "failed"), seconds=3, dry_run=True)
    assert failed.startswith("1 of 2 targets did not pass the dry run: t2")
    assert outcome_line(_rows("succeeded", "noop"), seconds=5, dry_run=False) == (
        "2 targets cut over (1 already at the target revision) in 5 s.")
    assert outcome_line(_rows("succeeded", "rolled back"), seconds=5, dry_run=False).startswith(
        "1 of 2 targets did not cut over: t2")


def test_one_summary_card_with_the_final_states(prefect_api):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactCollectionFilter,
        ArtifactCollectionFilterKey,
        ArtifactFilter,
        ArtifactFilterFlowRunId,
    )
    from prefect.runtime import flow_run

    from pg_cutover.tasks.fleet import SUMMARY_KEY, FleetView

    @flow(name="fleet-view")
    def fleet_view() -> str:
        board = FleetBoard(_rows("queued", "queued", "queued"))
        view = FleetView(board.table())
        board.publish = view.show
        for status in ("waiting for a slot", "running"):
            for row in board.rows:
                board.update(row.target, status=status)
        board.update("t1", status=target_status("dry-run"))
        board.update("t2", status="rolling back")
        board.update("t2", status="rolled back")
        board.update("t3", status="skipped")
        view.summarize(board.table(), dry_run=True)
        return str(flow_run.id)

    run_id = fleet_view()
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
        latest = client.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=[SUMMARY_KEY])))
    # Ten changes of the rows, and still one card per thing: the progress bar, the live table, the summary.
    assert sorted((a.type, a.key or "") for a in found) == [("progress", "fleet-progress"), ("table", ""),
                                                             ("table", SUMMARY_KEY)]
    summary = next(a for a in found if a.key == SUMMARY_KEY)
    final = [r["status"] for r in json.loads(summary.data)]
    assert final == ["dry run passed", "rolled back", "skipped"]
    assert "dry run" in summary.description
    assert [c.latest_id for c in latest] == [summary.id]  # the key's card opens this version
    live = next(a for a in found if a.type == "table" and not a.key)
    assert [r["status"] for r in json.loads(live.data)] == final
    progress = next(a for a in found if a.type == "progress")
    assert progress.data == 100.0 and "1 dry run passed, 1 rolled back, 1 skipped" in progress.description
