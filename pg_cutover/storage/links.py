"""What a link artifact to an off-site object carries.

Prefect's open-source server has no login, so whoever reads its UI reads every artifact: by default
an artifact names the object (its s3:// URI, or a console URL), which needs the reader's own
credentials. A presigned URL is a bearer link to the data; it is posted only when asked for
(`CUTOVER_S3_LINKS=presigned`), and for an object not encrypted on the client only when that is
allowed too (`CUTOVER_S3_PRESIGN_PLAINTEXT=true`); the artifact then says so and when it expires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pg_cutover.runbook.manifest import StoredObject
    from pg_cutover.storage.s3 import S3Store

LINK_MODES = ("uri", "presigned")


@dataclass(frozen=True)
class LinkPolicy:
    mode: str = "uri"  # one of LINK_MODES
    seconds: int = 3600
    console_url: str | None = None
    presign_plaintext: bool = False

    @classmethod
    def from_settings(cls, settings) -> "LinkPolicy":
        return cls(mode=settings.s3_links, seconds=settings.s3_link_seconds, console_url=settings.s3_console_url,
                   presign_plaintext=settings.s3_presign_plaintext)


@dataclass(frozen=True)
class ObjectLink:
    url: str
    text: str
    description: str
    expires: datetime | None = None  # set only for a bearer (presigned) link


def client_encrypted(obj: "StoredObject") -> bool:
    """Whether the object was encrypted on this machine before it left (CUTOVER_ENCRYPTION=age): its record says so."""
    return bool(getattr(obj, "encryption", None))


def object_link(store: "S3Store", obj: "StoredObject", policy: LinkPolicy, now: datetime | None = None) -> ObjectLink:
    uri = f"s3://{store.bucket}/{obj.key}"
    encrypted = client_encrypted(obj)
    # Settings refuse presigned links to plaintext unless allowed; checked again here, per object,
    # so that a policy built some other way still never posts a bearer link it should not.
    if policy.mode == "presigned" and (encrypted or policy.presign_plaintext):
        expires = (now or datetime.now(timezone.utc)).replace(microsecond=0) + timedelta(seconds=policy.seconds)
        what = ("client-side encrypted" if encrypted
                else "NOT encrypted on the client: the link gives the data itself")
        return ObjectLink(
            url=store.presign(obj.key, policy.seconds), text=uri, expires=expires,
            description=(f"Bearer link: anyone who has this URL can download {uri} until "
                         f"{expires:%Y-%m-%d %H:%M:%S} UTC (presigned, {policy.seconds // 60} min); the object is {what}"),
        )
    if policy.console_url:
        return ObjectLink(url=policy.console_url.format(bucket=store.bucket, key=obj.key), text=uri,
                          description="Console link: opens with the reader's own S3 credentials (not a download link)")
    return ObjectLink(url=uri, text=uri,
                      description="Where the copy is; read it with your own S3 credentials (no download link is posted)")
