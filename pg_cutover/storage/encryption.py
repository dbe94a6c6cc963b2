"""Client-side encryption of the off-site copy: the age format (age-encryption.org/v1) through pyrage.

No cryptography is built here: pyrage (the Rust `age` crate) reads and writes the files, streaming, so
memory stays bounded whatever the dump's size. The worker that writes backups holds only recipients
(public keys); the identity that decrypts is handed in by the task layer as a plain value, only to restore.

On the upload path nothing encrypted touches the disk: `Sealed` is the ciphertext as it is made, by a
process encrypting into a pipe that the upload reads, so encryption runs beside the upload rather than
before it, and the plaintext and ciphertext digests are taken on the way through (no extra pass).

A decryption writes to `<dest>.part` and renames it only once the plaintext's SHA-256 equals the one
recorded: a missing or wrong identity, a tampered object or a digest that differs never leaves a
plaintext file behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pg_cutover.digest import Digester, FileDigests, sha256_file
from pg_cutover.errors import CutoverError

SCHEME = "age"
SUFFIX = ".age"
HEADER = b"age-encryption.org/v1"
SETTING = "CUTOVER_ENCRYPTION_IDENTITY"


class DecryptionRefused(CutoverError):
    """The identity is missing or cannot decrypt the object: asking again cannot change that."""


class EncryptionFailed(CutoverError):
    """The ciphertext could not be made whole, or not from the file recorded: nothing may be stored."""


@dataclass(frozen=True)
class RestoreIdentity:
    """The identity a restore decrypts with, resolved by the task layer; `problem` says why there is none."""

    secret: str | None = field(default=None, repr=False)
    problem: str | None = None

    def __repr__(self) -> str:  # never the key, wherever this object is logged or passed
        return f"RestoreIdentity({'set' if self.secret else 'unset'})"


def _recipients(keys: tuple[str, ...] | list[str]):
    from pyrage import x25519

    return [x25519.Recipient.from_str(k) for k in keys]


# age's file: a header (version line, one 98-byte X25519 stanza per recipient, a random "grease" stanza
# of varying size, MAC line), a 16-byte nonce, then the plaintext in 64 KiB chunks each followed by a
# 16-byte tag (at least one chunk).
_CHUNK, _TAG, _NONCE, _HEADER, _STANZA = 64 * 1024, 16, 16, 70, 98


def sealed_size(plaintext_bytes: int, recipients: int) -> int:
    """About how many bytes the ciphertext holds (all but the grease stanza): the upload's progress total."""
    chunks = max(1, -(-plaintext_bytes // _CHUNK))
    return _HEADER + _STANZA * recipients + _NONCE + plaintext_bytes + chunks * _TAG


class Sealed:
    """`source` encrypted to `recipients`, read as it is made (a readable stream for boto3's upload_fileobj).

    The encryption runs in a process of its own (seal.py, beside this module) writing into a pipe; `read`
    returns what it wrote. Reading to the end proves the encryption finished and that the plaintext it
    read has `expected_sha256`; otherwise the last read raises EncryptionFailed, so an upload reading this
    aborts instead of storing a short or wrong object. `digests()` is the ciphertext's (SHA-256, size,
    S3's multipart checksum) once read to the end."""

    PIPE_BYTES = 1024 * 1024

    def __init__(self, source: Path, recipients: tuple[str, ...] | list[str], expected_sha256: str, part_size: int):
        if not recipients:
            raise ValueError("Sealed needs at least one recipient")
        _recipients(recipients)  # a bad key fails here, in the caller, before any process starts
        self.source, self.expected_sha256 = source, expected_sha256
        self.failure: EncryptionFailed | None = None
        self._digester = Digester(part_size)
        # Recipients are public keys: nothing secret is on this command line.
        self._proc = subprocess.Popen([sys.executable, _SEAL, str(source), *recipients],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      bufsize=self.PIPE_BYTES)
        _widen(self._proc.stdout.fileno(), self.PIPE_BYTES)

    def read(self, n: int = -1) -> bytes:
        chunk = self._proc.stdout.read(n)
        if chunk:
            self._digester.update(chunk)
            return chunk
        said = self._proc.stderr.read().decode(errors="replace").strip().splitlines()
        code = self._proc.wait()
        plaintext = said[-1] if said else ""  # the plaintext's SHA-256, or the error's last line
        if code != 0:
            self.failure = EncryptionFailed(f"encrypting {self.source} failed (exit {code}: "
                                            f"{plaintext or 'no message'}); nothing was stored.")
        elif plaintext != self.expected_sha256:
            self.failure = EncryptionFailed(f"{self.source} changed on disk while it was encrypted (SHA-256 "
                                            f"{plaintext}, recorded {self.expected_sha256}); nothing was stored.")
        if self.failure is not None:
            raise self.failure
        return b""

    def digests(self) -> FileDigests:
        return self._digester.digests()

    def close(self) -> None:
        """Stop: an encryption still running is ended, its pipes closed."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._proc.stdout.close()
        self._proc.stderr.close()

    def __enter__(self) -> "Sealed":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# Run by path: it imports nothing of this package, so it starts in the time Python and pyrage take.
_SEAL = str(Path(__file__).with_name("seal.py"))


def _widen(fd: int, size: int) -> None:
    """A bigger pipe means fewer wake-ups between the encrypting process and the upload (Linux only)."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except OSError:
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default pipe works, only slower


def public_key_of(identity: str) -> str | None:
    """The recipient an identity decrypts for; None when it is not an age X25519 identity."""
    from pyrage import x25519

    try:
        return str(x25519.Identity.from_str(identity.strip()).to_public())
    except Exception:
        return None


def decrypt_file(source: Path, dest: Path, identity: RestoreIdentity | None, expected_sha256: str,
                 what: str, recipients: tuple[str, ...] | list[str] = ()) -> Path:
    """`source` decrypted into `dest` whose SHA-256 must be `expected_sha256`; else nothing is left at `dest`.

    `what` names the object in the sentences; `recipients`, when recorded, lets a wrong identity be refused
    before anything is decrypted."""
    secret = _usable(identity, what, recipients)
    import pyrage
    from pyrage import x25519

    part = dest.with_name(dest.name + ".part")
    part.unlink(missing_ok=True)
    try:
        pyrage.decrypt_file(str(source), str(part), [x25519.Identity.from_str(secret)])
    except Exception as exc:
        part.unlink(missing_ok=True)
        raise DecryptionRefused(
            f"{SETTING} does not decrypt {what} ({type(exc).__name__}): expected the age identity of one of the "
            "recipients it was encrypted to, or the object was altered; nothing was restored.") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.chmod(part, 0o600)
    actual = sha256_file(part)
    if actual != expected_sha256:
        part.unlink(missing_ok=True)
        raise DecryptionRefused(f"{what} decrypts to SHA-256 {actual}, not the backup's {expected_sha256}: "
                                "refusing to restore from it.")
    os.replace(part, dest)
    return dest


def check_identity(identity: RestoreIdentity | None, what: str, recipients: tuple[str, ...] | list[str] = ()) -> None:
    """Refuse, in one sentence naming CUTOVER_ENCRYPTION_IDENTITY, an identity that cannot decrypt `what`."""
    _usable(identity, what, recipients)


def _usable(identity: RestoreIdentity | None, what: str, recipients) -> str:
    if identity is None or not identity.secret:
        problem = (identity.problem if identity and identity.problem else
                   f"{SETTING} is not set and {what} is encrypted on the client; expected env:NAME or secret:BLOCK "
                   "naming the age identity of one of its recipients")
        raise DecryptionRefused(f"{problem.rstrip('.')}; nothing was restored.")
    public = public_key_of(identity.secret)
    if public is None:
        raise DecryptionRefused(f"{SETTING} does not hold an age identity; expected AGE-SECRET-KEY-1... "
                                f"to decrypt {what}; nothing was restored.")
    if recipients and public not in recipients:
        raise DecryptionRefused(f"{SETTING} is the identity of {public}, but {what} was encrypted only to "
                                f"{', '.join(recipients)}; expected the identity of one of them, nothing was restored.")
    return identity.secret.strip()
