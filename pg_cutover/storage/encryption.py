"""Client-side encryption of the off-site copy: the age format (age-encryption.org/v1) through pyrage.

No cryptography is built here: pyrage (the Rust `age` crate) reads and writes the files, streaming, so
memory stays bounded whatever the dump's size. The worker that writes backups holds only recipients
(public keys); the identity that decrypts is handed in by the task layer as a plain value, only to restore.

A decryption writes to `<dest>.part` and renames it only once the plaintext's SHA-256 equals the one
recorded: a missing or wrong identity, a tampered object or a digest that differs never leaves a
plaintext file behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pg_cutover.digest import sha256_file
from pg_cutover.errors import CutoverError

SCHEME = "age"
SUFFIX = ".age"
HEADER = b"age-encryption.org/v1"
SETTING = "CUTOVER_ENCRYPTION_IDENTITY"


class DecryptionRefused(CutoverError):
    """The identity is missing or cannot decrypt the object: asking again cannot change that."""


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


def encrypt_file(source: Path, dest: Path, recipients: tuple[str, ...] | list[str]) -> Path:
    """`source` encrypted to every recipient, streamed into `dest` (mode 0600); `dest` removed on failure."""
    import pyrage

    if not recipients:
        raise ValueError("encrypt_file needs at least one recipient")
    dest.unlink(missing_ok=True)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # private before the first byte
    os.close(fd)
    try:
        pyrage.encrypt_file(str(source), str(dest), _recipients(recipients))
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return dest


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
