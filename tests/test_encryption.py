"""Issue 22, item 1: client-side encryption of the off-site copy (CUTOVER_ENCRYPTION=age).

A real moto S3 server, real PostgreSQL and the test Prefect API: the bucket holds only age ciphertext of the
dump and the schema snapshot (no PGDMP header, no table name), the manifest both SHA-256s, and a rollback
restores from those objects with the identity, or refuses in one sentence without it, touching nothing.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import boto3
import pytest
from pyrage import x25519

from pg_cutover.errors import ConfigError
from pg_cutover.runbook.manifest import StoredObject
from pg_cutover.settings import load_settings
from tests.run_evidence import everything_shown

AGE_HEADER = b"age-encryption.org/v1"
PILOT_TABLES = (b"breweries", b"beers", b"reviews")
IDENTITY_VAR = "PG_CUTOVER_TEST_AGE_IDENTITY"


def _keys() -> tuple[str, str]:
    identity = x25519.Identity.generate()
    return str(identity), str(identity.to_public())


@pytest.fixture
def encrypted_env(offsite_env):
    """A worker that encrypts to a fresh recipient; the identity is in no variable until a test puts it there."""
    secret, public = _keys()
    offsite_env.setenv("CUTOVER_ENCRYPTION", "age")
    offsite_env.setenv("CUTOVER_ENCRYPTION_RECIPIENTS", public)
    offsite_env.delenv("CUTOVER_ENCRYPTION_IDENTITY", raising=False)
    offsite_env.delenv(IDENTITY_VAR, raising=False)
    offsite_env.secret, offsite_env.public = secret, public
    return offsite_env


def _bucket_objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def _no_plaintext_left(run_dir: Path) -> list[str]:
    """Files a restore may have left in the run's restore directory: a download, a ciphertext, a partial plaintext."""
    restore = run_dir / "restore"
    return sorted(p.name for p in restore.rglob("*")) if restore.exists() else []


# -- settings ------------------------------------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize("recipients, sentence", [
    ("age1notakey", "CUTOVER_ENCRYPTION_RECIPIENTS is invalid: 'age1notakey' is not an age public key; expected "
                    "age public keys (age1...), comma-separated."),
    ("ssh-ed25519 AAAAC3Nz", "CUTOVER_ENCRYPTION_RECIPIENTS is invalid: 'ssh-ed25519 AAAAC3Nz' is not an age public "
                             "key; expected age public keys (age1...), comma-separated."),
    ("", "CUTOVER_ENCRYPTION=age needs CUTOVER_ENCRYPTION_RECIPIENTS: expected age public keys (age1...), "
         "comma-separated."),
])
def test_a_recipient_that_is_not_an_age_public_key_is_one_sentence_at_load(recipients, sentence):
    with pytest.raises(ConfigError) as refused:
        load_settings(POSTGRES_DB="pilot", CUTOVER_ENCRYPTION="age", CUTOVER_ENCRYPTION_RECIPIENTS=recipients)
    assert str(refused.value) == sentence


@pytest.mark.unit
def test_encryption_settings_default_off_and_the_identity_is_never_echoed():
    secret, public = _keys()
    default = load_settings(POSTGRES_DB="pilot")
    assert (default.encryption, default.client_encrypts, default.recipient_list) == ("off", False, ())
    other = _keys()[1]
    on = load_settings(POSTGRES_DB="pilot", CUTOVER_ENCRYPTION="age", CUTOVER_ENCRYPTION_RECIPIENTS=f" {public} ,{other}",
                       CUTOVER_ENCRYPTION_IDENTITY="env:AGE_KEY", CUTOVER_S3_LINKS="presigned")
    assert on.recipient_list == (public, other) and on.client_encrypts and on.s3_links == "presigned"
    with pytest.raises(ConfigError) as refused:  # the key pasted where its reference belongs
        load_settings(POSTGRES_DB="pilot", CUTOVER_ENCRYPTION_IDENTITY=secret)
    assert str(refused.value).startswith("CUTOVER_ENCRYPTION_IDENTITY is invalid: expected env:NAME")
    assert secret not in str(refused.value)


@pytest.mark.unit
def test_an_offsite_record_written_before_encryption_still_loads():
    old = StoredObject.model_validate({"key": "p/db/ts/db.dump", "size_bytes": 3, "sha256": "ab",
                                       "server_checksum": None, "verified_by": "x"})
    assert (old.encrypted, old.plaintext_sha256, old.recipients) == (False, None, [])


# -- a cutover, a rollback ------------------------------------------------------------------------------

def _cutover(**kw):
    from pg_cutover.flows.cutover import cutover
    from pg_cutover.runbook.checklist import Checklist

    return cutover(approved_by="alice", checklist=Checklist.all_confirmed(), return_state=True, **kw)


def test_an_encrypted_cutover_leaves_nothing_readable_in_the_bucket(prefect_api, pilot, encrypted_env, s3_endpoint,
                                                                    bucket):
    from pg_cutover.runbook.manifest import load_manifest
    from pg_cutover.runbook.report import human_size

    encrypted_env.setenv("CUTOVER_S3_LINKS", "presigned")  # allowed without CUTOVER_S3_PRESIGN_PLAINTEXT now

    state = _cutover()

    assert state.is_completed(), state.message
    manifest_path = Path(state.result()["manifest"])
    m = load_manifest(manifest_path)
    stored = _bucket_objects(s3_endpoint, bucket)
    dump, schema = Path(m.backup.path), Path(m.backup.schema_path)
    sealed = {o.key: o for o in m.offsite.objects}
    assert set(sealed) == {m.offsite.prefix + dump.name + ".age", m.offsite.prefix + schema.name + ".age"}
    assert m.offsite.object_for(dump.name).key == m.offsite.prefix + dump.name + ".age"
    for key, obj in sealed.items():
        body = stored[key]
        assert body.startswith(AGE_HEADER), key
        assert b"PGDMP" not in body and not [t for t in PILOT_TABLES if t in body], key
        # What the upload proves (the ciphertext) and what a restore proves (the plaintext), both recorded.
        assert obj.encryption == "age" and obj.recipients == [encrypted_env.public]
        assert obj.sha256 == hashlib.sha256(body).hexdigest() and obj.size_bytes == len(body)
        assert obj.server_checksum and "server SHA-256" in obj.verified_by
    assert sealed[m.offsite.prefix + dump.name + ".age"].plaintext_sha256 == m.backup.sha256
    assert sealed[m.offsite.prefix + schema.name + ".age"].plaintext_sha256 == hashlib.sha256(schema.read_bytes()).hexdigest()
    # The local dump the scratch restore read stays plaintext in its 0700 directory; no ciphertext is left.
    assert dump.read_bytes().startswith(b"PGDMP") and (dump.parent.stat().st_mode & 0o777) == 0o700
    assert not list(dump.parent.rglob("*.age*"))
    # The manifest and report stay readable; the report names both digests of the dump.
    assert stored[m.offsite.prefix + "manifest.json"].lstrip().startswith(b"{")
    dump_obj = m.offsite.object_for(dump.name)
    assert (f"| `{dump_obj.key}` | {human_size(dump_obj.size_bytes)} | `{dump_obj.sha256}` | age, to 1 recipient(s) | "
            f"`{m.backup.sha256}` | {dump_obj.verified_by} |") in stored[m.offsite.prefix + "report.md"].decode()
    shown = everything_shown(state.state_details.flow_run_id)
    [link] = [t for t in shown if t.startswith(f"artifact {pilot.replace('_', '-')}-offsite-dump ")]
    assert "Bearer link" in link and "the object is client-side encrypted" in link


def _failed_cutover(conn, pilot):
    """A cutover whose production stamp fails (production read-only), its local dump then damaged: a rollback
    must restore from the encrypted S3 copy."""
    from pg_cutover.pg import db
    from pg_cutover.runbook.manifest import load_manifest

    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{pilot}" SET default_transaction_read_only = on')
    failed = _cutover(rollback_on_failure=False)
    assert failed.is_failed()
    manifest_path = next(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("manifest.json"))
    m = load_manifest(manifest_path)
    assert m.offsite.object_for(Path(m.backup.path).name).encrypted
    local_dump = Path(m.backup.path)
    local_dump.write_bytes(local_dump.read_bytes()[:100])  # the local copy can no longer be trusted
    return failed, manifest_path


def test_a_rollback_restores_from_the_encrypted_copy_with_the_identity(prefect_api, conn, pilot, encrypted_env,
                                                                       bucket):
    from pg_cutover.flows.rollback import rollback
    from pg_cutover.runbook.manifest import load_manifest
    from tests.helpers import data_fingerprint

    before = data_fingerprint(conn, pilot)
    failed, manifest_path = _failed_cutover(conn, pilot)
    encrypted_env.setenv(IDENTITY_VAR, encrypted_env.secret)
    encrypted_env.setenv("CUTOVER_ENCRYPTION_IDENTITY", f"env:{IDENTITY_VAR}")

    state = rollback(manifest=str(manifest_path), return_state=True)

    assert state.is_completed(), state.message
    m = load_manifest(manifest_path)
    assert m.rollback.status == "restored"
    assert m.rollback.restored_from == f"s3://{bucket}/{m.offsite.prefix}{Path(m.backup.path).name}.age"
    assert data_fingerprint(conn, pilot) == before
    # The identity is a secret: in no artifact, log, manifest or incident record.
    shown = everything_shown(state.state_details.flow_run_id) + everything_shown(failed.state_details.flow_run_id)
    assert [t for t in shown if encrypted_env.secret in t] == []
    assert not [p for p in manifest_path.parent.rglob("*") if p.is_file() and p.suffix in (".json", ".md", ".log")
                and encrypted_env.secret in p.read_text(errors="replace")]
    assert not [n for n in _no_plaintext_left(manifest_path.parent) if n.endswith((".age", ".part"))]


@pytest.mark.parametrize("identity", ["wrong", "unset-variable", "not-configured"])
def test_a_rollback_without_the_right_identity_refuses_and_touches_nothing(prefect_api, conn, pilot, encrypted_env,
                                                                           identity):
    from pg_cutover.flows.rollback import rollback
    from pg_cutover.pg import db
    from tests.helpers import data_fingerprint, databases_like

    _, manifest_path = _failed_cutover(conn, pilot)
    wrong_secret, wrong_public = _keys()
    if identity != "not-configured":
        encrypted_env.setenv("CUTOVER_ENCRYPTION_IDENTITY", f"env:{IDENTITY_VAR}")
    if identity == "wrong":
        encrypted_env.setenv(IDENTITY_VAR, wrong_secret)
    fingerprint, names = data_fingerprint(conn, pilot), databases_like(conn, pilot)
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute("SELECT oid FROM pg_database WHERE datname = %s", (pilot,))
        oid = cur.fetchone()[0]

    state = rollback(manifest=str(manifest_path), return_state=True)

    assert state.is_failed()
    where = "s3://"
    expected = {
        "wrong": f"CUTOVER_ENCRYPTION_IDENTITY is the identity of {wrong_public}, but {where}",
        "unset-variable": f"CUTOVER_ENCRYPTION_IDENTITY=env:{IDENTITY_VAR} names the environment variable "
                          f"{IDENTITY_VAR}, which is not set on this worker; expected it to hold the age identity "
                          "(AGE-SECRET-KEY-1...); nothing was restored.",
        "not-configured": "CUTOVER_ENCRYPTION_IDENTITY is not set, and the off-site copy is encrypted on the client; "
                          "expected env:NAME or secret:BLOCK naming its age identity; nothing was restored.",
    }[identity]
    assert expected in state.message, state.message
    if identity == "wrong":
        assert f"was encrypted only to {encrypted_env.public}; expected the identity of one of them, nothing was " \
               "restored." in state.message
        assert wrong_secret not in state.message
    # Production untouched, no restore database, no download or partial plaintext left behind.
    assert data_fingerprint(conn, pilot) == fingerprint and databases_like(conn, pilot) == names
    assert databases_like(conn, pilot + "_restore") == []
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute("SELECT oid FROM pg_database WHERE datname = %s", (pilot,))
        assert cur.fetchone()[0] == oid
    assert _no_plaintext_left(manifest_path.parent) == []


def test_a_bad_recipient_stops_the_cutover_before_anything_is_uploaded(prefect_api, conn, pilot, encrypted_env,
                                                                       s3_endpoint, bucket):
    from tests.helpers import data_fingerprint

    encrypted_env.setenv("CUTOVER_ENCRYPTION_RECIPIENTS", f"{encrypted_env.public},age1notakey")
    before = data_fingerprint(conn, pilot)

    state = _cutover()

    assert state.is_failed()
    assert ("CUTOVER_ENCRYPTION_RECIPIENTS is invalid: 'age1notakey' is not an age public key; expected age public "
            "keys (age1...), comma-separated.") in state.message, state.message
    assert _bucket_objects(s3_endpoint, bucket) == {}
    assert data_fingerprint(conn, pilot) == before
    assert not list(Path(os.environ["CUTOVER_BACKUP_DIR"]).rglob("*.dump"))


def _store_with_encrypted_dump(s3_endpoint, bucket, tmp_path, public):
    from pg_cutover.runbook.manifest import BackupRecord, Manifest, OffsiteRecord
    from pg_cutover.storage.s3 import MiB, S3Store

    store = S3Store(bucket=bucket, endpoint_url=s3_endpoint, part_size=5 * MiB, recipients=(public,))
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    dump = run_dir / "pilot.dump"
    dump.write_bytes(b"PGDMP" + os.urandom(6 * MiB) + b"breweries")
    sha = hashlib.sha256(dump.read_bytes()).hexdigest()
    obj = store.upload_backup(dump, "pg-cutover/pilot/ts/pilot.dump", sha)
    manifest = Manifest(run_id="r", database="pilot", host="h", port=5432,
                        backup=BackupRecord(path=str(dump), size_bytes=dump.stat().st_size, sha256=sha),
                        offsite=OffsiteRecord(bucket=bucket, prefix="pg-cutover/pilot/ts/", objects=[obj]))
    plain = dump.read_bytes()
    dump.unlink()  # the restore must come from S3
    return store, manifest, obj, plain


def test_verified_dump_decrypts_streamed_and_leaves_nothing_when_refused(s3_endpoint, bucket, tmp_path):
    from pg_cutover.storage.encryption import DecryptionRefused, RestoreIdentity
    from pg_cutover.storage.s3 import BackupUntrusted, verified_dump

    secret, public = _keys()
    store, manifest, obj, plain = _store_with_encrypted_dump(s3_endpoint, bucket, tmp_path, public)
    assert obj.key.endswith(".age") and obj.plaintext_sha256 == manifest.backup.sha256 != obj.sha256

    work = tmp_path / "work"
    path, source = verified_dump(manifest, store, work, RestoreIdentity(secret=secret))
    assert path.read_bytes() == plain and source == f"s3://{bucket}/{obj.key}"
    assert sorted(p.name for p in work.iterdir()) == ["pilot.dump"] and (work.stat().st_mode & 0o777) == 0o700

    # The manifest does not say who it was encrypted to: a wrong identity is refused by age itself.
    unknown = manifest.model_copy(deep=True)
    unknown.offsite.objects[0].recipients = []
    with pytest.raises(DecryptionRefused, match=r"^CUTOVER_ENCRYPTION_IDENTITY does not decrypt s3://"):
        verified_dump(unknown, store, tmp_path / "w1", RestoreIdentity(secret=_keys()[0]))
    assert list((tmp_path / "w1").iterdir()) == []
    with pytest.raises(DecryptionRefused, match=r"^CUTOVER_ENCRYPTION_IDENTITY does not hold an age identity"):
        verified_dump(manifest, store, tmp_path / "w2", RestoreIdentity(secret="not-a-key"))

    # A replaced object: its ciphertext no longer matches the manifest, refused before decrypting.
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    body = bytearray(client.get_object(Bucket=bucket, Key=obj.key)["Body"].read())
    body[-100] ^= 0xFF
    client.put_object(Bucket=bucket, Key=obj.key, Body=bytes(body))
    with pytest.raises(BackupUntrusted, match="does not match the backup's SHA-256"):
        verified_dump(manifest, store, tmp_path / "w3", RestoreIdentity(secret=secret))
    assert list((tmp_path / "w3").iterdir()) == []
    # Altered and recorded as such (the manifest's ciphertext digest follows): age's authentication refuses it,
    # and the plaintext written so far is removed.
    altered = manifest.model_copy(deep=True)
    altered.offsite.objects[0].sha256 = hashlib.sha256(bytes(body)).hexdigest()
    with pytest.raises(DecryptionRefused, match=r"^CUTOVER_ENCRYPTION_IDENTITY does not decrypt s3://.*altered"):
        verified_dump(altered, store, tmp_path / "w4", RestoreIdentity(secret=secret))
    assert list((tmp_path / "w4").iterdir()) == []


def test_the_identity_from_a_secret_block_is_resolved_and_redacted(prefect_api):
    import uuid

    from prefect.blocks.system import Secret

    from pg_cutover.tasks.encryption_identity import restore_identity

    secret, _ = _keys()
    name = f"age-{uuid.uuid4().hex[:10]}"
    Secret(value=secret).save(name)
    settings = load_settings(POSTGRES_DB="pilot", CUTOVER_ENCRYPTION_IDENTITY=f"secret:{name}")

    identity = restore_identity(settings)

    assert identity.secret == secret and secret in settings.secrets and secret not in repr(identity)
    missing = restore_identity(load_settings(POSTGRES_DB="pilot", CUTOVER_ENCRYPTION_IDENTITY="secret:no-such-age-key"))
    assert missing.secret is None and missing.problem.startswith(
        "CUTOVER_ENCRYPTION_IDENTITY=secret:no-such-age-key cannot be loaded (")
    assert missing.problem.endswith("expected a Prefect Secret block named no-such-age-key holding the age identity")


def test_a_restore_drill_decrypts_with_the_identity_and_fails_without_it(prefect_api, conn, pilot, encrypted_env):
    from pg_cutover.flows.drill import restore_drill
    from tests.helpers import data_fingerprint, databases_like

    assert _cutover().is_completed()
    before = data_fingerprint(conn, pilot)

    # Without the identity the encrypted copy cannot be proven: a failed drill that says why, nothing left.
    refused = restore_drill(return_state=True)
    assert refused.is_failed() and refused.name == "DrillFailed"
    [row] = refused.result(raise_on_failure=False)["results"]
    assert row["database"] == pilot and "CUTOVER_ENCRYPTION_IDENTITY" in row["result"], row
    assert databases_like(conn, f"{pilot}_drill_") == []

    encrypted_env.setenv(IDENTITY_VAR, encrypted_env.secret)
    encrypted_env.setenv("CUTOVER_ENCRYPTION_IDENTITY", f"env:{IDENTITY_VAR}")
    passed = restore_drill(return_state=True)
    assert passed.is_completed(), passed.message
    [row] = passed.result()["results"]
    assert row["result"] == "passed" and row["backup key"].endswith(".dump.age"), row
    assert databases_like(conn, f"{pilot}_drill_") == [] and data_fingerprint(conn, pilot) == before


# -- the upload: streamed from an encrypting process, nothing encrypted on disk ----------------------------

def _seal_processes() -> list[int]:
    """Encrypting processes still alive (or unreaped) under this test process."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and b"seal.py" in cmdline or ppid == me and " (Z" in stat:
            found.append(int(entry.name))
    return found


def test_the_encrypted_upload_is_streamed_in_parts_and_proven(s3_endpoint, bucket, tmp_path):
    from pg_cutover.digest import Digester
    from pg_cutover.storage.encryption import sealed_size
    from pg_cutover.storage.s3 import MiB, S3Store

    secret, public = _keys()
    store = S3Store(bucket=bucket, endpoint_url=s3_endpoint, part_size=5 * MiB, recipients=(public,))
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    dump = run_dir / "pilot.dump"
    plain = b"PGDMP" + os.urandom(12 * MiB) + b"breweries"
    dump.write_bytes(plain)

    obj = store.upload_backup(dump, "pg-cutover/pilot/ts/pilot.dump", hashlib.sha256(plain).hexdigest())

    stored = _bucket_objects(s3_endpoint, bucket)["pg-cutover/pilot/ts/pilot.dump.age"]
    assert stored.startswith(AGE_HEADER) and b"PGDMP" not in stored and b"breweries" not in stored
    assert obj.sha256 == hashlib.sha256(stored).hexdigest() and obj.size_bytes == len(stored)
    assert abs(len(stored) - sealed_size(len(plain), 1)) < 300  # the progress total: all but the header's random stanza
    parts = Digester(5 * MiB)
    parts.update(stored)
    assert parts.digests().composite.endswith("-3")  # three 5 MiB parts, each checked by the server
    assert obj.server_checksum.split("-")[0] == parts.digests().composite.split("-")[0]
    assert obj.verified_by == "size + server SHA-256 checksum matched the local parts"
    assert __import__("pyrage").decrypt(stored, [x25519.Identity.from_str(secret)]) == plain
    assert sorted(p.name for p in run_dir.iterdir()) == ["pilot.dump"]  # no ciphertext was written beside it
    assert _seal_processes() == []


def test_a_dump_that_is_not_the_recorded_one_is_never_stored(s3_endpoint, bucket, tmp_path):
    from pg_cutover.storage.encryption import EncryptionFailed
    from pg_cutover.storage.s3 import MiB, S3Store

    store = S3Store(bucket=bucket, endpoint_url=s3_endpoint, part_size=5 * MiB, recipients=(_keys()[1],))
    dump = tmp_path / "pilot.dump"
    dump.write_bytes(os.urandom(11 * MiB))
    recorded = hashlib.sha256(b"the dump as it was written").hexdigest()

    with pytest.raises(EncryptionFailed, match=rf"^{dump} changed on disk while it was encrypted \(SHA-256 [0-9a-f]{{64}}, "
                                               rf"recorded {recorded}\); nothing was stored\.$"):
        store.upload_backup(dump, "pg-cutover/pilot/ts/pilot.dump", recorded)

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    assert _bucket_objects(s3_endpoint, bucket) == {}
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # aborted, not left to bill
    assert _seal_processes() == []


def test_an_upload_refused_by_s3_ends_the_encryption_and_says_which_setting(s3_endpoint, tmp_path):
    from pg_cutover.storage.s3 import MiB, S3Store, StorageError

    store = S3Store(bucket="no-such-bucket", endpoint_url=s3_endpoint, part_size=5 * MiB, recipients=(_keys()[1],))
    dump = tmp_path / "pilot.dump"
    dump.write_bytes(os.urandom(30 * MiB))  # more than the pipe holds: the encryption is still writing when S3 refuses

    with pytest.raises(StorageError, match=r"CUTOVER_S3_BUCKET='no-such-bucket' does not exist"):
        store.upload_backup(dump, "pg-cutover/pilot/ts/pilot.dump", hashlib.sha256(dump.read_bytes()).hexdigest())
    assert _seal_processes() == []
