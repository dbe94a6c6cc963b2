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


class Digester:
    """The digests of bytes seen in order (a file read, a stream written): what file_digests returns."""

    def __init__(self, part_size: int):
        self.part_size = part_size
        self.whole = hashlib.sha256()
        self.part = hashlib.sha256()
        self.part_digests: list[bytes] = []
        self.in_part = 0
        self.size = 0

    def update(self, chunk: bytes | memoryview) -> None:
        self.whole.update(chunk)
        self.size += len(chunk)
        view = memoryview(chunk)
        while view:
            take = min(len(view), self.part_size - self.in_part)
            self.part.update(view[:take])
            self.in_part += take
            view = view[take:]
            if self.in_part == self.part_size:
                self.part_digests.append(self.part.digest())
                self.part, self.in_part = hashlib.sha256(), 0

    def digests(self) -> FileDigests:
        parts = self.part_digests + ([self.part.digest()] if self.in_part or not self.part_digests else [])
        composite = base64.b64encode(hashlib.sha256(b"".join(parts)).digest()).decode()
        return FileDigests(
            sha256=self.whole.hexdigest(),
            size=self.size,
            composite=f"{composite}-{len(parts)}",
            single=base64.b64encode(self.whole.digest()).decode(),
        )


def file_digests(path: Path, part_size: int) -> FileDigests:
    """One pass over the file: its SHA-256 and the checksum S3 will report for it."""
    digester = Digester(part_size)
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            digester.update(chunk)
    return digester.digests()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
