"""Mirror benchmark: the verified off-site copy, plain and encrypted, against a plain boto3 upload_file.

Three uploads of the same file to the same S3 HTTP server (moto's, on loopback), in rotating order,
each in a fresh subprocess so its peak RSS is its own:
- plain: boto3's upload_file with its defaults;
- store: S3Store.upload_backup without recipients (SHA-256 per part, proven afterwards);
- age: S3Store.upload_backup with an age recipient (CUTOVER_ENCRYPTION=age): encrypted, proven, uploaded.
Prints a markdown table.

    .venv/bin/python bench/mirror_bench.py --size-mb 1024 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
kind, endpoint, bucket, path, key, sha, recipient = sys.argv[1:8]
import boto3
started = time.monotonic()
if kind == "plain":
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").upload_file(path, bucket, key)
    extra = ""
else:
    from pg_cutover.storage.s3 import S3Store
    store = S3Store(bucket=bucket, endpoint_url=endpoint, recipients=(recipient,) if kind == "age" else ())
    obj = store.upload_backup(Path(path), key, sha)
    extra = obj.verified_by
seconds = time.monotonic() - started
print(json.dumps({"seconds": seconds, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "child_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "verified": extra}))
"""


def make_file(path: Path, size_mb: int) -> None:
    with open(path, "wb") as fh:
        for _ in range(size_mb):
            fh.write(os.urandom(1024 * 1024))


KINDS = ("plain", "store", "age")
LABELS = {"plain": "boto3 upload_file (defaults)",
          "store": "S3Store.upload_backup, plain (SHA-256 per part, verified)",
          "age": "S3Store.upload_backup, CUTOVER_ENCRYPTION=age (encrypted, verified)"}


def child(kind: str, endpoint: str, bucket: str, path: Path, sha: str, recipient: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", CHILD, kind, endpoint, bucket, str(path), f"{kind}.bin", sha, recipient],
                         env=env, capture_output=True, text=True, check=True, timeout=3600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import boto3

    from pg_cutover.digest import sha256_file
    from pg_cutover.launcher.embedded import s3_server

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret")
    from pyrage import x25519

    recipient = str(x25519.Identity.generate().to_public())
    with tempfile.TemporaryDirectory() as tmp, s3_server() as endpoint:
        path = Path(tmp) / "dump.bin"
        make_file(path, args.size_mb)
        sha = sha256_file(path)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="bench")
        results: dict[str, list[dict]] = {k: [] for k in KINDS}
        for i in range(args.runs):
            for kind in KINDS[i % 3:] + KINDS[:i % 3]:  # each kind first, middle and last in turn
                results[kind].append(child(kind, endpoint, "bench", path, sha, recipient))
                for obj in s3.list_objects_v2(Bucket="bench").get("Contents", []):
                    s3.delete_object(Bucket="bench", Key=obj["Key"])  # moto keeps objects in memory
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in results.items()}
    rss = {k: max(r["max_rss_mb"] for r in v) for k, v in results.items()}
    child_rss = {k: max(r["child_rss_mb"] for r in v) for k, v in results.items()}  # the age path's encrypting process

    def ratios(num: str, den: str) -> tuple[float, float, float]:
        rs = [n["seconds"] / d["seconds"] for n, d in zip(results[num], results[den])]
        return statistics.median(rs), min(rs), max(rs)

    print(f"## Mirror upload, {args.size_mb} MiB, {args.runs} runs each ({datetime.now(timezone.utc):%Y-%m-%d})\n")
    print(f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}; "
          f"S3: moto server on loopback. Command: `.venv/bin/python bench/mirror_bench.py --size-mb {args.size_mb} --runs {args.runs}`\n")
    print("| upload | median s | runs s | peak RSS MB (its child process) |\n|---|---:|---|---:|")
    for k in KINDS:
        runs = ", ".join(f"{r['seconds']:.2f}" for r in results[k])
        seal = f" (+{child_rss[k]:.0f})" if child_rss[k] >= 1 else ""
        print(f"| {LABELS[k]} | {med[k]:.2f} | {runs} | {rss[k]:.0f}{seal} |")
    print()
    for num, den, target in (("store", "plain", 1.10), ("age", "store", 1.30)):
        ratio, low, high = ratios(num, den)
        print(f"- Ratio {num}/{den}: median {ratio:.2f} (min {low:.2f}, max {high:.2f}); target <= {target:.2f}: "
              f"{'met' if ratio <= target else 'NOT met'}.")
    worst = max(rss["store"], rss["age"] + child_rss["age"])
    print(f"- Peak RSS (store, age with its encrypting process) {rss['store']:.0f} / "
          f"{rss['age'] + child_rss['age']:.0f} MB; target <= 300 MB: "
          f"{'met' if worst <= 300 else 'NOT met'}.")
    print(f"- Verification: {results['store'][0]['verified']}; encrypted: {results['age'][0]['verified']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
