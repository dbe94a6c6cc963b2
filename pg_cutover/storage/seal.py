"""The encrypting process of an encrypted upload: `python seal.py FILE RECIPIENT...`.

Writes FILE encrypted to the age RECIPIENTs (public keys) on standard output and, once done, the
plaintext's SHA-256 as the last line of standard error. A process of its own because pyrage holds
Python's GIL while it encrypts: in the uploading process it would stall the upload's threads, here it
runs on another core beside them. It imports nothing of pg_cutover, so it is run by its path.
"""

from __future__ import annotations

import hashlib
import sys


class _Hashed:
    """The file as the encryption reads it, its SHA-256 taken on the way (no second pass)."""

    def __init__(self, fh):
        self.fh, self.sha256 = fh, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        chunk = self.fh.read(n)
        self.sha256.update(chunk)
        return chunk


def main(argv: list[str]) -> int:
    import pyrage
    from pyrage import x25519

    source, keys = argv[0], argv[1:]
    recipients = [x25519.Recipient.from_str(k) for k in keys]
    with open(source, "rb", buffering=1024 * 1024) as fh:
        plain = _Hashed(fh)
        pyrage.encrypt_io(plain, sys.stdout.buffer, recipients)
    sys.stdout.buffer.flush()
    print(plain.sha256.hexdigest(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
