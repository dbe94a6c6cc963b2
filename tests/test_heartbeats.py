"""`cutover run` sends its flow's heartbeats itself; a run started elsewhere keeps Prefect's own."""

from __future__ import annotations

import pytest
from prefect import flow
from prefect.runtime import flow_run

from pg_cutover.launcher.prefect_internals import engine_heartbeats_replaced, heartbeats
from tests.helpers import heartbeat_events

pytestmark = pytest.mark.usefixtures("prefect_api")


@flow(name="heartbeat-probe")
def probe() -> str:
    with heartbeats():
        return str(flow_run.id)


def test_inside_cutover_run_the_flow_sends_the_one_heartbeat_the_engine_would():
    with engine_heartbeats_replaced():
        run_id = probe()
    # One sender: the engine's thread would have sent a second heartbeat at the start (interval 180 s).
    (event,) = heartbeat_events(run_id)
    assert event["resource"]["prefect.resource.id"] == f"prefect.flow-run.{run_id}"
    assert event["resource"]["prefect.resource.name"]
    assert [(r["prefect.resource.role"], r.get("prefect.resource.name")) for r in event["related"]] == [
        ("flow", "heartbeat-probe")]


def test_a_run_started_any_other_way_keeps_the_engines_heartbeats_alone():
    run_id = probe()
    (event,) = heartbeat_events(run_id)  # the engine's; the flow's own would be a second
    assert event["resource"]["prefect.resource.id"] == f"prefect.flow-run.{run_id}"


def test_the_flows_heartbeat_carries_what_the_engines_does():
    """Fails when the installed Prefect changes its heartbeat: zombie detection matches on these."""
    (engine,) = heartbeat_events(probe())
    with engine_heartbeats_replaced():
        (ours,) = heartbeat_events(probe())

    def shape(event):
        return (event["event"], sorted(event["resource"]), [(r["prefect.resource.role"], r.get("prefect.resource.name"))
                                                           for r in event["related"]])

    assert shape(ours) == shape(engine)
