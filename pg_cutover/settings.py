"""The one configuration model: the runbook's variable names plus CUTOVER_*.

A bad value becomes one sentence naming the setting and the expected form,
raised before any database is touched.
"""

from __future__ import annotations

import os
import re
import shlex
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pg_cutover.errors import ConfigError
from pg_cutover.values import (
    AGE_RECIPIENTS_FORM,
    IDENTIFIER_FORM,
    AgeRecipients,
    CommandLine,
    CredentialsBlockName,
    DumpCompression,
    EndpointUrl,
    HealthUrl,
    Identifier,
    IdentityRef,
    OptionalRevision,
    PgDuration,
)

# The runbook's own names; every other setting is CUTOVER_ plus the field's name.
RUNBOOK_NAMES = ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "BASELINE_REV")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CUTOVER_", extra="ignore", populate_by_name=True,
                                      case_sensitive=False)

    postgres_host: str = Field("127.0.0.1", validation_alias="POSTGRES_HOST")
    postgres_port: int = Field(5432, validation_alias="POSTGRES_PORT", ge=1, le=65535)
    postgres_user: str = Field("postgres", validation_alias="POSTGRES_USER")
    postgres_password: SecretStr | None = Field(None, validation_alias="POSTGRES_PASSWORD")
    postgres_db: Identifier = Field(validation_alias="POSTGRES_DB")
    baseline_rev: OptionalRevision = Field(None, validation_alias="BASELINE_REV")

    alembic_dir: Path = Path(".")
    alembic_command: CommandLine = "alembic"
    backup_dir: Path = Path("./backups")
    health_url: HealthUrl = "http://localhost:8000"
    health_paths: str = "/,/docs"
    pg_bin: Path | None = None
    service: str | None = None
    service_status: CommandLine = None
    service_stop: CommandLine = None
    service_start: CommandLine = None
    # The rollback leaves the old schema behind, which the cutover's new release may refuse to serve.
    rollback_service_status: CommandLine = None
    rollback_service_stop: CommandLine = None
    rollback_service_start: CommandLine = None

    # Off-site copies (S3 or any S3-compatible server); mirroring is on when a bucket is set.
    s3_bucket: str | None = None
    s3_prefix: str = "pg-cutover"
    s3_endpoint_url: EndpointUrl = None
    s3_region: str | None = None
    s3_sse: Literal["AES256", "aws:kms"] | None = None
    s3_kms_key_id: str | None = None
    s3_checksum: Literal["sha256", "off"] = "sha256"
    s3_object_lock_days: int | None = Field(None, gt=0)
    s3_object_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] = "GOVERNANCE"
    s3_keep: int = Field(10, ge=0)
    s3_max_attempts: int = Field(5, ge=1, le=20)
    s3_part_size_mb: int = Field(16, ge=5, le=5120)
    # Link artifacts name the object (s3:// URI or console URL) unless presigned (bearer) links are asked for;
    # those are refused for an object not encrypted on the client unless explicitly allowed (pg_cutover.storage.links).
    s3_links: Literal["uri", "presigned"] = "uri"
    s3_presign_plaintext: bool = False
    s3_link_seconds: int = Field(3600, ge=60, le=7 * 24 * 3600)
    s3_console_url: str | None = None
    # A Prefect AwsCredentials/MinIOCredentials block, read by the task layer (pg_cutover.tasks.s3_credentials).
    s3_credentials_block: CredentialsBlockName = None
    require_offsite: bool = True
    # Client-side encryption of what leaves the machine (the dump and schema snapshot; pg_cutover.storage.encryption):
    # the worker that writes backups holds only the recipients (public keys); the identity, needed only to restore
    # (rollback, drill), is a reference (env:NAME or secret:BLOCK) resolved by the task layer, never a value here.
    encryption: Literal["off", "age"] = "off"
    encryption_recipients: AgeRecipients = None
    encryption_identity: IdentityRef = None

    # The maintenance window (runbook 1): how long an operator has to answer the checklist
    # form, when the window ends, and whether writes must be seen paused before the backup.
    approval_timeout: int = Field(1800, gt=0)
    window_end: datetime | None = None
    window_minutes: int | None = Field(None, gt=0)
    write_freeze: Literal["check", "stop-service", "off"] = "check"
    write_sample_seconds: float = Field(2.0, ge=0, le=600)
    # How the upgraded database is made: a backup restored into scratch then production upgraded in
    # place (runbook), or a file-level clone upgraded and swapped in by renames (clone).
    strategy: Literal["runbook", "clone"] = "runbook"
    # The clone strategy keeps the original; after the window its dump is restored into a check
    # database to prove it, and `cutover finalize` drops the original only once that proof exists
    # and this many hours have passed since the swap.
    verify_restore: bool = True
    keep_original_hours: float = Field(24, ge=0, le=24 * 365)

    # Proof before stamping (parity) and migration safety on production.
    parity_allow: str = ""
    # Apps whose first revision alters tables that create_all of their initial models made.
    baseline_bootstrap: CommandLine = None
    parity_checksum_max_mb: int = Field(256, ge=0)
    lock_timeout: PgDuration = "10s"
    statement_timeout: PgDuration = "30min"
    blocking_xact_seconds: float = Field(60, ge=0)
    # A production stamp/upgrade that failed only on lock_timeout, having changed nothing, is tried again.
    lock_retries: int = Field(3, ge=0, le=10)
    lock_retry_wait: float = Field(5.0, validation_alias="CUTOVER_LOCK_RETRY_WAIT_SECONDS", gt=0, le=600)
    lint: Literal["warn", "strict", "off"] = "warn"

    # pg_dump's compression: gzip level 1 is about twice as fast as the default for ~15% more bytes.
    dump_compression: DumpCompression = "1"

    # Subprocess timeouts: Prefect's own task timeout cannot interrupt a blocked
    # call, so every pg tool and alembic call carries one of these.
    dump_timeout: float = Field(3600, gt=0)
    alembic_timeout: float = Field(1800, gt=0)
    health_timeout: float = Field(30, gt=0)

    # Secrets this run obtained after loading (a credentials block's key): redacted like the others.
    _loaded_secrets: tuple[str, ...] = PrivateAttr(default=())

    @field_validator("postgres_host", "postgres_user")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("expected a non-empty value")
        return value




    @field_validator("service")
    @classmethod
    def _service(cls, value: str | None) -> str | None:
        if value is None or not value.strip() or value.strip() == "none":
            return None
        kind, _, name = value.partition(":")
        if kind not in ("compose",) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name):
            raise ValueError("expected compose:<service> (a docker compose service name) or none")
        return value




    @field_validator("window_end")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("expected an ISO 8601 time with a UTC offset, such as 2026-11-29T05:00:00+00:00")
        return value

    @field_validator("s3_bucket", "s3_region", "s3_sse", "s3_kms_key_id", "s3_console_url",
                     "s3_object_lock_days", "window_end", "window_minutes", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("s3_bucket")
    @classmethod
    def _bucket(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", value):
            raise ValueError("expected an S3 bucket name: 3-63 lowercase letters, digits, dots or hyphens")
        return value

    @field_validator("s3_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        if not value or not re.fullmatch(r"[A-Za-z0-9!_.*'()/\-]+", value):
            raise ValueError("expected a key prefix of letters, digits and !_.*'()/- such as pg-cutover")
        return value


    @model_validator(mode="after")
    def _encryption(self) -> "Settings":
        if self.encryption == "age" and not self.encryption_recipients:
            raise ValueError(f"CUTOVER_ENCRYPTION=age needs CUTOVER_ENCRYPTION_RECIPIENTS: expected {AGE_RECIPIENTS_FORM}")
        return self

    @model_validator(mode="after")
    def _links(self) -> "Settings":
        # A combination of settings is one sentence naming them (load_settings passes it on as is).
        if self.s3_links == "presigned" and self.s3_console_url:
            raise ValueError("CUTOVER_S3_CONSOLE_URL is set and CUTOVER_S3_LINKS=presigned: expected one kind of link, "
                             "so unset CUTOVER_S3_CONSOLE_URL or set CUTOVER_S3_LINKS=uri")
        if self.s3_links == "presigned" and not self.client_encrypts and not self.s3_presign_plaintext:
            raise ValueError("CUTOVER_S3_LINKS=presigned would post bearer links to plaintext dumps (nothing is "
                             "encrypted on the client): expected CUTOVER_S3_LINKS=uri, or also "
                             "CUTOVER_S3_PRESIGN_PLAINTEXT=true to allow them")
        return self

    @field_validator("health_paths")
    @classmethod
    def _paths(cls, value: str) -> str:
        paths = [p.strip() for p in value.split(",") if p.strip()]
        if not all(p.startswith("/") for p in paths):
            raise ValueError("expected a comma-separated list of paths each starting with '/', such as /,/docs")
        return ",".join(paths)

    # -- derived values -------------------------------------------------

    @property
    def health_path_list(self) -> list[str]:
        return [p for p in self.health_paths.split(",") if p]

    @property
    def alembic_argv(self) -> list[str]:
        return shlex.split(self.alembic_command)

    @property
    def baseline_bootstrap_argv(self) -> list[str] | None:
        return shlex.split(self.baseline_bootstrap) if self.baseline_bootstrap else None

    @property
    def password(self) -> str | None:
        return self.postgres_password.get_secret_value() if self.postgres_password else None

    @property
    def client_encrypts(self) -> bool:
        """Whether the dump and schema snapshot are encrypted on this machine before they leave (CUTOVER_ENCRYPTION=age)."""
        return self.encryption == "age"

    @property
    def recipient_list(self) -> tuple[str, ...]:
        """The age public keys off-site objects are encrypted to; empty unless CUTOVER_ENCRYPTION=age."""
        if not self.client_encrypts or not self.encryption_recipients:
            return ()
        return tuple(self.encryption_recipients.split(","))

    @property
    def secrets(self) -> tuple[str, ...]:
        # boto3 reads the S3 secret from the environment itself; it is listed only to be redacted.
        return tuple(s for s in (self.password, os.environ.get("AWS_SECRET_ACCESS_KEY"),
                                 os.environ.get("AWS_SESSION_TOKEN"), *self._loaded_secrets) if s)

    def keep_secret(self, *values: str | None) -> None:
        """Redact these too, everywhere this run's `secrets` are read from now on (a block's secret key)."""
        self._loaded_secrets += tuple(v for v in values if v and v not in self._loaded_secrets)

    def service_argv(self, which: str) -> list[str] | None:
        """The cutover's command for status/stop/start: CUTOVER_SERVICE_<WHICH>, else from CUTOVER_SERVICE."""
        return self.service_command(which)[0]

    def rollback_service_argv(self, which: str) -> list[str] | None:
        """The rollback's command: CUTOVER_ROLLBACK_SERVICE_<WHICH>, else the cutover's."""
        return self.service_command(which, rollback=True)[0]

    def service_command(self, which: str, *, rollback: bool = False) -> tuple[list[str] | None, str]:
        """The command and where it came from, for evidence: an operator must see which backend was started."""
        own, cutover = f"CUTOVER_ROLLBACK_SERVICE_{which.upper()}", f"CUTOVER_SERVICE_{which.upper()}"
        rollback_value = getattr(self, f"rollback_service_{which}") if rollback else None
        if rollback_value:
            return shlex.split(rollback_value), f"{own}, the rollback's own"
        # Said out loud: a rollback on the cutover's command may start the release that just failed.
        whose = f"the cutover's, as {own} is not set" if rollback else "the cutover's"
        value = getattr(self, f"service_{which}")
        if value:
            return shlex.split(value), f"{cutover}, {whose}"
        if self.service and self.service.startswith("compose:"):
            verb = {"status": "ps", "stop": "stop", "start": "start"}[which]
            return ["docker", "compose", verb, self.service.split(":", 1)[1]], f"CUTOVER_SERVICE, {whose}"
        return None, f"none of {own + ', ' if rollback else ''}{cutover}, CUTOVER_SERVICE is set"


def env_name(field_name: str) -> str:
    """The environment variable a field is read from: its runbook name, else CUTOVER_ and its name."""
    field = Settings.model_fields.get(field_name)
    alias = field.validation_alias if field else None
    return alias if isinstance(alias, str) else Settings.model_config["env_prefix"] + field_name.upper()


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (and overrides, by env name) into Settings or raise ConfigError."""
    fields = {env_name(name): name for name in Settings.model_fields}
    try:
        return Settings(**{fields.get(key.upper(), key): value for key, value in overrides.items()})
    except ValidationError as exc:
        err = exc.errors()[0]
        message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if not err.get("loc"):  # a combination of settings: its sentence names them
            raise ConfigError(f"{message}.") from None
        loc = str(err["loc"][0])
        name = env_name(loc) if loc in Settings.model_fields else loc.upper()  # else it is the alias
        if err.get("type") == "missing":
            raise ConfigError(f"{name} is not set; expected {_expected(name)}.") from None
        # Never echo a password, nor what was given as the identity's reference (it may be the key itself).
        shown = "" if any(w in name for w in ("PASSWORD", "IDENTITY", "RECIPIENTS")) else f" ({_short(err.get('input'))})"
        raise ConfigError(f"{name} is invalid{shown}: {message}.") from None


def _expected(name: str) -> str:
    return {"POSTGRES_DB": f"the name of the pilot database, {IDENTIFIER_FORM}"}.get(name, "a value")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
