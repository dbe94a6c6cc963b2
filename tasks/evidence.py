"""Artifact helpers shared by every task: stable keys and retry conditions."""

from __future__ import annotations

import re
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from cutover.errors import ConnectionFailed

FENCE = "```"


def artifact_key(database: str, name: str) -> str:
    """`<database>-<name>` in the only alphabet Prefect accepts for keys."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{database}-{name}".lower()).strip("-")
    return slug[:200]


def publish_markdown(database: str, name: str, markdown: str, description: str) -> None:
    create_markdown_artifact(markdown=markdown, key=artifact_key(database, name), description=description)


def publish_table(database: str, name: str, rows: list[dict[str, Any]], description: str) -> None:
    create_table_artifact(table=rows, key=artifact_key(database, name), description=description)


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
    """A progress artifact the UI shows filling up as steps finish (updated in place)."""

    def __init__(self, database: str, planned_steps: list[str]):
        from prefect.artifacts import create_progress_artifact

        self.planned = planned_steps
        self.done: set[str] = set()
        self.id = create_progress_artifact(progress=0.0, key=artifact_key(database, "progress"),
                                           description=f"Cutover of {database}: {len(planned_steps)} steps")

    def step_finished(self, record) -> None:
        from prefect.artifacts import update_progress_artifact

        if record.name in self.planned:
            self.done.add(record.name)
            update_progress_artifact(self.id, progress=round(100.0 * len(self.done) / len(self.planned), 1))

    def complete(self) -> None:
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(self.id, progress=100.0)
