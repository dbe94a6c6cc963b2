"""Exceptions that carry one operator-readable sentence.

Every error the tool raises on purpose is a CutoverError; its message is the
sentence shown to the operator, so it must never contain a secret.
"""


class CutoverError(Exception):
    """Base for failures the tool explains itself."""


class ConfigError(CutoverError):
    """A setting is missing or malformed; raised before anything is changed."""


class PreflightError(CutoverError):
    """The environment is not fit for a cutover; nothing has been changed yet."""


class ConnectionFailed(PreflightError):
    """The database could not be reached; the one preflight failure worth a retry."""


class CommandFailed(CutoverError):
    """A subprocess exited non-zero or timed out."""

    def __init__(self, message: str, *, returncode: int | None = None, stderr: str = ""):
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


class StepFailed(CutoverError):
    """A runbook step ran and its pass condition was not met."""
