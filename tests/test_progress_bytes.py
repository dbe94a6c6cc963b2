"""Long steps say their bytes while they run: the dump, the restores and the upload (issue 21).

The byte counts are measured, never asked of the database: the dump file's size, the bytes piped
into pg_restore and its --verbose items, boto3's transfer callback. The end-to-end test builds a
pilot whose dump is over 200 MB and reads back from the Prefect API that the run's log and its
progress artifact carried byte counts while the dump was still being written.
"""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import threading
from datetime import datetime
from pathlib import Path

import pytest

from pg_cutover import throughput
from pg_cutover.digest import sha256_file
from pg_cutover.pg import db
from pg_cutover.pg.tools import CommandFailed, PgClient, locate_bin_dir
from pg_cutover.process import Runner
from pg_cutover.storage.s3 import MiB, S3Store

BIG_BYTES = 200 * 1000 * 1000
BYTES_RE = re.compile(r"([\d.]+) (B|kB|MB|GB)\b")
UNITS = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}


def first_bytes(text: str) -> float:
    number, unit = BYTES_RE.search(text).groups()
    return float(number) * UNITS[unit]


class Heard:
    """A reporter that keeps every reading (installed for one test, then removed)."""

    def __init__(self):
        self.readings: list[throughput.Reading] = []

    def __call__(self, reading):
        self.readings.append(reading)

    def __enter__(self):
        throughput.install(self)
        return self

    def __exit__(self, *exc):
        throughput.uninstall(self)


@pytest.fixture
def pg(conn) -> PgClient:
    bin_dir, major = locate_bin_dir(None, db.probe(conn, "postgres") // 10000, Runner())
    return PgClient(bin_dir=bin_dir, major=major, conn=conn, runner=Runner(), timeout=600)


# -- the pieces, no service --------------------------------------------------------------------


def test_bytes_read_as_people_read_them():
    assert throughput.human_bytes(0) == "0 B"
    assert throughput.human_bytes(999) == "999 B"
    assert throughput.human_bytes(1500) == "1.5 kB"
    assert throughput.human_bytes(412_300_000) == "412 MB"
    assert throughput.human_bytes(1_230_000_000) == "1.2 GB"
    reading = throughput.Reading("backup-full", "written", throughput.Count(412_000_000, total=800_000_000),
                                 rate=38_000_000)
    assert reading.describe() == "backup-full: 412 MB of ~800 MB written (38 MB/s)"
    items = throughput.Reading("rollback-restore", "", throughput.Count(0, items=3, items_total=9, note="archive"),
                               rate=0)
    assert items.describe() == "rollback-restore: 3 of 9 items restored; archive"


def test_interval_comes_from_the_environment_and_a_bad_value_keeps_the_default(monkeypatch):
    monkeypatch.setenv(throughput.INTERVAL_ENV, "0.5")
    assert throughput.interval() == 0.5
    for bad in ("soon", "nan", ""):
        monkeypatch.setenv(throughput.INTERVAL_ENV, bad)
        assert throughput.interval() == throughput.DEFAULT_INTERVAL
    monkeypatch.setenv(throughput.INTERVAL_ENV, "0")
    assert throughput.interval() == throughput.MIN_INTERVAL


def test_ticker_says_nothing_after_its_step_and_survives_a_failing_reporter():
    done = threading.Event()
    counted = []

    def sample():
        counted.append(len(counted))
        if len(counted) >= 4:  # taken after the readings of samples 2 and 3 were handed on
            done.set()
        return throughput.Count(len(counted) * 1000)

    def broken(reading):
        raise RuntimeError("the API is down")

    throughput.install(broken)
    try:
        with Heard() as heard, throughput.Ticker("step", "written", sample, seconds=0.01):
            assert done.wait(30)
        after = len(heard.readings)
        # The first sample is the rate's starting point; each reading after it is 1000 bytes more.
        assert after >= 2 and [r.done for r in heard.readings[:2]] == [2000, 3000]
        assert heard.readings[0].rate > 0
        threading.Event().wait(0.1)
        assert len(heard.readings) == after  # the thread ended with the step
    finally:
        throughput.uninstall(broken)


def test_items_counted_from_pg_restore_verbose_lines(tmp_path):
    serial = ("pg_restore: connecting to database for restore\npg_restore: creating TABLE \"public.t\"\n"
              "pg_restore: processing data for table \"public.t\"\npg_restore: creating INDEX \"public.t_b_idx\"\n")
    parallel = ("pg_restore: processing item 214 TABLE t\npg_restore: creating TABLE \"public.t\"\n"
                "pg_restore: entering main parallel loop\npg_restore: launching item 3341 TABLE DATA t\n"
                "pg_restore: finished item 3341 TABLE DATA t\npg_restore: creating INDEX \"public.t_b_idx\"\n"
                "pg_restore: finished item 3196 INDEX t_b_idx\npg_restore: finished item 3347 DATABASE x\n")
    # Serially the item under way is not done yet; in the loop an item outside the listing is not counted.
    for text, ids, expected in ((serial, None, 2), (parallel, {"214", "3341", "3196"}, 3)):
        path = tmp_path / "stderr"
        with open(path, "wb+") as fh:
            counter = throughput.LineCounter(fh.fileno(), ids=ids)
            half = len(text) // 2  # a line cut in two is counted once, when whole
            fh.write(text[:half].encode())
            fh.flush()
            counter.count()
            fh.write(text[half:].encode())
            fh.flush()
            assert counter.count() == expected
    failed = serial + "pg_restore: error: could not read\n"
    assert throughput.without_chatter(failed) == "pg_restore: error: could not read"


# -- real pg_restore and a real S3 server ------------------------------------------------------


def test_rollback_restore_counts_its_items_and_quotes_only_errors(pg, conn, pilot_factory, tmp_path):
    pilot = pilot_factory(reviews=200)
    dump = tmp_path / "p.dump"
    pg.dump(pilot, dump)
    listed = [line for line in pg.list_archive(dump).stdout.splitlines() if line.strip() and not line.startswith(";")]
    with Heard():  # the ticker runs (its thread is started) whatever the size
        pg.createdb(f"{pilot}_restored")
        pg.restore(f"{pilot}_restored", dump, jobs=2)
    assert db.row_counts(conn, f"{pilot}_restored", ["public.reviews"]) == {"public.reviews": 200}
    with open(tmp_path / "stderr", "wb+") as fh:
        pg.createdb(f"{pilot}_counted")
        subprocess.run(pg.restore_argv(f"{pilot}_counted", dump, jobs=2, verbose=True), stderr=fh, env=pg.env(),
                       check=True)
        ids = {line.split(";", 1)[0].strip() for line in listed}
        assert throughput.LineCounter(fh.fileno(), ids=ids).count() == len(listed)
    # A failure quotes pg_restore's error, not its --verbose chatter.
    pg.createdb(f"{pilot}_twice")
    pg.restore(f"{pilot}_twice", dump)
    with pytest.raises(CommandFailed, match=r"^pg_restore failed with exit code 1: ") as failed:
        pg.restore(f"{pilot}_twice", dump)
    assert "already exists" in failed.value.stderr
    assert "pg_restore: creating" not in failed.value.stderr and "connecting" not in failed.value.stderr


def test_upload_reports_bytes_sent_while_it_runs(s3_endpoint, bucket, tmp_path, monkeypatch):
    store = S3Store(bucket=bucket, endpoint_url=s3_endpoint, part_size=5 * MiB)
    path = tmp_path / "big.dump"
    size = 60 * MiB
    with open(path, "wb") as fh:
        block = bytes(range(256)) * 4096
        for _ in range(size // len(block)):
            fh.write(block)
    monkeypatch.setenv(throughput.INTERVAL_ENV, str(throughput.MIN_INTERVAL))
    with Heard() as heard:
        stored = store.upload_file(path, "p/big.dump", sha256_file(path), step="offsite-mirror")
    assert stored.size_bytes == size
    mid = [r for r in heard.readings if 0 < r.done < size]
    assert mid, [r.describe() for r in heard.readings]
    assert mid[0].count.total == size and mid[0].describe().startswith("offsite-mirror: ")
    assert f"s3://{bucket}/p/big.dump" in mid[0].describe()


# -- the cutover's dry run on a pilot whose dump is over 200 MB --------------------------------


def fill_to(conn, dbname: str, raw_bytes: int) -> None:
    """Reviews whose comments total `raw_bytes`: TOAST squeezes the repeats on disk (a fast build), while an
    uncompressed dump writes every byte."""
    width = 2048
    with db.connect(conn, dbname) as c, c.cursor() as cur:
        cur.execute(
            "INSERT INTO reviews (beer_id, reviewer, rating, comment) "
            "SELECT (SELECT min(id) FROM beers), 'bulk-' || g, 1 + g %% 5, repeat(md5(g::text), %s) "
            "FROM generate_series(1, %s) g",
            (width // 32, raw_bytes // width + 1),
        )
        c.commit()


def progress_descriptions(key: str, seen: list[str], stop: threading.Event) -> None:
    """Every description the progress artifact shows, read from the API while the flow runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def watch():
        async with get_client() as client:
            while not stop.is_set():
                latest = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
                for artifact in latest:
                    if artifact.description and (not seen or seen[-1] != artifact.description):
                        seen.append(artifact.description)
                await asyncio.sleep(0.05)

    asyncio.run(watch())


def run_logs(flow_run_id) -> list[tuple[object, str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    async def read():
        logs = []
        async with get_client() as client:
            while True:  # a page at a time: the API returns at most its default limit per call
                page = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                                              offset=len(logs), sort=LogSort.TIMESTAMP_ASC)
                logs += page
                if not page:
                    return logs

    return [(log.timestamp, log.message) for log in asyncio.run(read())]


@pytest.mark.slow
def test_dump_of_200_mb_reports_bytes_while_it_runs(prefect_api, conn, pilot, cutover_env, caplog):
    from pg_cutover.flows.cutover import cutover
    from pg_cutover.runbook.checklist import Checklist
    from pg_cutover.runbook.manifest import load_manifest
    from pg_cutover.tasks.evidence import artifact_key
    from tests.conftest import wait_for

    fill_to(conn, pilot, BIG_BYTES + 8 * MiB)
    cutover_env.setenv("CUTOVER_DUMP_COMPRESSION", "0")  # every byte reaches the file: the dump is over 200 MB
    cutover_env.setenv("CUTOVER_PARITY_CHECKSUM_MAX_MB", "0")  # counts suffice here; checksums are tested elsewhere
    # Short enough that even a fast machine's dump of 200 MB is seen mid-way several times.
    cutover_env.setenv(throughput.INTERVAL_ENV, str(throughput.MIN_INTERVAL))
    # The suite keeps Prefect's run loggers at WARNING; the progress lines are INFO.
    caplog.set_level(logging.INFO, logger="prefect.task_runs")

    seen: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=progress_descriptions, args=(artifact_key(pilot, "progress"), seen, stop),
                               daemon=True)
    watcher.start()
    try:
        state = cutover(dry_run=True, return_state=True, approved_by="alice (OPS-1)",
                        checklist=Checklist.all_confirmed())
    finally:
        stop.set()
        watcher.join(30)
    assert state.is_completed(), state.message
    run_id = state.state_details.flow_run_id
    manifest = load_manifest(Path(state.result()["manifest"]))
    size = manifest.backup.size_bytes
    assert size > BIG_BYTES

    # The log: byte counts of the dump strictly between nothing and the whole file, before the step ended.
    ended = datetime.fromisoformat(manifest.step("backup-full").ended_at)

    def dump_lines_mid_way():
        return [text for at, text in run_logs(run_id)
                if text.startswith("backup-full: ") and 0 < first_bytes(text) < 0.95 * size and at <= ended]

    mid = wait_for("the dump's progress lines mid-way in the API", dump_lines_mid_way, timeout=60)
    assert re.match(r"backup-full: [\d.]+ [kMG]?B written \([\d.]+ [kMG]?B/s\); scratch restore [\d.]+ [kMG]?B fed, "
                    r"\d+ items? restored$", mid[0]), mid[0]

    # The progress artifact, read while the flow ran: the running step, and its bytes part of the way through.
    counted = [d for d in seen if re.search(r"^Cutover of \w+: step \d+ of \d+, (backup-full|scratch-restore): ", d)
               and 0 < first_bytes(d.split(", ", 1)[1]) < 0.99 * size]
    assert counted, seen
