"""The age identity a restore decrypts with (CUTOVER_ENCRYPTION_IDENTITY=env:NAME|secret:BLOCK).

Resolved here, in the task layer, on the worker that restores (rollback, drill), and handed to the domain
as a plain value (`RestoreIdentity`); the worker that writes backups needs only the recipients. The
identity joins the run's redaction list (`Settings.keep_secret`) the moment it is read. A reference that
cannot be resolved is not an error here: it becomes the one sentence a restore gives if, and only if, it
needs to decrypt (a rollback whose local dump is intact never does).
"""

from __future__ import annotations

import os

from pg_cutover.settings import Settings
from pg_cutover.storage.encryption import SETTING, RestoreIdentity


def restore_identity(settings: Settings) -> RestoreIdentity:
    ref = settings.encryption_identity
    if not ref:
        return RestoreIdentity(problem=f"{SETTING} is not set, and the off-site copy is encrypted on the client; "
                                       "expected env:NAME or secret:BLOCK naming its age identity")
    kind, _, name = ref.partition(":")
    if kind == "env":
        value = os.environ.get(name)
        if not value or not value.strip():
            return RestoreIdentity(problem=f"{SETTING}={ref} names the environment variable {name}, which is not "
                                           "set on this worker; expected it to hold the age identity (AGE-SECRET-KEY-1...)")
    else:
        from prefect.blocks.system import Secret

        try:
            value = Secret.load(name, _sync=True).get()
        except Exception as exc:  # missing block, wrong type or no API: all mean "cannot be loaded"
            return RestoreIdentity(problem=f"{SETTING}={ref} cannot be loaded ({type(exc).__name__}); expected a "
                                           f"Prefect Secret block named {name} holding the age identity")
        if not isinstance(value, str) or not value.strip():
            return RestoreIdentity(problem=f"{SETTING}={ref}: the Secret block is empty or not a string; expected "
                                           "the age identity (AGE-SECRET-KEY-1...)")
    value = value.strip()
    settings.keep_secret(value)
    return RestoreIdentity(secret=value)
