"""The backend's service controller: none, or operator-given commands.

Runbook 5.1 (`docker-compose ps`), 6.1 (stop) and 6.4 (start) go through this
one interface, so the flows never care how the backend is hosted. The rollback
has a controller of its own: the backend it starts must serve the old schema.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from pg_cutover.process import CommandResult, Runner, redact


@dataclass
class ServiceController:
    """Commands are argument lists (no shell); a missing one is recorded as not configured."""

    runner: Runner
    status_argv: list[str] | None = None
    stop_argv: list[str] | None = None
    start_argv: list[str] | None = None
    timeout: float = 120
    # Per command, the setting it came from (Settings.service_command), for describe().
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "command" if any((self.status_argv, self.stop_argv, self.start_argv)) else "none"

    def describe(self, which: str) -> str:
        """The command `which` runs and its setting, for a step's note; secrets redacted as in transcripts."""
        argv = getattr(self, f"{which}_argv")
        source = self.sources.get(which)
        if not argv:
            return "no service command configured" + (f" ({source})" if source else "")
        line = redact(shlex.join(argv), self.runner.secrets)
        return f"service {which}: `{line}`" + (f" (from {source})" if source else "")

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
