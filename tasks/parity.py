"""Proof before stamping: every claim the cutover relies on, checked and shown as evidence.

Baseline parity (the pilot is the baseline), data parity (the scratch copy is the
pilot), index health of the restore (amcheck), the SQL the upgrade will run
(linted), no session that would block the upgrade, and schema parity after it.
"""

from __future__ import annotations

import re
import shlex

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pg_cutover.checks import baseline, equivalence, parity
from pg_cutover.checks.baseline import Baseline
from pg_cutover.errors import StepFailed
from pg_cutover.migrations import safety
from pg_cutover.migrations.session import AlembicSession
from pg_cutover.pg.tools import PgClient
from pg_cutover.runbook.plan import Plan, derived_name
from pg_cutover.tasks.evidence import code_block, publish_markdown, publish_table
from pg_cutover.toolkit import Toolkit

# Tasks here that the cutover runs beside others (`.submit()`, a worker thread) have no Prefect
# timeout: there it cannot interrupt a blocking call and only logs a warning in every run; their
# subprocesses, queries and HTTP requests carry their own timeouts.

MAX_SQL_CHARS = 60_000  # an artifact is for reading; the whole SQL is in the migrations


@task(name="baseline-build", cache_policy=NO_CACHE)
def build_baseline(kit: Toolkit, pg: PgClient | None, baseline_rev: str, name: str) -> Baseline:
    """The baseline from nothing: a new empty database `name` upgraded to BASELINE_REV, fingerprinted, dropped."""
    return baseline.build(kit.conn, pg, kit.alembic, baseline_rev, name, kit.settings.baseline_bootstrap_argv)


def _production_side(kit: Toolkit, pg: PgClient, plan: Plan, name: str, role: str) -> equivalence.Side:
    """Production as read now, and how to print it by the normal route should that be needed."""
    scratch = derived_name(plan.database, role, plan.timestamp)
    return equivalence.Side(name, parity.fingerprint(kit.conn, plan.database),
                            normalize=lambda: equivalence.normal_fingerprint(kit.conn, pg, plan.database, scratch))


def comparison_text(comparison: equivalence.Comparison, title: str, empty: str) -> str:
    text = parity.render_markdown(comparison.differences, title, empty=empty)
    if comparison.warning:
        text += f"\n**Warning:** {comparison.warning}\n"
    elif comparison.normalized:
        text += (f"\nPostgreSQL printed {len(comparison.as_read)} differences as read; both sides were compared "
                 "again after a schema-only pg_dump restored into a scratch database (the form any restore "
                 f"prints), where {len(comparison.differences)} remain.\n\n"
                 + parity.render_markdown(comparison.as_read, "Differences as read (before that normal form)"))
    return text


@task(name="baseline-parity", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2, timeout_seconds=600)
def baseline_parity(kit: Toolkit, pg: PgClient, plan: Plan, built: Baseline) -> dict:
    """`alembic stamp` claims the pilot IS the baseline: prove it, or stop with the differences."""
    allow = parity.parse_allowlist(kit.settings.parity_allow)
    pilot = _production_side(kit, pg, plan, "pilot", "normal_pilot")
    comparison = equivalence.compare(pilot, built.side(kit.conn, pg, derived_name(plan.database, "normal_base",
                                                                                  plan.timestamp)))
    remaining, accepted = parity.apply_allowlist(comparison.differences, allow)
    comparison.differences = remaining
    text = comparison_text(comparison, f"Baseline parity: `{plan.database}` vs `{plan.baseline_rev}` built from nothing",
                            "No differences: the pilot is exactly the baseline.")
    if len(accepted):
        text += "\n" + parity.render_markdown(accepted, "Accepted by CUTOVER_PARITY_ALLOW (reviewed differences)")
    if built.bootstrap:
        text += (f"\nThe baseline's first schema was laid down by {baseline.BOOTSTRAP_SETTING} before "
                 f"`alembic upgrade {plan.baseline_rev}`:\n\n{code_block(built.bootstrap)}")
    publish_markdown(plan.database, "baseline-parity", text, "The pilot's catalog against the baseline revision")
    if len(remaining):
        raise StepFailed(f"{plan.database} differs from the baseline {plan.baseline_rev} in {len(remaining)} ways "
                         f"(first: {first_difference(remaining)}); stamping would be a false claim. Fix the pilot or list "
                         "reviewed differences in CUTOVER_PARITY_ALLOW."
                         + (f" {comparison.warning}." if comparison.warning else ""))
    return {"differences": 0, "accepted": len(accepted), "compared": comparison.summary(),
            "bootstrap": shlex.join(kit.settings.baseline_bootstrap_argv) if built.bootstrap else None,
            "fingerprint": pilot.read}  # what was proven, for baseline_unchanged right before the stamp


@task(name="baseline-unchanged", cache_policy=NO_CACHE, timeout_seconds=600)
def baseline_unchanged(kit: Toolkit, pg: PgClient, plan: Plan, built: Baseline, proven: parity.Fingerprint) -> dict:
    """Baseline parity ran before the approval: the schema is read again right before the stamp.

    The same catalog read as then, a fraction of a second: equal, the proof stands. Changed (DDL run
    while the form waited or the backup ran), the whole proof is made again against what is there now
    and the stamp goes ahead only if it holds; the changes are published either way."""
    now = parity.fingerprint(kit.conn, plan.database)
    if now == proven:
        return {"changed": 0}
    changes = parity.diff(proven, now, a_name="at baseline parity", b_name="now")
    get_run_logger().warning("%s's schema changed in %d ways since baseline parity (first: %s); proving it again",
                             plan.database, len(changes), first_difference(changes))
    publish_markdown(plan.database, "baseline-unchanged",
                     parity.render_markdown(changes, f"`{plan.database}` changed since baseline parity"),
                     "What changed in the pilot's schema between baseline parity and the stamp")
    try:
        again = baseline_parity.fn(kit, pg, plan, built)
    except StepFailed as exc:
        raise StepFailed(f"{plan.database}'s schema changed after baseline parity, before the stamp ({len(changes)} "
                         f"changes, first: {first_difference(changes)}), and no longer passes it: {exc}") from None
    return {"changed": len(changes), "accepted": again["accepted"], "compared": again["compared"]}


def _offline_failure(text: str) -> str:
    """The error's own last line, and the revision file it came from when the traceback names one."""
    last = text.replace("\n", " | ").split(" | ")[-1].strip()[:300] or "no output"
    where = re.findall(r'File "[^"]*/versions/([^"/]+\.py)", line (\d+)', text)
    return f"{where[-1][0]} line {where[-1][1]}: {last}" if where else last


def first_difference(df) -> str:
    row = df.iloc[0]
    return f"{row['kind']} {row['object']} {row['property']}"


@task(name="production-data-side", cache_policy=NO_CACHE, timeout_seconds=4 * 3600)
def read_production_side(kit: Toolkit, plan: Plan, counted: dict[str, int] | None = None) -> dict:
    """Production's half of data parity, read (submitted) beside the scratch restore.

    `counted`: production's exact counts from `row-counts`, taken in the same write pause.
    """
    limit = kit.settings.parity_checksum_max_mb * 1024 * 1024
    return parity.read_data_side(kit.conn, plan.database, list(plan.tables), checksum_max_bytes=limit,
                                 known_rows=counted)


@task(name="data-parity", cache_policy=NO_CACHE, timeout_seconds=4 * 3600)
def data_parity(kit: Toolkit, plan: Plan, production_side: dict | None = None,
                scratch_rows: dict[str, int] | None = None) -> dict:
    """Writes are paused, so production and its scratch copy must hold the same rows.

    `production_side` is production's half (`read_production_side`), read while the
    scratch copy was still being restored; without it both halves are read now. Tables
    too big to checksum are compared on exact counts: production's from `row-counts`,
    scratch's from `scratch-restore` (`scratch_rows`), not counted a second time.
    """
    limit = kit.settings.parity_checksum_max_mb * 1024 * 1024
    frame = parity.data_parity(kit.conn, plan.database, plan.scratch_db, plan.tables, checksum_max_bytes=limit,
                               stats_a=production_side, known_rows_b=scratch_rows)
    frame = frame.rename(columns={"rows_a": "rows production", "rows_b": "rows scratch",
                                  "checksum_a": "checksum production", "checksum_b": "checksum scratch"})
    publish_table(plan.database, "data-parity", parity.df_to_rows(frame),
                  f"Production vs scratch: exact row counts (for larger tables, those of row-counts and "
                  f"scratch-restore); checksums of every row for tables up to "
                  f"{kit.settings.parity_checksum_max_mb} MB")
    bad = frame[~frame["equal"]]
    if len(bad):
        raise StepFailed(f"The scratch copy differs from production in {', '.join(bad['table'])}: "
                         "the backup does not hold what production holds.")
    checksums = {t: c for t, c in zip(frame["table"], frame["checksum production"]) if c and c != parity.SKIPPED_SIZE}
    return {"tables": len(frame), "checksummed": len(checksums), "production_checksums": checksums,
            "production_rows": dict(zip(frame["table"], frame["rows production"]))}


@task(name="scratch-amcheck", cache_policy=NO_CACHE)
def scratch_amcheck(kit: Toolkit, plan: Plan) -> dict:
    """A restore that produced a corrupt index is caught here, on scratch."""
    frame = safety.amcheck(kit.conn, plan.scratch_db)
    publish_table(plan.database, "scratch-amcheck", parity.df_to_rows(frame),
                  f"amcheck bt_index_check of every btree index on {plan.scratch_db}")
    if frame["ok"].isna().all():
        get_run_logger().warning("amcheck unavailable on %s: %s", plan.scratch_db, frame.iloc[0]["error"])
        return {"checked": 0, "unavailable": frame.iloc[0]["error"]}
    bad = frame[frame["ok"] == False]  # noqa: E712  (None means "not checked")
    if len(bad):
        raise StepFailed(f"amcheck found broken indexes on the scratch restore: {', '.join(bad['index'])}.")
    return {"checked": len(frame)}


@task(name="upgrade-sql", cache_policy=NO_CACHE)
def upgrade_sql(kit: Toolkit, plan: Plan, session: AlembicSession | None = None) -> dict:
    """The SQL the upgrade will run, for the reviewer, with squawk's findings (in production's
    warm interpreter when `session` is given)."""
    start = plan.revision_before or plan.baseline_rev
    ok, text = safety.offline_sql(kit.alembic, plan.database, start, plan.target_rev, session)
    if not ok:
        publish_markdown(plan.database, "upgrade-sql", f"# Upgrade SQL\n\nOffline mode failed; not linted.\n\n{text}\n",
                         "The SQL of the upgrade (alembic --sql) and its lint")
        return {"rendered": False, "findings": 0, "reason": _offline_failure(text)}
    # The timeouts squawk asks for are set on every migration session through PGOPTIONS.
    findings = safety.lint_sql(text, exclude=("require-lock-timeout", "require-statement-timeout"),
                               runner=kit.runner)
    shown = text if len(text) <= MAX_SQL_CHARS else text[:MAX_SQL_CHARS] + "\n-- (cut here; see the migrations)"
    publish_markdown(
        plan.database, "upgrade-sql",
        f"# Upgrade SQL `{start}` -> `{plan.target_rev}`\n\nEvery session runs with PGOPTIONS "
        f"`{kit.alembic.pgoptions}`.\n\n"
        + parity.render_markdown(findings, "Squawk findings", empty="No findings.")
        + f"\n{code_block(shown).replace('```text', '```sql', 1)}",
        "The SQL of the upgrade (alembic --sql) and its lint",
    )
    real = findings[findings["rule"] != "(squawk)"]
    # One COMMIT in all (no autocommit block, no transaction per migration): a failure rolls all of it back.
    commits = sum(1 for line in text.splitlines() if line.strip().upper() == "COMMIT;")
    return {"rendered": True, "findings": len(real), "rules": sorted(set(real["rule"])),
            "single_transaction": commits == 1}


@task(name="blocking-sessions", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5, timeout_seconds=300)
def blocking_sessions(kit: Toolkit, plan: Plan) -> list[dict]:
    """Right before the first production change: nobody holds locks or a long transaction on the target."""
    sessions = safety.blocking_sessions(kit.conn, plan.database, min_xact_seconds=kit.settings.blocking_xact_seconds)
    publish_table(plan.database, "blocking-sessions",
                  sessions or [{"pid": "-", "usename": "-", "application_name": "-", "state": "-",
                                "xact_age_seconds": "-", "query": "none", "locked_relations": "-"}],
                  "Sessions that would block or outlast the production upgrade")
    if sessions:
        who = "; ".join(f"pid {s['pid']} {s['usename']} ({s['application_name'] or 'no name'}) "
                        f"holding {', '.join(s['locked_relations']) or 'a long transaction'}" for s in sessions)
        raise StepFailed(f"Sessions on {plan.database} would block the upgrade: {who}. Production untouched.")
    return sessions


@task(name="schema-parity", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def schema_parity(kit: Toolkit, pg: PgClient, plan: Plan, scratch: dict) -> str:
    """Production after its upgrade has the schema the scratch copy had after the same upgrade."""
    scratch_side = equivalence.Side(
        "scratch", scratch, normalize=lambda: equivalence.normal_fingerprint(
            kit.conn, pg, plan.scratch_db, equivalence.normal_name(plan.scratch_db)))
    comparison = equivalence.compare(_production_side(kit, pg, plan, "production", "normal_after"), scratch_side)
    publish_markdown(plan.database, "schema-parity",
                     comparison_text(comparison, "Schema parity after the upgrade: production vs scratch",
                                      "No differences."),
                     "Production's catalog after the upgrade against the upgraded scratch copy")
    differences = comparison.differences
    if len(differences):
        raise StepFailed(f"After the upgrade production differs from the upgraded scratch copy in "
                         f"{len(differences)} ways (first: {first_difference(differences)})."
                         + (f" {comparison.warning}." if comparison.warning else ""))
    return comparison.summary()


@task(name="scratch-fingerprint", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2, timeout_seconds=600)
def scratch_fingerprint(kit: Toolkit, plan: Plan) -> dict:
    return parity.fingerprint(kit.conn, plan.scratch_db)
