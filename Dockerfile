# One image for every followthrough process: `followthrough api` (the default),
# `followthrough worker` and `followthrough migrate`. All settings come from
# FOLLOWTHROUGH_* environment variables (see followthrough/config/settings.py).
#
# Two stages: the builder installs into a virtual environment, which the runtime stage copies alone (no pip
# cache, no build tools, no source tree).

FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# The pinned dependencies first, in a layer of their own that a code change does not rebuild.
# Refresh the lock when pyproject.toml's dependencies change (docs/operations.md, "Production").
COPY requirements/image.lock requirements/image.lock
RUN pip install --no-cache-dir --require-hashes -r requirements/image.lock

# What the image installs: the locked dependencies above, then the project itself with the extras its
# services need, no dependency of its own (all are in the lock): browser, for browser tasks (Playwright
# drives Debian's Chromium), and tracing, so FOLLOWTHROUGH_TRACING=otlp works without a rebuild. No `dev`
# extra: the Temporal CLI and dev server are not for production.
COPY . .
# The project from this source tree, not a package to pin (its dependencies are pinned in the lock).
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --no-deps ".[browser,tracing]" \
    && pip check


FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH

RUN groupadd --system --gid 10001 followthrough \
    && useradd --system --uid 10001 --gid followthrough --create-home \
       --home-dir /home/followthrough --shell /usr/sbin/nologin followthrough

# Debian's Chromium for browser tasks (the worker drives it with Playwright; nothing is downloaded at run time).
# Not pinned to a version: Debian replaces Chromium's package with each security release, and a pinned one
# would stop the image building once the archive drops it.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium \
    && rm -rf /var/lib/apt/lists/*

COPY --from=builder /opt/venv /opt/venv

# The working folder is where a SQLite mirror would go when no
# FOLLOWTHROUGH_DATABASE_URL is set; the compose stack always sets one.
WORKDIR /app
RUN chown followthrough:followthrough /app
# By number, so a cluster's "run as non-root" check can verify it without the image's /etc/passwd.
USER 10001:10001

# Inside a container the API must listen on all interfaces to be reachable.
ENV FOLLOWTHROUGH_API_HOST=0.0.0.0 \
    FOLLOWTHROUGH_API_PORT=8000 \
    FOLLOWTHROUGH_DATA_DIR=/app/.followthrough
EXPOSE 8000

CMD ["followthrough", "api"]
