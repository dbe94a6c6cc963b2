"""Flow-run heartbeats that stop the moment the flow body ends.

Prefect 3.9's sync flow engine sends heartbeats from a thread that sleeps in 1 s steps, and joins
that thread when the flow ends: every run's end waits for the next whole second (0-1 s, 0.5 s on
average, in every `cutover run`). `cutover run` turns the engine's heartbeats off around its flow
call and the flow body sends the same event instead (`prefect.flow-run.heartbeat`, the same
resource and related resources, at the same interval) from a thread an Event stops at once.
Zombie detection (deployments/zombie-detection.yaml) sees the same events. A run started by a
worker keeps the engine's own heartbeats: nothing here changes it.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from contextlib import contextmanager
from typing import Iterator

# Set by `engine_heartbeats_replaced` for the flow call it wraps: the interval the flow must keep.
_INTERVAL: contextvars.ContextVar[int | None] = contextvars.ContextVar("cutover_heartbeat_seconds", default=None)
EVENT = "prefect.flow-run.heartbeat"
logger = logging.getLogger("cutover.heartbeats")


@contextmanager
def engine_heartbeats_replaced() -> Iterator[None]:
    """Around a flow call in this process: the engine's heartbeats off, the flow's own at the same interval."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

    seconds = get_current_settings().flows.heartbeat_frequency
    if seconds is None:  # heartbeats are off in this environment: they stay off
        yield
        return
    token = _INTERVAL.set(seconds)
    try:
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield
    finally:
        _INTERVAL.reset(token)


@contextmanager
def heartbeats() -> Iterator[None]:
    """In a flow body: its heartbeats, when `engine_heartbeats_replaced` turned the engine's off."""
    from prefect.context import FlowRunContext

    seconds = _INTERVAL.get()
    context = FlowRunContext.get()
    if seconds is None or context is None or context.flow_run is None:
        yield
        return
    resource, related = _event_resources(context)
    stop = threading.Event()

    def beat() -> None:
        from prefect.events import emit_event

        while True:
            try:
                emit_event(event=EVENT, resource=resource, related=related)
            except Exception:
                logger.debug("Failed to emit a heartbeat", exc_info=True)
            if stop.wait(seconds):
                return

    # The run's context (API URL, events client) goes with the thread: threads do not inherit it.
    thread = threading.Thread(target=contextvars.copy_context().run, args=(beat,), daemon=True,
                              name="flow-heartbeats")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2)


def _event_resources(context) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The resource and related resources the engine's own heartbeat carries."""
    from prefect import __version__

    run = context.flow_run
    resource = {"prefect.resource.id": f"prefect.flow-run.{run.id}", "prefect.resource.name": run.name or "",
                "prefect.version": __version__}
    related = []
    if run.flow_id:
        related.append({"prefect.resource.id": f"prefect.flow.{run.flow_id}", "prefect.resource.role": "flow",
                        "prefect.resource.name": context.flow.name if context.flow else ""})
    if run.deployment_id:
        related.append({"prefect.resource.id": f"prefect.deployment.{run.deployment_id}",
                        "prefect.resource.role": "deployment"})
    related += [{"prefect.resource.id": f"prefect.tag.{tag}", "prefect.resource.role": "tag"}
                for tag in sorted(set(run.tags or []))]
    return resource, related
