# A pg-cutover worker: Python, the PostgreSQL client, the project installed, a process worker on the pg-cutover pool.
#
#   docker build --build-arg PG_MAJOR=16 -t pg-cutover-worker .      # or: docker compose up worker
#
# tests/test_worker_image.py builds the environment this file describes without a Docker engine: it copies the build
# context (.dockerignore applied) as the COPY lines say, runs the `python -m pip install` RUN line in a fresh venv,
# takes the client from the host's /usr/lib/postgresql/<PG_MAJOR>/bin and runs the CMD. Keep the install on that one
# RUN line and the other RUN lines to system packages and users, which the test cannot repeat.

# bookworm, named: the PGDG setup script shipped in its postgresql-common knows this release's codename.
FROM python:3.11-slim-bookworm

# The client's major must be at least the production server's: pg_dump refuses to dump a newer server, and
# preflight (pg_cutover/pg/tools.py) refuses an older client, whose restore list can silently miss object kinds.
# A newer client works with older servers, so one image at the fleet's newest major serves all of it.
ARG PG_MAJOR=15

# The versioned bin directory first: Debian's /usr/bin/pg_dump is a wrapper that picks a client by its own rules,
# and preflight should read exactly PG_MAJOR from `pg_dump --version`.
ENV PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Debian carries one PostgreSQL major per release; PGDG's repository has every supported one.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates postgresql-common \
    && /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y \
    && apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}" \
    && rm -rf /var/lib/apt/lists/*

# Flows run as a user that owns only the backup directory (a volume in docker-compose.yml): dumps of production are
# written mode 0600 in a 0700 directory, and nothing else in the image is writable by the worker.
RUN useradd --create-home --uid 10001 cutover \
    && install -d -o cutover -g cutover -m 0700 /backups

COPY . /src
RUN python -m pip install --no-cache-dir "/src[aws]" && rm -rf /src

# The working directory holds only what is read as files: prefect.yaml and deploy.py (the deployments) and the
# example app's migrations (CUTOVER_ALEMBIC_DIR). Not the package's source: Prefect imports a run's entrypoint with
# this directory first on sys.path, where a pg_cutover/ without its flows/ would shadow the installed package.
WORKDIR /app
COPY prefect.yaml ./
COPY deployments/ deployments/
COPY examples/ examples/

USER cutover
CMD ["deployments/worker-entrypoint.sh"]
