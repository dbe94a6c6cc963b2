"""A fleet's inventory: one entry per target database, passwords by reference only.

    [fleet]
    policy = "continue"        # or "halt": start no new target after the first failure
    per_host_limit = 2         # cutovers at once on one PostgreSQL host
    max_parallel = 4           # cutovers at once in the whole fleet

    [defaults]                 # any target key; each [[target]] may override it
    host = "db1.internal"
    password = "env:FLEET_PGPASSWORD"     # or "secret:<Prefect Secret block name>"

    [[target]]
    name = "tenant-a"
    database = "tenant_a"
    health_url = "http://tenant-a.internal:8000"
    strategy = "clone"         # this one only; the others keep CUTOVER_STRATEGY

A `Target` is also the cutover flow's `target` parameter: it travels to whichever
worker runs that cutover, so it holds nothing secret, and the password reference
is resolved on the worker.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pg_cutover.errors import ConfigError
from pg_cutover.values import IDENTIFIER_FORM, HealthUrl, Identifier, OptionalRevision, Revision

TARGET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
PASSWORD_REF_RE = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|secret:[a-z0-9][a-z0-9-]*)\Z")
PASSWORD_REF_FORM = "a reference, env:VARIABLE_NAME or secret:<Prefect Secret block name>, never the password itself"

# Target key -> the setting (environment name) it overrides for that target's cutover.
SETTING_OF = {
    "database": "POSTGRES_DB",
    "host": "POSTGRES_HOST",
    "port": "POSTGRES_PORT",
    "user": "POSTGRES_USER",
    "baseline_rev": "BASELINE_REV",
    "health_url": "CUTOVER_HEALTH_URL",
    "service": "CUTOVER_SERVICE",
    "alembic_dir": "CUTOVER_ALEMBIC_DIR",
    "strategy": "CUTOVER_STRATEGY",
}
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 5432


class Target(BaseModel):
    """One database of the fleet, as the cutover flow receives it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Short name of the target: lowercase letters, digits and dashes.")
    database: Identifier = Field(description="The database to cut over (POSTGRES_DB for this target).")
    host: str | None = Field(None, description="PostgreSQL host (default: POSTGRES_HOST of the worker).")
    port: int | None = Field(None, ge=1, le=65535, description="PostgreSQL port (default: POSTGRES_PORT).")
    user: str | None = Field(None, description="PostgreSQL user (default: POSTGRES_USER).")
    password: str | None = Field(None, description="Password reference: env:NAME or secret:<block>; never the password.")
    baseline_rev: OptionalRevision = Field(None, description="Baseline revision (default: BASELINE_REV).")
    health_url: HealthUrl | None = Field(None, description="The backend's URL for health checks, or 'none'.")
    service: str | None = Field(None, description="Service controller, e.g. compose:<service>, or 'none'.")
    alembic_dir: str | None = Field(None, description="Directory with alembic.ini (default: CUTOVER_ALEMBIC_DIR).")
    strategy: Literal["runbook", "clone"] | None = Field(
        None, description="'runbook' or 'clone' for this database (default: CUTOVER_STRATEGY): a big database "
                          "may take the clone strategy's seconds-long window while small ones keep the runbook's.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not TARGET_NAME_RE.match(value):
            raise ValueError("expected lowercase letters, digits and dashes, such as tenant-a")
        return value

    @field_validator("password")
    @classmethod
    def _password(cls, value: str | None) -> str | None:
        if value is not None and not PASSWORD_REF_RE.match(value):
            # The value may be a real password: it is never echoed back.
            raise ValueError(f"expected {PASSWORD_REF_FORM}")
        return value

    def overrides(self) -> dict[str, str]:
        """The settings this target changes, by environment name; the password is resolved apart."""
        return {SETTING_OF[key]: str(value) for key, value in self.model_dump().items()
                if key in SETTING_OF and value is not None}

    def host_key(self, default_host: str = DEFAULT_HOST, default_port: int = DEFAULT_PORT) -> str:
        return f"{self.host or default_host}:{self.port or default_port}"


class Inventory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: Literal["continue", "halt"] = "continue"
    per_host_limit: int = Field(2, ge=1, le=64)
    max_parallel: int = Field(4, ge=1, le=256)
    target_rev: Revision = "head"
    deployment: str = "cutover/fleet-target"
    targets: list[Target]

    @field_validator("deployment")
    @classmethod
    def _deployment(cls, value: str) -> str:
        if not re.fullmatch(r"[^/\s]+/[^/\s]+", value):
            raise ValueError("expected <flow name>/<deployment name>, such as cutover/fleet-target")
        return value

    def hosts(self) -> dict[str, list[Target]]:
        found: dict[str, list[Target]] = {}
        for target in self.targets:
            found.setdefault(target.host_key(), []).append(target)
        return found


def load_inventory(path: str | Path, **fleet_overrides: Any) -> Inventory:
    """Read and check an inventory file, or raise ConfigError with one sentence naming the key.

    `fleet_overrides` (policy, per_host_limit, max_parallel; None = keep the file's) win over [fleet].
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"inventory {path} does not exist; expected a TOML file with [[target]] entries.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"inventory {path} cannot be read ({exc.__class__.__name__}); expected a readable TOML file.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"inventory {path} is not valid TOML ({exc}).") from None
    return parse_inventory(raw, str(path), **fleet_overrides)


def parse_inventory(raw: dict[str, Any], where: str = "inventory", **fleet_overrides: Any) -> Inventory:
    unknown = sorted(set(raw) - {"fleet", "defaults", "target"})
    if unknown:
        raise ConfigError(f"{where}: unknown section [{unknown[0]}]; expected [fleet], [defaults] and [[target]].")
    fleet = raw.get("fleet", {})
    defaults = raw.get("defaults", {})
    entries = raw.get("target", [])
    if not isinstance(fleet, dict) or not isinstance(defaults, dict):
        raise ConfigError(f"{where}: [fleet] and [defaults] must be tables.")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{where}: expected at least one [[target]] entry with name and database.")
    targets = []
    for index, entry in enumerate(entries):
        label = f"{where}: target {entry.get('name') or index + 1}"
        try:
            targets.append(Target(**{**defaults, **entry}))
        except ValidationError as exc:
            raise ConfigError(_sentence(label, exc)) from None
    names = [t.name for t in targets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{where}: target name {dupes[0]!r} is used twice; expected one entry per name.")
    places = [(t.host_key(), t.database) for t in targets]
    twice = sorted({p for p in places if places.count(p) > 1})
    if twice:
        raise ConfigError(f"{where}: database {twice[0][1]} on {twice[0][0]} is listed twice; "
                          "expected each database once.")
    fleet = {**fleet, **{k: v for k, v in fleet_overrides.items() if v is not None}}
    if "targets" in fleet:
        raise ConfigError(f"{where}: [fleet] cannot hold targets; expected [[target]] entries.")
    try:
        return Inventory(**fleet, targets=targets)
    except ValidationError as exc:
        raise ConfigError(_sentence(f"{where}: [fleet]", exc)) from None


def _sentence(label: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err.get("loc", ())) or "?"
    if err.get("type") == "missing":
        return f"{label}: {key} is not set; expected {_expected(key)}."
    if err.get("type") == "extra_forbidden":
        return f"{label}: unknown key {key}; expected one of {', '.join(Target.model_fields)}."
    message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    shown = "" if key == "password" else f" ({err.get('input')!r})"
    return f"{label}: {key} is invalid{shown}: {message}."


def _expected(key: str) -> str:
    return {"database": f"the database name, {IDENTIFIER_FORM}", "name": "a short name such as tenant-a"}.get(key, "a value")
