"""S3 credentials from a Prefect block (CUTOVER_S3_CREDENTIALS_BLOCK), as Prefect users keep them.

Read here, in the task layer, and handed to the domain as plain values (`S3Credentials`): the domain
never imports Prefect. Unset, boto3's default chain (environment, profile, instance role) is used.
The block's secret joins the run's redaction list (`Settings.keep_secret`) the moment it is read.
prefect-aws is an optional extra (`pg-cutover[aws]`), imported only when the setting is set.
"""

from __future__ import annotations

from pg_cutover.errors import ConfigError
from pg_cutover.settings import Settings
from pg_cutover.storage.credentials import S3Credentials
from pg_cutover.storage.s3 import S3Store

SETTING = "CUTOVER_S3_CREDENTIALS_BLOCK"
EXPECTED = "expected the name of an AwsCredentials or MinIOCredentials block"


def offsite_store(settings: Settings) -> S3Store | None:
    """The run's S3 store (None without a bucket), with the block's credentials when the setting names one."""
    if not settings.s3_bucket:
        return None
    credentials = None
    if settings.s3_credentials_block:
        credentials = load_credentials(settings.s3_credentials_block)
        settings.keep_secret(*credentials.secrets)
    return S3Store.from_settings(settings, credentials)


def load_credentials(ref: str) -> S3Credentials:
    """`name`, `aws-credentials/name` or `minio-credentials/name`; a bad one is one sentence naming the setting."""
    try:
        from prefect_aws.credentials import AwsCredentials, MinIOCredentials
    except ImportError:
        raise ConfigError(f"{SETTING}={ref!r} needs prefect-aws, which is not installed; "
                          "install pg-cutover[aws] or unset the setting.") from None
    slug, _, name = ref.rpartition("/")
    for cls in (AwsCredentials, MinIOCredentials):
        if slug and slug != cls.get_block_type_slug():
            continue
        try:
            block = cls.load(name, _sync=True)
        except ValueError as exc:
            if str(exc).startswith("Unable to find block document"):
                continue  # not of this type: try the other
            # Not the exception's text: a pydantic error about the document may quote its values.
            raise ConfigError(f"{SETTING}={ref!r} could not be read as a {cls.__name__} block "
                              f"({type(exc).__name__}); {EXPECTED} saved by this prefect-aws.") from None
        except Exception as exc:
            raise ConfigError(f"{SETTING}={ref!r} could not be read from the Prefect API ({type(exc).__name__}); "
                              "check PREFECT_API_URL.") from None
        return _plain(block, f"{SETTING}={ref!r} ({cls.__name__})")
    others = _types_named(name)
    if others:
        raise ConfigError(f"{SETTING}={ref!r} is a {' and a '.join(others)} block; {EXPECTED}.")
    raise ConfigError(f"{SETTING}={ref!r} names no block in the Prefect API; {EXPECTED} (see `prefect block ls`).")


def _plain(block, source: str) -> S3Credentials:
    secret = getattr(block, "aws_secret_access_key", None) or getattr(block, "minio_root_password", None)
    return S3Credentials(
        source=source,
        access_key_id=getattr(block, "aws_access_key_id", None) or getattr(block, "minio_root_user", None),
        secret_access_key=secret.get_secret_value() if secret else None,
        session_token=getattr(block, "aws_session_token", None),
        profile_name=getattr(block, "profile_name", None),
        region=block.region_name,
        endpoint_url=block.aws_client_parameters.endpoint_url,
    )


def _types_named(name: str) -> list[str]:
    """The block types of other documents of that name, to say "a Secret block" rather than "none"."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            docs = client.read_block_documents(include_secrets=False)
    except Exception:
        return []
    return sorted({(d.block_type.name if d.block_type else d.block_type_name) or "other"
                   for d in docs if d.name == name})
