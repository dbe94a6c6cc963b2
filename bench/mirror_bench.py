"""Mirror benchmark: S3Store.upload_file (verified) against a plain boto3 upload_file.

Both upload the same file to the same S3 HTTP server (moto's, on loopback), alternating,
each in a fresh subprocess so its peak RSS is its own. Prints a markdown table.

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
kind, endpoint, bucket, path, key, sha = sys.argv[1:7]
import boto3
started = time.monotonic()
if kind == "plain":
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").upload_file(path, bucket, key)
    extra = ""
else:
    from pg_cutover.storage.s3 import S3Store
    obj = S3Store(bucket=bucket, endpoint_url=endpoint).upload_file(Path(path), key, sha)
    extra = obj.verified_by
seconds = time.monotonic() - started
print(json.dumps({"seconds": seconds, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "verified": extra}))
"""


def make_file(path: Path, size_mb: int) -> None:
    with open(path, "wb") as fh:
        for _ in range(size_mb):
            fh.write(os.urandom(1024 * 1024))


def child(kind: str, endpoint: str, bucket: str, path: Path, sha: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", CHILD, kind, endpoint, bucket, str(path), f"{kind}.bin", sha],
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
    with tempfile.TemporaryDirectory() as tmp, s3_server() as endpoint:
        path = Path(tmp) / "dump.bin"
        make_file(path, args.size_mb)
        sha = sha256_file(path)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="bench")
        results: dict[str, list[dict]] = {"plain": [], "store": []}
        for i in range(args.runs):
            for kind in (("plain", "store") if i % 2 == 0 else ("store", "plain")):
                results[kind].append(child(kind, endpoint, "bench", path, sha))
                s3.delete_object(Bucket="bench", Key=f"{kind}.bin")  # moto keeps objects in memory
        ratios = [s["seconds"] / p["seconds"] for p, s in zip(results["plain"], results["store"])]
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in results.items()}
    rss = {k: max(r["max_rss_mb"] for r in v) for k, v in results.items()}
    ratio = statistics.median(ratios)
    print(f"## Mirror upload, {args.size_mb} MiB, {args.runs} runs each ({datetime.now(timezone.utc):%Y-%m-%d})\n")
    print(f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}; "
          f"S3: moto server on loopback. Command: `.venv/bin/python bench/mirror_bench.py --size-mb {args.size_mb} --runs {args.runs}`\n")
    print("| upload | median s | runs s | peak RSS MB |\n|---|---:|---|---:|")
    for k, label in (("plain", "boto3 upload_file (defaults)"), ("store", "S3Store.upload_file (SHA-256 per part, verified)")):
        runs = ", ".join(f"{r['seconds']:.2f}" for r in results[k])
        print(f"| {label} | {med[k]:.2f} | {runs} | {rss[k]:.0f} |")
    print(f"\nRatio store/plain: median {ratio:.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}); "
          f"target <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'}. Peak RSS target < 300 MB: "
          f"{'met' if rss['store'] < 300 else 'NOT met'}.")
    print(f"Verification: {results['store'][0]['verified']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
