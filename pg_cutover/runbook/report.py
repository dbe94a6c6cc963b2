"""The summary report (runbook 5.4) rendered from the manifest alone."""

from __future__ import annotations

from datetime import datetime

from pg_cutover.runbook.manifest import Manifest

REPORT_NAME = "report.md"


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"


def cell(value: object) -> str:
    """Free text inside a markdown table cell: a `|` or a line break in an error must not cut the row."""
    return " ".join(str(value).replace("|", "\\|").split())


def render_report(m: Manifest) -> str:
    lines = [
        f"# Cutover of `{m.database}`: {m.status}",
        "",
        "| | |",
        "|---|---|",
        f"| database | `{m.database}` on `{m.host}:{m.port}` |",
        f"| run | `{m.run_id}`{f' (flow run `{m.flow_run_id}`)' if m.flow_run_id else ''} |",
        f"| started / finished (UTC) | {m.started_at} / {m.finished_at or '-'} |",
        f"| baseline / target | `{m.baseline_rev}` / `{m.target_rev}` |",
        f"| revision before / after | `{m.revision_before or 'none (legacy, no alembic_version)'}` / `{m.revision_after or '-'}` |",
        f"| production touched | {'yes' if m.production_touched else 'no'} |",
        f"| dry run | {'yes' if m.dry_run else 'no'} |",
        f"| strategy | {m.strategy} |",
        f"| scratch database | `{m.scratch_db or '-'}` |",
    ]
    window = write_pause_seconds(m)
    if window is not None:
        lines.append(f"| write-pause window | {window:.1f} s (writes stopped to the backend answering on the "
                     "upgraded database) |")
    if m.checklist:
        lines.append(f"| checklist | {cell(', '.join(f'{k}: {v}' for k, v in m.checklist.items()))} |")
    if m.clone:
        c = m.clone
        after = ("dropped at " + c.original_dropped_at if c.original_dropped_at else
                 "kept" + (f"; dump verified{', restore-checked' if c.restore_checked else ''}"
                           f"{', off-site verified' if c.offsite_verified else ''}" if c.dump_verified
                           else "; its dump is not verified, so finalize keeps it"))
        lines += [
            "",
            "## Clone and swap",
            "",
            "| | |",
            "|---|---|",
            f"| clone | `{c.clone}` (OID {c.clone_oid or '-'}), {c.copy_strategy or '-'}, "
            f"{c.clone_seconds if c.clone_seconds is not None else '-'} s |",
            f"| swap | {f'{c.swap_seconds} s at {c.swapped_at}' if c.swapped_at else 'not done'} |",
            f"| the original | `{c.before if c.swapped_at else m.database}` (OID {c.original_oid}): {after} |",
        ]
    if m.backup:
        b = m.backup
        lines += [
            "",
            "## Backup",
            "",
            "| file | size | SHA-256 |",
            "|---|---|---|",
            f"| `{b.path}` | {human_size(b.size_bytes)} ({b.size_bytes} bytes) | `{b.sha256}` |",
        ]
        if b.schema_path:
            lines.append(f"| `{b.schema_path}` | schema only | |")
    if m.offsite:
        o = m.offsite
        lines += [
            "",
            f"## Off-site copy: s3://{o.bucket}/{o.prefix}" + (f" at {o.endpoint_url}" if o.endpoint_url else ""),
            "",
        ]
        if any(x.encrypted for x in o.objects):  # what the upload proved (ciphertext), what a restore proves (plaintext)
            lines += ["| key | size | SHA-256 as stored | encryption | plaintext SHA-256 | verified |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| `{x.key}` | {human_size(x.size_bytes)} | `{x.sha256}` | "
                      + (f"{x.encryption}, to {len(x.recipients)} recipient(s) | `{x.plaintext_sha256}`" if x.encrypted
                         else "none | (as stored)")
                      + f" | {x.verified_by} |" for x in o.objects]
        else:
            lines += ["| key | size | SHA-256 | verified |", "|---|---|---|---|"]
            lines += [f"| `{x.key}` | {human_size(x.size_bytes)} | `{x.sha256}` | {x.verified_by} |" for x in o.objects]
    if m.row_counts:
        lines += ["", "## Rows before the cutover", "", "| table | rows |", "|---|---:|"]
        lines += [f"| `{t}` | {n} |" for t, n in m.row_counts.items()]
    lines += ["", "## Steps", "", "| step | status | seconds | note |", "|---|---|---:|---|"]
    total = 0.0
    for s in m.steps:
        total += s.seconds or 0.0
        note = s.error or s.detail.get("reason") or s.detail.get("summary") or ""
        lines.append(f"| {s.name} | {s.status} | {s.seconds if s.seconds is not None else '-'} | {cell(note)} |")
    lines.append(f"| **total** | | {total:.3f} | |")
    if m.failure:
        lines += ["", "## Failure", "", f"Step `{m.failure['step']}`: {m.failure['error']}"]
        lines += _output(m.failure)
        lines.append("")
        lines.append(
            ("Production was touched: the rollback gives the original its name back (two renames; runbook "
             "section 6)." if m.strategy == "clone" else
             "Production was touched: restore from the backup above (runbook section 6).")
            if m.production_touched
            else "Production was not touched: nothing to roll back."
        )
    return "\n".join(lines) + "\n"


def write_pause_seconds(m: Manifest) -> float | None:
    """From the writes-paused step's start to the end of validation (the backend answering), when both ran."""
    paused, validated = m.step("writes-paused"), m.step("validate")
    if paused is None or validated is None or validated.ended_at is None or validated.status != "succeeded":
        return None
    return (datetime.fromisoformat(validated.ended_at) - datetime.fromisoformat(paused.started_at)).total_seconds()


INCIDENT_NAME = "incident.md"


def render_incident(m: Manifest) -> str:
    """Runbook 6.5: what failed, what was restored from where, and the state production is in now."""
    r = m.rollback
    failure = m.failure or {}
    lines = [f"# Incident: cutover of `{m.database}` {m.status}", ""]
    lines += [
        "| | |",
        "|---|---|",
        f"| failed step | `{failure.get('step', '-')}` |",
        f"| error | {cell(failure.get('error', '-'))} |",
        f"| production touched | {'yes' if m.production_touched else 'no'} |",
        f"| revision before the cutover | `{m.revision_before or 'none (legacy)'}` |",
    ]
    if r is None:
        lines.append("| rollback | not run |")
        return "\n".join(lines) + "\n"
    outcome = {
        "restored": "**restored from the backup**",
        "not-needed": "aborted before production; nothing to roll back",
        "failed": "**ROLLBACK FAILED: see below; a human is needed**",
        "running": "running",
        "not-started": "**not started: automatic rollback was off for this cutover; run it by hand**",
        "refused": "**REFUSED: production changed since the cutover; nothing restored; a human decides**",
    }.get(r.status, r.status)
    lines += [
        f"| rollback | {outcome} |",
        f"| rollback flow run | `{r.flow_run_id or '-'}` ({r.strategy}) |",
        f"| restored from | {cell(r.restored_from or '-')} |",
        f"| backup SHA-256 | `{r.restored_sha256 or '-'}` |",
        f"| failed database kept as | `{r.failed_database or '-'}` |",
        f"| revision now | `{r.revision_after or 'none (legacy)'}` |",
        f"| started / finished (UTC) | {r.started_at} / {r.finished_at or '-'} |",
    ]
    if r.error:
        lines += ["", f"**Rollback error:** {r.error}"]
    if r.changes_since:
        state = m.production_state
        heading = ("## Changes since the cutover, DISCARDED from production by this rollback" if r.discarded_changes
                   else "## Changes since the cutover let go of production")
        lines += ["", heading, ""]
        if state is not None:
            lines.append(f"Compared with production's counters {state.moment} ({state.taken_at}).")
        where = (f"They are kept in `{r.failed_database}`." if r.discarded_changes and r.failed_database
                 else "Production still holds them." if r.status == "refused" else "")
        lines += ["", *[f"- {line}" for line in r.changes_since], *([""] + [where] if where else [])]
    if r.steps:
        lines += ["", "## Rollback steps", "", "| step | status | started (UTC) | seconds | note |", "|---|---|---|---:|---|"]
        # Both, when a step has both: a failed start-backend must still name the command that failed.
        lines += [f"| {s.name} | {s.status} | {s.started_at} | {s.seconds if s.seconds is not None else '-'} | "
                  f"{cell('; '.join(x for x in (s.detail.get('summary'), s.error) if x))} |" for s in r.steps]
    if r.health:
        lines += ["", "## Health after", "", "| url | status |", "|---|---|"]
        lines += [f"| {cell(h['url'])} | {h['status']} |" for h in r.health]
    if r.attempts:
        lines += ["", "## Rollback runs that looked at this cutover", ""]
        lines += [f"- {a['at']}: flow run `{a.get('flow_run_id') or '-'}`: {a['outcome']}" for a in r.attempts]
    lines += _output(failure)
    trace = failure.get("trace")
    if trace:
        lines += ["", "## Failure log tail", "", "```text", trace.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _output(failure: dict) -> list[str]:
    """The failing command's own last lines (alembic's traceback ends with the database's error)."""
    output = failure.get("output")
    if not output:
        return []
    fence = "````" if "```" in output else "```"
    return ["", f"## What the failing command said (`{failure.get('step', '-')}`, last lines)", "", fence + "text",
            output.rstrip(), fence]
