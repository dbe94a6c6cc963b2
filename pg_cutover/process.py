"""The one wrapper every subprocess goes through.

Argument lists only (no shell), a timeout on every call, secrets passed through
the environment and redacted from anything that is kept as evidence.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from pg_cutover.errors import CommandFailed

REDACTED = "***"


def redact(text: str, secrets: list[str] | tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


@dataclass
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    cwd: str | None = None

    @property
    def command_line(self) -> str:
        return shlex.join(self.argv)

    def transcript(self) -> str:
        """What an operator would have seen in the terminal, for evidence."""
        parts = [f"$ {self.command_line}"]
        if self.stdout.strip():
            parts.append(self.stdout.rstrip())
        if self.stderr.strip():
            parts.append(self.stderr.rstrip())
        parts.append(f"(exit {self.returncode}, {self.seconds:.2f}s)")
        return "\n".join(parts)


@dataclass
class Runner:
    """Runs commands with a fixed set of secrets to keep out of evidence."""

    secrets: tuple[str, ...] = field(default_factory=tuple, repr=False)

    def run(
        self,
        argv: list[str],
        *,
        timeout: float,
        env_extra: dict[str, str] | None = None,
        cwd: Path | str | None = None,
        check: bool = True,
        what: str | None = None,
    ) -> CommandResult:
        env = dict(os.environ)
        env.update(env_extra or {})
        started = time.monotonic()
        label = what or Path(argv[0]).name
        try:
            proc = subprocess.run(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise CommandFailed(
                f"{label} did not finish within {timeout:.0f} s and was stopped.",
                stderr=redact(_text(exc.stderr), self.secrets),
            ) from None
        except FileNotFoundError:
            raise CommandFailed(f"{label}: program {argv[0]!r} was not found.") from None
        result = CommandResult(
            argv=[redact(a, self.secrets) for a in argv],
            returncode=proc.returncode,
            stdout=redact(proc.stdout, self.secrets),
            stderr=redact(proc.stderr, self.secrets),
            seconds=time.monotonic() - started,
            cwd=str(cwd) if cwd else None,
        )
        if check and proc.returncode != 0:
            raise CommandFailed(
                f"{label} {exit_status(proc.returncode)}: {last_lines(result.stderr or result.stdout)}",
                returncode=proc.returncode,
                stderr=result.stderr,
            )
        return result


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def exit_status(returncode: int) -> str:
    """How a process ended, in words: a negative code is a signal (the OOM killer sends SIGKILL)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"failed with exit code {returncode}"


# The line a Python traceback ends with (`sqlalchemy.exc.InternalError: (psycopg2.errors...) ...`): the
# cause, which the statement echoed after it would otherwise push out of a five-line summary.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Failure|Exit)\b(\s*\(.*?\))?: \S")


def last_lines(text: str, n: int = 5) -> str:
    """A failed command's words for a one-line message: from its last exception line when it printed a
    Python traceback (alembic does), else its last `n` lines."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "(no output)"
    start = next((i for i in range(len(lines) - 1, -1, -1) if _EXCEPTION_LINE.match(lines[i])), None)
    return " | ".join(lines[start:start + n] if start is not None else lines[-n:])
