"""The backend's service controller: none, or operator-given commands.

Runbook 5.1 (`docker-compose ps`), 6.1 (stop) and 6.4 (start) go through this
one interface, so the flows never care how the backend is hosted.
"""

from __future__ import annotations

from dataclasses import dataclass

from cutover.process import CommandResult, Runner


@dataclass
class ServiceController:
    """Commands are argument lists (no shell); a missing one is recorded as not configured."""

    runner: Runner
    status_argv: list[str] | None = None
    stop_argv: list[str] | None = None
    start_argv: list[str] | None = None
    timeout: float = 120

    @property
    def kind(self) -> str:
        return "command" if any((self.status_argv, self.stop_argv, self.start_argv)) else "none"

    def _run(self, argv: list[str] | None, what: str) -> CommandResult | None:
        if not argv:
            return None
        return self.runner.run(argv, timeout=self.timeout, what=f"service {what}")

    def status(self) -> CommandResult | None:
        return self._run(self.status_argv, "status")

    def stop(self) -> CommandResult | None:
        return self._run(self.stop_argv, "stop")

    def start(self) -> CommandResult | None:
        return self._run(self.start_argv, "start")
