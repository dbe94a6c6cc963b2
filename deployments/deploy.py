"""Register pg-cutover with a Prefect server: work pool, deployments from prefect.yaml, automations.

    PREFECT_API_URL=http://prefect:4200/api python deployments/deploy.py [--notify BLOCK]

Idempotent: run it again after changing prefect.yaml. Uses the Prefect CLI of this
environment for the pool and the deployments, so what it does is what an operator would type.
`--notify BLOCK` (a Prefect notification block: Slack, Microsoft Teams, email, a custom webhook;
`<block type slug>/<name>` or just its name) creates the automation that sends pg-cutover's own
events through it: a run waiting for approval, a failed cutover, every rollback's ending.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POOL = "pg-cutover"
PREFECT = [sys.executable, "-m", "prefect"]
NOTIFY_AUTOMATION = "pg-cutover-notifications"
# Rendered by the server for each event (Jinja): what a person needs on a phone, and the run's link.
SUBJECT = "pg-cutover: {{ event.event }} for {{ event.payload.database }}"
BODY = ("{{ event.event }}: {{ event.payload.database }} on {{ event.payload.host }}\n"
        "{{ event.payload.outcome }}\n"
        "Run: {{ event.payload.flow_run_name }} {{ event.payload.ui_url }}")


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*PREFECT, "--no-prompt", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        sys.exit(f"prefect {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def notification_block(client, ref: str):
    """The block document `ref` names (`slug/name` or a unique name), when it can send notifications."""
    slug, _, name = ref.rpartition("/")
    found = [doc for doc in client.read_block_documents() if doc.name == name
             and (not slug or (doc.block_type and doc.block_type.slug == slug))]
    notifying = [doc for doc in found if doc.block_schema and "notify" in (doc.block_schema.capabilities or [])]
    if len(notifying) != 1:
        what = ("is not a notification block" if found and not notifying else
                "names several blocks; add the type, e.g. custom-webhook/" + name if len(notifying) > 1 else
                "does not exist on this Prefect server")
        sys.exit(f"--notify {ref}: {what}; expected the name of a Prefect notification block (Slack, Microsoft "
                 "Teams, email, custom webhook, ...) as <block type slug>/<name>, e.g. custom-webhook/ops.")
    return notifying[0]


def create_notifications(ref: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    from pg_cutover.tasks.events import NOTIFY, PREFIX

    with get_client(sync_client=True) as client:
        block = notification_block(client, ref)
        for old in client.read_automations_by_name(NOTIFY_AUTOMATION):
            client.delete_automation(old.id)
        client.create_automation(AutomationCore(
            name=NOTIFY_AUTOMATION,
            description=f"pg-cutover's events that need a person, sent through the block {ref}.",
            trigger=EventTrigger(expect={f"{PREFIX}.{name}" for name in NOTIFY},
                                 match={"prefect.resource.id": f"{PREFIX}.database.*"},
                                 posture=Posture.Reactive, threshold=1, within=0),
            actions=[SendNotification(block_document_id=block.id, subject=SUBJECT, body=BODY)],
        ))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notify", metavar="BLOCK", help="a Prefect notification block to send pg-cutover's events "
                        "through (<block type slug>/<name>, e.g. custom-webhook/ops)")
    args = parser.parse_args(argv)
    if args.notify:  # a bad block name is refused before anything is created
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            notification_block(client, args.notify)
    if run("work-pool", "inspect", POOL, check=False).returncode != 0:
        run("work-pool", "create", POOL, "--type", "process")
    run("deploy", "--all")
    existing = run("automation", "inspect", "pg-cutover-zombie-detection", check=False)
    if existing.returncode != 0 or "not found" in existing.stdout.lower():
        run("automation", "create", "--from-file", str(ROOT / "deployments" / "zombie-detection.yaml"))
    if args.notify:
        create_notifications(args.notify)
    print(f"Work pool {POOL!r}, deployments cutover/cutover, cutover/fleet-target, fleet/fleet, finalize/finalize, "
          "restore-drill/restore-drill and rollback/rollback, zombie detection"
          + (f", notifications through {args.notify}" if args.notify else "") + ": ready.")
    print(f"Start a worker: prefect worker start --pool {POOL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
