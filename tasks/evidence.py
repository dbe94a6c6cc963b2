"""Artifact helpers shared by every task: stable keys, retry conditions, and the outbox that posts them."""

from __future__ import annotations

import contextvars
import logging
import queue
import re
import threading
import time
import weakref
from concurrent.futures import Future, wait
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from prefect import get_run_logger
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run

from pg_cutover.errors import ConnectionFailed

FENCE = "```"


def run_logger():
    """The run's logger (its lines in the UI); outside a run (a rollback without Prefect) the module's."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("pg-cutover")


def artifact_key(database: str, name: str) -> str:
    """`<database>-<name>` in the only alphabet Prefect accepts for keys."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{database}-{name}".lower()).strip("-")
    return slug[:200]


class Outbox:
    """Artifacts posted to the Prefect API in order, from one thread, so that no step waits for them.

    Each artifact is one API round trip (20-90 ms on a busy 2-core host), and a cutover posts
    about 25 of them, mostly from steps inside the write-pause window. Each post carries the
    context of the task or flow run that made it, so the UI files it under that run, as before.
    Every flow drains the outbox before it ends: its artifacts are in the API by the time its
    final state is. A post that still fails after its retries does not fail the run (the
    manifest and the report file hold the same evidence); `drain` names it, and the flow logs it.
    A post uses its run's own API client (from that context), which is closed once the flow run
    has ended: the drain belongs inside the flow body.
    """

    ATTEMPTS = 3

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue | None = None
        self._pending: list[Future] = []
        self.unposted: list[str] | None = None  # set while offline: what was not sent

    @contextmanager
    def offline(self) -> Iterator[list[str]]:
        """No Prefect API to send to (a rollback run without it): each post is only named, never sent."""
        self.unposted = []
        try:
            yield self.unposted
        finally:
            self.unposted = None

    def post(self, what: str, send: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if self.unposted is not None:
            self.unposted.append(what)
            return
        # Threads do not inherit context: the run's (API URL, flow and task run ids) goes with each post.
        context = contextvars.copy_context()
        future: Future = Future()
        with self._lock:
            if self._queue is None:
                self._queue = queue.SimpleQueue()
                # A daemon, unlike an executor's worker: a post to an API that never answers must not
                # keep the process alive once the flow's drain has given up on it and said so.
                threading.Thread(target=self._work, args=(self._queue,), daemon=True, name="evidence").start()
            self._pending.append(future)
            self._queue.put((future, context, what, send, args, kwargs))

    def _work(self, posts: queue.SimpleQueue) -> None:
        while True:
            future, context, what, send, args, kwargs = posts.get()
            try:
                future.set_result(context.run(self._send, what, send, args, kwargs))
            except BaseException as exc:  # noqa: BLE001 (handed to whoever drains)
                future.set_exception(exc)

    def _send(self, what: str, send: Callable[..., Any], args: tuple, kwargs: dict) -> str | None:
        for attempt in range(1, self.ATTEMPTS + 1):  # ends in a return: sent (None) or the last failure
            try:
                send(*args, **kwargs)
                return None
            except Exception as exc:
                if attempt == self.ATTEMPTS:
                    return f"{what}: {type(exc).__name__}: {exc}"[:300]
                time.sleep(0.5 * attempt)

    def drain(self, timeout: float = 120.0) -> list[str]:
        """Wait for every artifact posted so far (by any run in this process); what could not be posted, one line each."""
        with self._lock:
            pending = list(self._pending)
        done, not_done = wait(pending, timeout=timeout)
        with self._lock:  # each failure is reported once, by the drain that collects it
            mine = [f for f in done if f in self._pending]
            self._pending = [f for f in self._pending if f not in done]
        failures = [str(f.exception() or f.result()) for f in mine if f.exception() or f.result()]
        if not_done:
            failures.append(f"{len(not_done)} artifacts still unsent after {timeout:.0f} s")
        return failures


OUTBOX = Outbox()


def drain_evidence(logger) -> None:
    """Before a flow ends: every artifact it posted is in the API, or named in an ERROR line."""
    failures = OUTBOX.drain()
    if failures:
        logger.error("%d artifacts did not reach the Prefect API (the manifest and report file hold the same "
                     "evidence): %s", len(failures), "; ".join(failures))


@contextmanager
def evidence_drained(logger) -> Iterator[None]:
    """Around a flow body: `drain_evidence` when it ends, however it ends."""
    try:
        yield
    finally:
        drain_evidence(logger)


def publish_markdown(database: str, name: str, markdown: str, description: str) -> None:
    key = artifact_key(database, name)
    OUTBOX.post(key, create_markdown_artifact, markdown=markdown, key=key, description=description)


def publish_table(database: str, name: str, rows: list[dict[str, Any]], description: str) -> None:
    key = artifact_key(database, name)
    OUTBOX.post(key, create_table_artifact, table=rows, key=key, description=description)


def publish_link(key: str, link: str, link_text: str, description: str) -> None:
    OUTBOX.post(key, create_link_artifact, key=key, link=link, link_text=link_text, description=description)


def code_block(text: str) -> str:
    return f"{FENCE}text\n{text.rstrip()}\n{FENCE}\n"


def retry_on_connection_error(task, task_run, state) -> bool:
    """Retry only when the database could not be reached, never on a bad setting."""
    try:
        outcome = state.result(raise_on_failure=False)
    except Exception as exc:  # the result itself may be the raised exception
        outcome = exc
    return isinstance(outcome, ConnectionFailed)


class Progress:
    """A progress artifact the UI shows filling up as steps finish (updated in place, through the outbox).

    While a step runs its description names it ("step 7 of 19, backup-full") and, for the long ones,
    their latest byte count ("412 MB written (38 MB/s)"). Byte counts arrive from other threads every
    few seconds; at most one per `DETAIL_SECONDS` becomes an update, the rest are only logged.
    """

    DETAIL_SECONDS = 2.0
    # The run's own progress, found by the readings of its steps (pg_cutover.tasks.progress).
    _of_flow_run: "weakref.WeakValueDictionary[str, Progress]" = weakref.WeakValueDictionary()

    def __init__(self, database: str, planned_steps: list[str]):
        self.planned = planned_steps
        self.done: set[str] = set()
        self.id = None
        self.key = artifact_key(database, "progress")
        self.database = database
        self.title = f"Cutover of {database}: {len(planned_steps)} steps"
        self.warnings: list[str] = []  # a step that could not do its check is said here, not only in the report
        self.running: str | None = None
        self.detail = ""  # the latest byte count of the running step, or of work beside it
        self._value, self._generation = 0.0, 0
        self._detail_at = float("-inf")
        self._lock = threading.Lock()
        run = flow_run.id
        if run:
            Progress._of_flow_run[str(run)] = self
        OUTBOX.post(self.key, self._create, self.title)

    @classmethod
    def of_current_run(cls) -> "Progress | None":
        run = flow_run.id
        return cls._of_flow_run.get(str(run)) if run else None

    def _create(self, description: str) -> None:
        self.id = create_progress_artifact(progress=0.0, key=self.key, description=description)

    def _queue(self, value: float) -> None:
        with self._lock:
            self._value, self._generation = value, self._generation + 1
            generation = self._generation
        OUTBOX.post(self.key, self._update, generation)

    def _update(self, generation: int) -> None:
        # An update with a newer one queued behind it is skipped: one API call fewer, same final bar.
        if self.id is not None and generation == self._generation:
            update_progress_artifact(self.id, progress=self._value, description=self.description())

    def description(self) -> str:
        text = self.title
        running = self.running
        if running is not None:
            number = self.planned.index(running) + 1 if running in self.planned else len(self.done) + 1
            text = f"Cutover of {self.database}: step {number} of {len(self.planned)}, {running}"
            if self.detail:
                text += self.detail
        return text + "".join(f"; WARNING {w}" for w in self.warnings)

    def step_started(self, record) -> None:
        self.running, self.detail = record.name, ""
        self._queue(self._value)

    def step_finished(self, record) -> None:
        if record.name == self.running:
            self.running, self.detail = None, ""
        if record.status == "warning":
            self.warnings.append(f"{record.name}: {record.error}")
        if record.name in self.planned:
            self.done.add(record.name)
            self._queue(round(100.0 * len(self.done) / len(self.planned), 1))

    def show(self, step: str, progress: str) -> bool:
        """A long step's byte count ("412 MB written (38 MB/s)"), from any thread; False when too soon to post."""
        now = time.monotonic()
        with self._lock:
            if now - self._detail_at < self.DETAIL_SECONDS:
                return False
            self._detail_at = now
        # Work beside the running step (the upload during the dry run) is named as well.
        self.detail = f": {progress}" if step == self.running else f"; {step}: {progress}"
        self._queue(self._value)
        return True

    def complete(self) -> None:
        self.running, self.detail = None, ""
        self._queue(100.0)
