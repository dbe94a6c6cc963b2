"""A fleet target's settings, resolved on the worker that runs its cutover or rollback.

The target names its password by reference; the reference is resolved here, on
the worker, so the password never travels as a parameter or lands in the API.
"""

from __future__ import annotations

import os

from pg_cutover.errors import ConfigError
from pg_cutover.runbook.inventory import Target
from pg_cutover.settings import Settings, env_name, load_settings

SECRET_SETTINGS = frozenset({"POSTGRES_PASSWORD"})


def target_settings(target: Target | None, environment: dict[str, str] | None = None) -> Settings:
    """The worker's settings, with `environment` (the cutover run's own, see `flow_run_environment`) and
    then the target's values over them (none: the worker's own)."""
    if target is None:
        return load_settings(**(environment or {}))
    overrides: dict[str, str] = {**(environment or {}), **target.overrides()}
    if target.password:
        overrides["POSTGRES_PASSWORD"] = resolve_password(target)
    return load_settings(**overrides)


def resolve_password(target: Target) -> str:
    kind, _, name = (target.password or "").partition(":")
    if kind == "env":
        value = os.environ.get(name)
        if not value:
            raise ConfigError(f"target {target.name}: password reference env:{name} is not set on this worker; "
                              f"expected the environment variable {name} to hold the password.")
        return value
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name).get()
    except Exception as exc:  # missing block, wrong type or no API: all mean "cannot be loaded"
        raise ConfigError(f"target {target.name}: password reference secret:{name} cannot be loaded "
                          f"({exc.__class__.__name__}); expected a Prefect Secret block named {name}.") from None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"target {target.name}: Secret block {name} is empty or not a string; expected the password.")
    return value


def flow_run_environment(flow_run_id: str) -> dict[str, str]:
    """The settings a cutover flow run was given through job variables (its deployment's `job_variables.env`
    in prefect.yaml, then the run's own from the UI's Custom run), so its rollback runs with the same
    database and app. Only settings, and never a secret: those stay in the worker's environment."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(flow_run_id)
        except ObjectNotFound:
            return {}
        env: dict[str, str] = {}
        if run.deployment_id:
            try:
                env.update((client.read_deployment(run.deployment_id).job_variables or {}).get("env") or {})
            except ObjectNotFound:
                pass
        env.update((run.job_variables or {}).get("env") or {})
    known = {env_name(name) for name in Settings.model_fields}
    return {k: str(v) for k, v in env.items() if k in known and k not in SECRET_SETTINGS}


def flow_run_target(flow_run_id: str) -> Target | None:
    """The `target` a cutover flow run was started with, read back from the API (None if it had none)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(flow_run_id)
        except ObjectNotFound:  # a run of another Prefect server: the worker's own settings
            return None
    value = (run.parameters or {}).get("target")
    return Target.model_validate(value) if value else None
