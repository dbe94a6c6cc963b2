"""Artifacts go through the evidence outbox: off the steps' path, yet filed under their run, and all in by the end."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.runtime import flow_run, task_run

from pg_cutover.tasks.evidence import OUTBOX, drain_evidence, evidence_drained, publish_markdown, publish_table

pytestmark = pytest.mark.usefixtures("prefect_api")


def _artifacts(flow_run_id) -> dict[str, object]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found if a.key}


@task
def _evidence_step(n: int) -> str:
    publish_markdown("outbox", f"step-{n}", f"# step {n}\n", "a step's evidence")
    publish_table("outbox", f"rows-{n}", [{"step": n, "rows": 10 * n}], "a step's table")
    return str(task_run.id)


def test_artifacts_are_filed_under_the_task_that_made_them_and_all_in_when_the_flow_returns():
    @flow(name="outbox-filed")
    def run() -> dict:
        with evidence_drained(get_run_logger()):  # as every flow of the tool does
            publish_markdown("outbox", "flow-level", "# before the steps\n", "the flow's own evidence")
            return {"flow": str(flow_run.id), "tasks": [_evidence_step(n) for n in range(1, 4)]}

    ids = run()
    arts = _artifacts(ids["flow"])  # read right after the flow returned: nothing may still be in flight
    assert set(arts) == {"outbox-flow-level", *(f"outbox-step-{n}" for n in range(1, 4)),
                         *(f"outbox-rows-{n}" for n in range(1, 4))}
    assert arts["outbox-flow-level"].task_run_id is None
    for n, task_run_id in enumerate(ids["tasks"], start=1):
        assert str(arts[f"outbox-step-{n}"].task_run_id) == task_run_id
        assert str(arts[f"outbox-rows-{n}"].task_run_id) == task_run_id
        assert arts[f"outbox-step-{n}"].data == f"# step {n}\n"
    assert '"rows": 30' in arts["outbox-rows-3"].data


def test_a_step_does_not_wait_for_its_artifacts_round_trip():
    api_answers = threading.Event()
    posted: list[str] = []

    def slow_api(key: str) -> None:
        api_answers.wait(30)
        posted.append(key)

    @flow(name="outbox-off-path")
    def run() -> list[str]:
        with evidence_drained(get_run_logger()):
            OUTBOX.post("slow", slow_api, "slow")
            publish_markdown("outbox", "after-slow", "# queued behind the slow one\n", "order")
            seen_by_the_step = list(posted)  # the step went on while the API had not answered
            api_answers.set()
            return seen_by_the_step

    assert run() == []
    assert posted == ["slow"]  # drained before the flow returned


def test_a_post_that_keeps_failing_is_named_and_does_not_fail_the_run(caplog):
    @flow(name="outbox-failure")
    def run() -> str:
        # A key Prefect refuses (capitals, spaces): every attempt fails the same way.
        OUTBOX.post("Not A Valid Key", create_markdown_artifact, markdown="# lost\n", key="Not A Valid Key")
        publish_markdown("outbox", "kept", "# kept\n", "still posted")
        drain_evidence(logging.getLogger("outbox-test"))
        return str(flow_run.id)

    with caplog.at_level(logging.ERROR, logger="outbox-test"):
        flow_run_id = run()
    assert "outbox-kept" in _artifacts(flow_run_id)
    errors = [r.getMessage() for r in caplog.records if r.name == "outbox-test"]
    assert len(errors) == 1 and "1 artifacts did not reach the Prefect API" in errors[0]
    assert "Not A Valid Key" in errors[0]
    assert OUTBOX.drain() == []  # reported once


def test_a_post_the_api_never_answers_does_not_keep_the_process_alive():
    # The drain gives up (and says so); the process then exits instead of waiting on that post forever.
    script = ("import threading\nfrom pg_cutover.tasks.evidence import OUTBOX\n"
              "OUTBOX.post('stuck', threading.Event().wait)\nprint(OUTBOX.drain(timeout=1))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-1500:]
    assert "1 artifacts still unsent after 1 s" in done.stdout
