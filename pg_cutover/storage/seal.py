"""The age process of an encrypted upload or restore, run by its path (it imports nothing of pg_cutover).

    python seal.py FILE RECIPIENT...   FILE encrypted to the age RECIPIENTs (public keys) on stdout
    python seal.py --decrypt DEST      stdin decrypted into DEST with the identity in PG_CUTOVER_AGE_IDENTITY

Either way the plaintext's SHA-256 is the last line of standard error once done; a decryption that fails
says only the error's kind there and exits 1. A process of its own because pyrage holds Python's GIL
while it works: in the uploading or downloading process it would stall the transfer's threads, here it
runs on another core beside them. The identity comes through the environment, never argv.
"""

from __future__ import annotations

import hashlib
import os
import sys

IDENTITY_ENV = "PG_CUTOVER_AGE_IDENTITY"


class _Hashed:
    """A file read or written through, its SHA-256 taken on the way (no second pass)."""

    def __init__(self, fh):
        self.fh, self.sha256 = fh, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        chunk = self.fh.read(n)
        self.sha256.update(chunk)
        return chunk

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


def encrypt(source: str, keys: list[str]) -> str:
    import pyrage
    from pyrage import x25519

    recipients = [x25519.Recipient.from_str(k) for k in keys]
    with open(source, "rb", buffering=1024 * 1024) as fh:
        plain = _Hashed(fh)
        pyrage.encrypt_io(plain, sys.stdout.buffer, recipients)
    sys.stdout.buffer.flush()
    return plain.sha256.hexdigest()


def decrypt(dest: str) -> str:
    import pyrage
    from pyrage import x25519

    identities = [x25519.Identity.from_str(os.environ.pop(IDENTITY_ENV, "").strip())]
    with open(dest, "r+b", buffering=1024 * 1024) as fh:  # made 0600 by the caller before this started
        fh.truncate()
        plain = _Hashed(fh)
        pyrage.decrypt_io(sys.stdin.buffer, plain, identities)
    return plain.sha256.hexdigest()


def main(argv: list[str]) -> int:
    if argv[:1] == ["--decrypt"]:
        try:
            digest = decrypt(argv[1])
        except Exception as exc:  # the kind only: never a traceback that could hold what was read
            print(type(exc).__name__, file=sys.stderr)
            return 1
    else:
        digest = encrypt(argv[0], argv[1:])
    print(digest, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
