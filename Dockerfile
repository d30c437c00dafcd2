# syntax=docker/dockerfile:1
# Multi-stage: node fetches the npm assets (offline API docs; the Uniswap V2 artifacts whose ABIs
# the treasury reads), a builder compiles the Python wheels, and the runtime image holds the app
# with those, running as a non-root user.

FROM node:20-bookworm-slim AS assets
WORKDIR /src
COPY app/static/package.json app/static/package-lock.json app/static/
COPY contracts/package.json contracts/package-lock.json contracts/
RUN cd app/static && npm ci --omit=dev --no-audit --no-fund --loglevel=error \
    && cd ../../contracts && npm ci --omit=dev --no-audit --no-fund --loglevel=error

FROM python:3.11-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY chain ./chain
COPY jobs ./jobs
COPY miner ./miner
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm AS runtime
# ENV=production: the image refuses to serve without PUBLIC_URL or with a development CHAIN_ID.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOST=0.0.0.0 PORT=8000 ENV=production
RUN useradd --create-home --uid 10001 mia
WORKDIR /app
COPY --from=build /wheels /wheels
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY chain ./chain
COPY jobs ./jobs
COPY miner ./miner
COPY contracts/build ./contracts/build
COPY --from=assets /src/app/static/node_modules ./app/static/node_modules
COPY --from=assets /src/contracts/node_modules ./contracts/node_modules
# Installed in place (editable), so the code finds contracts/ and app/static/ beside it.
RUN pip install --no-cache-dir --find-links /wheels -e . && rm -rf /wheels && chown mia:mia /app
USER mia
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/health', timeout=4)"
# The same image runs the worker: override the command with `mia worker`.
CMD ["sh", "-c", "mia migrate && exec mia serve --host \"$HOST\" --port \"$PORT\""]
