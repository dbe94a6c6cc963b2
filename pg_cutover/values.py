"""The value types the settings, a fleet's targets and the pg tools share.

Each is a pydantic `Annotated` type whose error is the one sentence an operator
reads ("expected ..."), so a value is checked by the same rule wherever it is
given: the environment, an inventory file, a flow parameter.
"""

from __future__ import annotations

import re
import shlex
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, HttpUrl, TypeAdapter, ValidationError

# PostgreSQL folds unquoted names and truncates at 63 bytes; a name that needs
# quoting is refused outright rather than quoted into something surprising.
IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")  # \Z: "$" would let a final newline through
MAX_IDENTIFIER_BYTES = 63
REVISION_RE = re.compile(r"^[A-Za-z0-9_.\-]+\Z")
DURATION_RE = re.compile(r"\d+(ms|s|min|h)?")
COMPRESSION_RE = re.compile(r"\d|(gzip|lz4|zstd)(:\d+)?")

IDENTIFIER_FORM = "a plain identifier: ASCII letters, digits and underscores, not starting with a digit, at most 63 characters"
DURATION_FORM = "a PostgreSQL duration such as 10s, 500ms or 30min (0 disables it)"
BLOCK_NAME_RE = re.compile(r"^(?:(aws-credentials|minio-credentials)/)?([a-z0-9][a-z0-9-]*)\Z")  # Prefect's block names
BLOCK_NAME_FORM = ("the name of a Prefect AwsCredentials or MinIOCredentials block (lowercase letters, digits and "
                   "dashes), optionally as aws-credentials/<name> or minio-credentials/<name>")
AGE_RECIPIENTS_FORM = "age public keys (age1...), comma-separated"
IDENTITY_REF_RE = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|secret:[a-z0-9][a-z0-9-]*)\Z")
IDENTITY_REF_FORM = ("env:NAME (an environment variable holding the age identity, AGE-SECRET-KEY-1...) or "
                     "secret:BLOCK (a Prefect Secret block holding it)")
COMPRESSION_FORM = "a gzip level 0-9, or gzip, lz4 or zstd with an optional :level (lz4 and zstd need pg_dump 16+)"


def check_identifier(value: str) -> str:
    if not IDENTIFIER_RE.match(value) or len(value.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(f"expected {IDENTIFIER_FORM}")
    return value


def check_revision(value: str) -> str:
    if not REVISION_RE.match(value):
        raise ValueError("expected an Alembic revision id: letters, digits, '_', '-' or '.'")
    return value


def _duration(value: str) -> str:
    value = value.strip()
    if not DURATION_RE.fullmatch(value):
        raise ValueError(f"expected {DURATION_FORM}")
    return value


def _compression(value: str) -> str:
    value = value.strip()
    if value and not COMPRESSION_RE.fullmatch(value):
        raise ValueError(f"expected {COMPRESSION_FORM}")
    return value


_HTTP_URL = TypeAdapter(HttpUrl)


def http_url(value: str, example: str) -> str:
    """An http(s) URL as pydantic's HttpUrl reads it, kept as given without a trailing slash."""
    try:
        _HTTP_URL.validate_python(value)
    except ValidationError:
        raise ValueError(f"expected an http:// or https:// URL such as {example}") from None
    return value.rstrip("/")


def _block_name(value: str | None) -> str | None:
    if value is not None and not BLOCK_NAME_RE.match(value.strip()):
        raise ValueError(f"expected {BLOCK_NAME_FORM}")
    return None if value is None else value.strip()


def _age_recipients(value: str | None) -> str | None:
    """Each one must parse as an age X25519 recipient; kept as the normalized comma-separated list."""
    if value is None:
        return None
    from pyrage import x25519

    keys = [k.strip() for k in value.split(",") if k.strip()]
    if not keys:
        return None
    for key in keys:
        try:
            x25519.Recipient.from_str(key)
        except Exception:
            shown = key if len(key) <= 20 else key[:17] + "..."
            raise ValueError(f"{shown!r} is not an age public key; expected {AGE_RECIPIENTS_FORM}") from None
    return ",".join(dict.fromkeys(keys))


def _identity_ref(value: str | None) -> str | None:
    if value is not None and not IDENTITY_REF_RE.match(value.strip()):
        # Never echo the value: an operator may have pasted the key itself here.
        raise ValueError(f"expected {IDENTITY_REF_FORM}, never the key itself")
    return None if value is None else value.strip()


def _command(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        argv = shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"expected a command line with balanced quotes ({exc})") from None
    return value if argv else None


def _empty_is_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


Identifier = Annotated[str, AfterValidator(check_identifier)]
Revision = Annotated[str, AfterValidator(check_revision)]
# An empty revision means "not given" (BASELINE_REV= in an env file); blanks are refused like any bad id.
OptionalRevision = Annotated[str | None, BeforeValidator(lambda v: None if v == "" else v),
                             AfterValidator(lambda v: None if v is None else check_revision(v))]
PgDuration = Annotated[str, AfterValidator(_duration)]
DumpCompression = Annotated[str, AfterValidator(_compression)]
CommandLine = Annotated[str | None, AfterValidator(_command)]
# A backend's base URL, or "none"/"" for no backend to check.
HealthUrl = Annotated[str, AfterValidator(
    lambda v: "" if v.strip().lower() in ("", "none") else http_url(v, "http://localhost:8000, or 'none'"))]
EndpointUrl = Annotated[str | None, BeforeValidator(_empty_is_none),
                        AfterValidator(lambda v: None if v is None else http_url(v, "http://localhost:9000"))]
# A Prefect credentials block's name, or unset ("" too) for boto3's default chain.
CredentialsBlockName = Annotated[str | None, BeforeValidator(_empty_is_none), AfterValidator(_block_name)]
# Client-side encryption (CUTOVER_ENCRYPTION=age): the public keys backups are encrypted to, and where
# the identity that decrypts them is found (only a restore needs it).
AgeRecipients = Annotated[str | None, BeforeValidator(_empty_is_none), AfterValidator(_age_recipients)]
IdentityRef = Annotated[str | None, BeforeValidator(_empty_is_none), AfterValidator(_identity_ref)]
