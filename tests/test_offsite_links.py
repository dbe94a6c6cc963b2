"""Issue 22, item 0: no bearer link to the data by default.

Prefect's open-source server has no login: whatever its artifacts carry, any reader of the UI has. A default
run's artifacts name the off-site objects; a presigned (bearer) link only when asked for, and saying so.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from pg_cutover.errors import ConfigError
from pg_cutover.settings import load_settings
from tests.run_evidence import everything_shown

PRESIGNED = re.compile(r"X-Amz-Signature|X-Amz-Credential|Signature=|[?&]Expires=", re.IGNORECASE)


@pytest.mark.unit
@pytest.mark.parametrize("env, sentence", [
    ({"CUTOVER_S3_LINKS": "presigned"},
     "CUTOVER_S3_LINKS=presigned would post bearer links to plaintext dumps (nothing is encrypted on the client): "
     "expected CUTOVER_S3_LINKS=uri, or also CUTOVER_S3_PRESIGN_PLAINTEXT=true to allow them."),
    ({"CUTOVER_S3_LINKS": "presigned", "CUTOVER_S3_PRESIGN_PLAINTEXT": "true", "CUTOVER_S3_CONSOLE_URL": "https://c/{key}"},
     "CUTOVER_S3_CONSOLE_URL is set and CUTOVER_S3_LINKS=presigned: expected one kind of link, so unset "
     "CUTOVER_S3_CONSOLE_URL or set CUTOVER_S3_LINKS=uri."),
    ({"CUTOVER_S3_LINKS": "signed"}, "CUTOVER_S3_LINKS is invalid ('signed'): Input should be 'uri' or 'presigned'."),
])
def test_refused_link_settings_are_one_sentence_at_load(env, sentence):
    with pytest.raises(ConfigError) as refused:
        load_settings(POSTGRES_DB="pilot", **env)
    assert str(refused.value) == sentence


@pytest.mark.unit
def test_presigned_links_to_plaintext_only_when_allowed():
    settings = load_settings(POSTGRES_DB="pilot", CUTOVER_S3_LINKS="presigned", CUTOVER_S3_PRESIGN_PLAINTEXT="true")
    assert (settings.s3_links, settings.s3_presign_plaintext, settings.client_encrypts) == ("presigned", True, False)
    assert load_settings(POSTGRES_DB="pilot").s3_links == "uri"


def _run(**env):
    from pg_cutover.flows.cutover import cutover
    from pg_cutover.runbook.checklist import Checklist

    state = cutover(approved_by="alice", checklist=Checklist.all_confirmed(), return_state=True)
    assert state.is_completed(), state.message
    return state


def _dump_link(shown: list[str], pilot: str) -> tuple[str, str]:
    """(description, markdown) of the dump's link artifact."""
    key = f"artifact {pilot.replace('_', '-')}-offsite-dump "
    [text] = [t for t in shown if t.startswith(key)]
    description, markdown = text.split(": ", 1)[1].split("\n", 1)
    return description, markdown


def test_a_default_run_posts_no_presigned_url_anywhere(prefect_api, pilot, offsite_env, bucket):
    from pg_cutover.runbook.manifest import load_manifest

    state = _run()

    shown = everything_shown(state.state_details.flow_run_id)
    assert sum(t.startswith("artifact ") for t in shown) > 10 and any(t.startswith("log ") for t in shown)
    assert [t for t in shown if PRESIGNED.search(t)] == []
    manifest = load_manifest(Path(state.result()["manifest"]))
    dump_key = manifest.offsite.object_for(Path(manifest.backup.path).name).key
    description, markdown = _dump_link(shown, pilot)
    assert markdown == f"[s3://{bucket}/{dump_key}](s3://{bucket}/{dump_key})"
    assert description == "Where the copy is; read it with your own S3 credentials (no download link is posted)"


def test_a_console_url_is_posted_in_place_of_the_uri(prefect_api, pilot, offsite_env, bucket):
    offsite_env.setenv("CUTOVER_S3_CONSOLE_URL", "https://console.example/s3/object/{bucket}?prefix={key}")

    state = _run()

    shown = everything_shown(state.state_details.flow_run_id)
    assert [t for t in shown if PRESIGNED.search(t)] == []
    description, markdown = _dump_link(shown, pilot)
    assert re.fullmatch(rf"\[s3://{bucket}/(\S+)\]\(https://console\.example/s3/object/{bucket}\?prefix=\1\)", markdown)
    assert description.startswith("Console link: opens with the reader's own S3 credentials")


def test_presigned_links_when_asked_say_bearer_and_when_they_expire(prefect_api, pilot, offsite_env, bucket):
    from pg_cutover.runbook.manifest import load_manifest

    offsite_env.setenv("CUTOVER_S3_LINKS", "presigned")
    offsite_env.setenv("CUTOVER_S3_PRESIGN_PLAINTEXT", "true")
    offsite_env.setenv("CUTOVER_S3_LINK_SECONDS", "600")
    started = datetime.now(timezone.utc).replace(microsecond=0)

    state = _run()

    ended = datetime.now(timezone.utc)
    shown = everything_shown(state.state_details.flow_run_id)
    description, markdown = _dump_link(shown, pilot)
    link = markdown.split("](", 1)[1].removesuffix(")")
    assert PRESIGNED.search(link)
    manifest = load_manifest(Path(state.result()["manifest"]))
    assert httpx.get(link).content == Path(manifest.backup.path).read_bytes()  # a bearer link: it needs nothing else
    until = re.search(r"until (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", description)
    assert description.startswith("Bearer link: anyone who has this URL can download s3://") and until, description
    expires = datetime.strptime(until.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    assert started + timedelta(seconds=600) <= expires <= ended + timedelta(seconds=600)
    assert "NOT encrypted on the client" in description
