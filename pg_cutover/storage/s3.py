"""Where backups live: the local run directory and an S3-compatible mirror.

The S3 side streams from disk (boto3's managed multipart transfer with a fixed
part size and concurrency, so memory stays bounded whatever the dump size),
sends a SHA-256 with every part so the server checks what it received, and
proves the stored object afterwards: size, the server's checksum compared with
one computed locally over the same parts, and the full-file SHA-256 kept as
object metadata for servers without checksum support.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from pg_cutover.digest import FileDigests, file_digests, sha256_file
from pg_cutover.errors import ConfigError, CutoverError
from pg_cutover.runbook.manifest import Manifest, StoredObject
from pg_cutover.storage import encryption
from pg_cutover.storage.credentials import S3Credentials
from pg_cutover.throughput import Count, Ticker

MiB = 1024 * 1024
SHA_METADATA = "sha256"


class StorageError(CutoverError):
    """The off-site copy cannot be written, read or trusted."""


class BackupUntrusted(StorageError):
    """No copy of the backup matches its recorded SHA-256: asking again cannot change that."""


@dataclass
class S3Store:
    bucket: str
    prefix: str = "pg-cutover"
    endpoint_url: str | None = None
    region: str | None = None
    sse: str | None = None
    kms_key_id: str | None = None
    checksum: str = "sha256"
    object_lock_days: int | None = None
    object_lock_mode: str = "GOVERNANCE"
    max_attempts: int = 5
    part_size: int = 16 * MiB
    concurrency: int = 4
    # None: boto3's default chain (environment, profile, instance role).
    credentials: S3Credentials | None = field(default=None, repr=False)
    # age public keys (CUTOVER_ENCRYPTION=age): backups are encrypted to them before they leave (upload_backup).
    recipients: tuple[str, ...] = ()
    _client: Any = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings, credentials: S3Credentials | None = None) -> "S3Store | None":
        """`credentials`: what the task layer read from CUTOVER_S3_CREDENTIALS_BLOCK (pg_cutover.tasks.s3_credentials)."""
        if not settings.s3_bucket:
            return None
        if settings.s3_credentials_block and credentials is None:
            # Never fall back to the default chain: it may hold other credentials than the ones asked for.
            raise ConfigError(f"CUTOVER_S3_CREDENTIALS_BLOCK={settings.s3_credentials_block!r} is set, but this command "
                              "does not read Prefect blocks; run it as a Prefect flow, or unset the setting to use "
                              "boto3's default credentials.")
        return cls(
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url or (credentials.endpoint_url if credentials else None),
            region=settings.s3_region or (credentials.region if credentials else None),
            credentials=credentials,
            sse=settings.s3_sse,
            kms_key_id=settings.s3_kms_key_id,
            checksum=settings.s3_checksum,
            object_lock_days=settings.s3_object_lock_days,
            object_lock_mode=settings.s3_object_lock_mode,
            max_attempts=settings.s3_max_attempts,
            part_size=settings.s3_part_size_mb * MiB,
            recipients=settings.recipient_list,
        )

    # -- plumbing ----------------------------------------------------------

    @property
    def client(self):
        if self._client is None:
            config = Config(
                # Default CRC headers of boto3 >= 1.36 are refused by some S3-compatible
                # servers; checksums are sent explicitly below instead.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                # "standard" retries throttling, 5xx and connection errors, with backoff, and nothing else.
                retries={"mode": "standard", "max_attempts": self.max_attempts},
                connect_timeout=5,
                read_timeout=60,
                s3={"addressing_style": "path"} if self.endpoint_url else None,
            )
            session = self.credentials.session() if self.credentials else boto3.session.Session()
            self._client = session.client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region or session.region_name or "us-east-1",
                config=config,
            )
        return self._client

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    def _transfer(self, streaming: bool = False) -> TransferConfig:
        config = TransferConfig(
            multipart_threshold=self.part_size,
            multipart_chunksize=self.part_size,
            max_concurrency=self.concurrency,
            use_threads=True,
        )
        if streaming:
            # A stream's parts wait in memory until sent (s3transfer's setting, which boto3 does not take
            # as an argument): no more of them than can be in flight, so memory stays bounded.
            config.max_in_memory_upload_chunks = self.concurrency + 1
        return config

    def explain(self, exc: Exception, doing: str) -> StorageError:
        """One sentence naming the setting that is probably wrong; never a credential."""
        if isinstance(exc, StorageError):
            return exc
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            if self.credentials:
                return StorageError(f"{doing}: {self.credentials.source} holds no usable S3 credentials; expected an access key id and secret, or a profile.")
            return StorageError(f"{doing}: no S3 credentials were found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role, or CUTOVER_S3_CREDENTIALS_BLOCK.")
        if isinstance(exc, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
                            botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectionClosedError)):
            return StorageError(f"{doing}: CUTOVER_S3_ENDPOINT_URL={self.endpoint_url or 'AWS default'} does not answer ({type(exc).__name__}).")
        if isinstance(exc, botocore.exceptions.ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchBucket",) or (code in ("404", "NotFound") and "bucket" in doing):
                return StorageError(f"{doing}: CUTOVER_S3_BUCKET={self.bucket!r} does not exist at {self.endpoint_url or 'AWS'}.")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "ExpiredToken") or status == 403:
                which = self.credentials.source if self.credentials else "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile"
                return StorageError(f"{doing}: the S3 credentials were refused for bucket {self.bucket!r} ({code or status}); check {which}.")
            return StorageError(f"{doing}: S3 answered {code or status}: {exc.response.get('Error', {}).get('Message', '')}".rstrip(": "))
        if isinstance(exc, botocore.exceptions.BotoCoreError):
            return StorageError(f"{doing}: {type(exc).__name__}: {exc}")
        return StorageError(f"{doing}: {type(exc).__name__}: {exc}")

    def run_prefix(self, database: str, timestamp: str) -> str:
        return f"{self.prefix}/{database}/{timestamp}/"

    # -- checks --------------------------------------------------------------

    def check_bucket(self) -> None:
        """Reachable, credentials accepted, bucket present, object lock available when asked for."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise self.explain(exc, "checking the bucket") from None
        if self.object_lock_days:
            try:
                conf = self.client.get_object_lock_configuration(Bucket=self.bucket)
                enabled = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
            except botocore.exceptions.ClientError:
                enabled = False
            except Exception as exc:
                raise self.explain(exc, "checking object lock") from None
            if not enabled:
                raise StorageError(
                    f"CUTOVER_S3_OBJECT_LOCK_DAYS={self.object_lock_days} is set but bucket {self.bucket!r} has no "
                    "object lock enabled; create the bucket with object lock or unset the setting."
                )

    # -- write ---------------------------------------------------------------

    def _extra_args(self, sha256: str | None) -> dict[str, Any]:
        """`sha256`: the object's, as metadata; None for a stream whose digest is known only at its end."""
        extra: dict[str, Any] = {"Metadata": {SHA_METADATA: sha256} if sha256 else {}}
        if self.checksum == "sha256":
            extra["ChecksumAlgorithm"] = "SHA256"
        if self.sse:
            extra["ServerSideEncryption"] = self.sse
            if self.sse == "aws:kms" and self.kms_key_id:
                extra["SSEKMSKeyId"] = self.kms_key_id
        if self.object_lock_days:
            extra["ObjectLockMode"] = self.object_lock_mode
            extra["ObjectLockRetainUntilDate"] = datetime.now(timezone.utc) + timedelta(days=self.object_lock_days)
        return extra

    def upload_file(self, path: Path, key: str, sha256: str, *, step: str = "upload") -> StoredObject:
        """Upload the file whose SHA-256 is known, then prove the stored object is that file."""
        sent = _Sent(path.stat().st_size, f"s3://{self.bucket}/{key}")
        # The local digests are computed while the upload runs (hashlib releases the GIL),
        # so proving the copy costs no extra wall time.
        with ThreadPoolExecutor(max_workers=1) as pool, Ticker(step, "uploaded", sent.count):
            digesting = pool.submit(file_digests, path, self.part_size)
            try:
                self.client.upload_file(str(path), self.bucket, key, ExtraArgs=self._extra_args(sha256),
                                        Config=self._transfer(), Callback=sent.add)
            except Exception as exc:
                raise self.explain(getattr(exc, "last_exception", None) or exc, f"uploading {key}") from None
            digests = digesting.result()
        if digests.sha256 != sha256:
            raise StorageError(f"{path} changed on disk during its upload (SHA-256 {digests.sha256} != {sha256}).")
        return self.verify(key, digests)

    def upload_backup(self, path: Path, key: str, sha256: str, *, step: str = "upload") -> StoredObject:
        """A backup file (dump, schema snapshot): as it is, or encrypted to `recipients` under `key` + ".age".

        Encrypted, the ciphertext is streamed from an encrypting process into the multipart upload (never
        written to disk), its digests taken on the way, and the stored object proven like any file: size
        and the server's checksum over the parts. The plaintext's SHA-256 is proven as it is read."""
        if not self.recipients:
            return self.upload_file(path, key, sha256, step=step)
        key += encryption.SUFFIX
        size = encryption.sealed_size(path.stat().st_size, len(self.recipients))
        sent = _Sent(size, f"s3://{self.bucket}/{key}")
        with encryption.Sealed(path, self.recipients, sha256, self.part_size) as sealed, \
                Ticker(step, "uploaded", sent.count):
            try:
                self.client.upload_fileobj(sealed, self.bucket, key, ExtraArgs=self._extra_args(None),
                                           Config=self._transfer(streaming=True), Callback=sent.add)
            except Exception as exc:
                if sealed.failure is not None:
                    raise sealed.failure from None
                raise self.explain(getattr(exc, "last_exception", None) or exc, f"uploading {key}") from None
            digests = sealed.digests()
        obj = self.verify(key, digests, streamed=True)
        return obj.model_copy(update={"encryption": encryption.SCHEME, "plaintext_sha256": sha256,
                                      "recipients": list(self.recipients)})

    def put_text(self, key: str, text: str) -> StoredObject:
        """Small documents (manifest, report): one PUT whose SHA-256 the server checks."""
        body = text.encode()
        digest = hashlib.sha256(body)
        extra = self._extra_args(digest.hexdigest())
        extra.pop("ChecksumAlgorithm", None)
        if self.checksum == "sha256":
            extra["ChecksumSHA256"] = base64.b64encode(digest.digest()).decode()
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="text/plain; charset=utf-8", **extra)
        except Exception as exc:
            raise self.explain(exc, f"writing {key}") from None
        return StoredObject(key=key, size_bytes=len(body), sha256=digest.hexdigest(),
                            verified_by="server checked the SHA-256 sent with the PUT" if self.checksum == "sha256" else "not verified")

    def verify(self, key: str, digests: FileDigests, *, streamed: bool = False) -> StoredObject:
        """The stored object is the file: size, and the server's own checksum where it keeps one.

        `streamed`: the object was a stream (an encrypted backup), so it carries no SHA-256 metadata."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except Exception as exc:
            raise self.explain(exc, f"checking {key}") from None
        size = int(head.get("ContentLength", -1))
        if size != digests.size:
            raise StorageError(f"s3://{self.bucket}/{key} holds {size} bytes, the local file {digests.size}: the copy is not the backup.")
        meta = head.get("Metadata", {}).get(SHA_METADATA)
        if not streamed and meta != digests.sha256:  # a stream's digest is known only after its metadata was sent
            raise StorageError(f"s3://{self.bucket}/{key} carries SHA-256 {meta}, the local file {digests.sha256}: the copy is not the backup.")
        server = head.get("ChecksumSHA256")
        if server:
            # AWS appends "-<parts>" to a multipart checksum; some compatible servers do not.
            if server.split("-", 1)[0] not in (digests.composite.split("-", 1)[0], digests.single):
                raise StorageError(f"s3://{self.bucket}/{key}: the server's checksum {server} does not match the local file's ({digests.composite}).")
            how = "size + server SHA-256 checksum matched the local parts"
        else:
            how = ("size only (server keeps no checksum; the restore proves the recorded SHA-256)" if streamed
                   else "size + SHA-256 metadata (server keeps no checksum)")
        return StoredObject(key=key, size_bytes=size, sha256=digests.sha256, server_checksum=server, verified_by=how)

    # -- read ----------------------------------------------------------------

    def download(self, key: str, dest: Path, expected_sha256: str) -> Path:
        """Stream to dest and prove its SHA-256; a copy that does not match is deleted, never used."""
        tmp = dest.with_name(dest.name + ".part")
        try:
            self.client.download_file(self.bucket, key, str(tmp), Config=self._transfer())
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise self.explain(getattr(exc, "last_exception", None) or exc, f"downloading {key}") from None
        os.chmod(tmp, 0o600)
        actual = sha256_file(tmp)
        if actual != expected_sha256:
            tmp.unlink(missing_ok=True)
            raise BackupUntrusted(
                f"s3://{self.bucket}/{key} does not match the backup's SHA-256 ({actual} != {expected_sha256}): "
                "the object was corrupted or replaced; refusing to restore from it."
            )
        os.replace(tmp, dest)
        return dest

    def get_text(self, key: str) -> str | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode()
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self.explain(exc, f"reading {key}") from None
        except Exception as exc:
            raise self.explain(exc, f"reading {key}") from None

    def list_runs(self, database: str) -> list[str]:
        """Timestamps of the runs stored for a database, oldest first."""
        prefix = f"{self.prefix}/{database}/"
        runs: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                runs += [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
        except Exception as exc:
            raise self.explain(exc, f"listing {prefix}") from None
        return sorted(runs)

    def delete_prefix(self, prefix: str) -> int:
        deleted = 0
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                    deleted += len(keys)
        except Exception as exc:
            raise self.explain(exc, f"deleting {prefix}") from None
        return deleted

    def presign(self, key: str, seconds: int) -> str:
        """A bearer download link: only through pg_cutover.storage.links, which decides whether one may be made."""
        return self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": key},
                                                  ExpiresIn=seconds)


class _Sent:
    """Bytes boto3 has sent, from its transfer callback (called from each of its upload threads)."""

    def __init__(self, total: int, where: str):
        self.total, self.where = total, where
        self.bytes = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.bytes += n  # negative when boto3 rewinds a part to send it again

    def count(self) -> Count:
        return Count(done=max(0, self.bytes), total=self.total, note=self.where)


def verified_dump(manifest: Manifest, store: "S3Store | None", work_dir: Path,
                  identity: "encryption.RestoreIdentity | None" = None) -> tuple[Path, str]:
    """A local dump whose SHA-256 equals the manifest's: the local file, else a download from S3.

    An off-site copy encrypted on the client is downloaded, its ciphertext proven against the manifest,
    decrypted with `identity` (resolved by the task layer; see pg_cutover.storage.encryption) and its
    plaintext proven again; without a usable identity it is refused before anything is downloaded.
    Returns the path and where it came from; raises StorageError (or encryption.DecryptionRefused)
    when neither can be trusted, leaving no downloaded or decrypted file behind.
    """
    if manifest.backup is None:
        raise BackupUntrusted(f"The manifest of run {manifest.run_id} records no backup.")
    expected = manifest.backup.sha256
    local = Path(manifest.backup.path)
    reasons = []
    if local.is_file():
        actual = sha256_file(local)
        if actual == expected:
            return local, "local"
        reasons.append(f"the local file {local} has SHA-256 {actual}, not {expected}")
    else:
        reasons.append(f"the local file {local} is missing")
    offsite = manifest.offsite.object_for(local.name) if manifest.offsite else None
    if offsite is None:
        raise BackupUntrusted(f"No verified backup for {manifest.database}: {reasons[0]} and no off-site copy is recorded.")
    if store is None or store.bucket != manifest.offsite.bucket:
        raise BackupUntrusted(
            f"No verified backup for {manifest.database}: {reasons[0]} and the off-site copy is in bucket "
            f"{manifest.offsite.bucket!r}; set CUTOVER_S3_BUCKET to it."
        )
    where = f"s3://{store.bucket}/{offsite.key}"
    if offsite.encrypted and offsite.plaintext_sha256 not in (None, expected):
        raise BackupUntrusted(f"The manifest of run {manifest.run_id} records plaintext SHA-256 "
                              f"{offsite.plaintext_sha256} for {where}, but {expected} for the backup.")
    if offsite.encrypted:
        encryption.check_identity(identity, where, offsite.recipients)  # before a byte is downloaded
    work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    dest = work_dir / local.name
    if not offsite.encrypted:
        store.download(offsite.key, dest, expected)
        return dest, where
    sealed = work_dir / (local.name + encryption.SUFFIX)
    try:
        store.download(offsite.key, sealed, offsite.sha256)  # the ciphertext the upload proved
        encryption.decrypt_file(sealed, dest, identity, expected, where, offsite.recipients)
    finally:
        sealed.unlink(missing_ok=True)
    return dest, where
