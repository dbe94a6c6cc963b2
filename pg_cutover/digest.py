"""File digests: the backup's SHA-256, and the checksum S3 reports for a multipart upload."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

READ_CHUNK = 1024 * 1024


@dataclass
class FileDigests:
    sha256: str
    size: int
    composite: str  # S3's checksum of a multipart upload: sha256 over the parts' sha256s, "-<parts>"
    single: str  # base64 sha256 of the whole file, S3's checksum of a single-part upload


def file_digests(path: Path, part_size: int) -> FileDigests:
    """One pass over the file: its SHA-256 and the checksum S3 will report for it."""
    whole = hashlib.sha256()
    part_digests: list[bytes] = []
    part = hashlib.sha256()
    in_part = 0
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            whole.update(chunk)
            size += len(chunk)
            view = memoryview(chunk)
            while view:
                take = min(len(view), part_size - in_part)
                part.update(view[:take])
                in_part += take
                view = view[take:]
                if in_part == part_size:
                    part_digests.append(part.digest())
                    part, in_part = hashlib.sha256(), 0
    if in_part or not part_digests:
        part_digests.append(part.digest())
    composite = base64.b64encode(hashlib.sha256(b"".join(part_digests)).digest()).decode()
    return FileDigests(
        sha256=whole.hexdigest(),
        size=size,
        composite=f"{composite}-{len(part_digests)}",
        single=base64.b64encode(whole.digest()).decode(),
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
