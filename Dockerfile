# One image for every followthrough process: `followthrough api` (the default),
# `followthrough worker` and `followthrough migrate`. All settings come from
# FOLLOWTHROUGH_* environment variables (see followthrough/settings.py).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 followthrough \
    && useradd --system --uid 10001 --gid followthrough --create-home \
       --home-dir /home/followthrough --shell /usr/sbin/nologin followthrough

# Debian's Chromium for browser tasks (the worker drives it with Playwright; nothing is downloaded at run time).
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
RUN pip install . \
    && rm -rf /src/build /src/*.egg-info

# The working folder is where a SQLite mirror would go when no
# FOLLOWTHROUGH_DATABASE_URL is set; the compose stack always sets one.
WORKDIR /app
RUN chown followthrough:followthrough /app
USER followthrough

# Inside a container the API must listen on all interfaces to be reachable.
ENV FOLLOWTHROUGH_API_HOST=0.0.0.0 \
    FOLLOWTHROUGH_API_PORT=8000 \
    FOLLOWTHROUGH_DATA_DIR=/app/.followthrough
EXPOSE 8000

CMD ["followthrough", "api"]
