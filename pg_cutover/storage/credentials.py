"""S3 credentials handed to the store as plain values.

The task layer reads them from a Prefect block (`CUTOVER_S3_CREDENTIALS_BLOCK`); the domain only
builds boto3 sessions from them, so it never imports Prefect. Without them boto3's own default
chain (environment, profile, instance role) is used, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import boto3


@dataclass(frozen=True)
class S3Credentials:
    source: str  # what they came from, for messages: "CUTOVER_S3_CREDENTIALS_BLOCK='name' (AwsCredentials)"
    access_key_id: str | None = None
    # repr=False: a store, a task parameter or a traceback's repr never shows the secret.
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    profile_name: str | None = None
    region: str | None = None
    endpoint_url: str | None = None  # the block's own endpoint, used when CUTOVER_S3_ENDPOINT_URL is unset

    def session(self) -> boto3.session.Session:
        return boto3.session.Session(aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
                                     aws_session_token=self.session_token, profile_name=self.profile_name,
                                     region_name=self.region)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The values to redact from evidence and logs."""
        return tuple(s for s in (self.secret_access_key, self.session_token) if s)
