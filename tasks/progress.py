"""Where the long steps' byte counts (`pg_cutover.throughput`) are said: the run's log and its progress artifact.

Installed once, on import, by the task modules whose steps count bytes. A reading is named after the
task it was taken in (`backup-full`, `scratch-restore`, `offsite-mirror`, `rollback-restore`), so the
domain need not know the runbook's step names; outside a task it keeps the domain's own label.
"""

from __future__ import annotations

from prefect.context import TaskRunContext

from pg_cutover import throughput
from pg_cutover.tasks.evidence import Progress, run_logger


def say(reading: throughput.Reading) -> None:
    """One INFO line per reading; the progress artifact too, when the run has one (it limits its own rate)."""
    context = TaskRunContext.get()
    step = context.task.name if context is not None else reading.step
    progress = reading.progress()
    run_logger().info("%s: %s", step, progress)
    board = Progress.of_current_run()
    if board is not None:
        board.show(step, progress)


throughput.install(say)
