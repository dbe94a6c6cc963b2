#!/bin/sh
# The pg-cutover worker image's command (Dockerfile, docker-compose.yml's worker service); tests/test_worker_image.py
# runs this same file from a fresh venv. deploy.py is idempotent, so running it on every start brings the server's
# pool, deployments and automations up to this image's prefect.yaml before the worker takes any run.
set -eu
# deploy.py and `prefect deploy` read prefect.yaml from here, and record it as the runs' working directory.
cd "$(dirname "$0")/.."
# CUTOVER_NOTIFY_BLOCK (<block type>/<name>): pg-cutover's events sent through that notification block.
python deployments/deploy.py ${CUTOVER_NOTIFY_BLOCK:+--notify "$CUTOVER_NOTIFY_BLOCK"}
# exec: the worker becomes the container's main process, so `docker stop` reaches it and it can finish cleanly.
exec prefect worker start --pool pg-cutover "$@"
