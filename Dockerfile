# syntax=docker/dockerfile:1
# Multi-stage: node fetches the offline API-doc assets, a builder makes the wheels, and the
# runtime image holds only the installed app, running as a non-root user.

FROM node:20-bookworm-slim AS docs
WORKDIR /docs
COPY app/static/package.json app/static/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

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
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOST=0.0.0.0 PORT=8000
RUN useradd --create-home --uid 10001 mia
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
# the doc assets live next to the installed app package
COPY --from=docs /docs/node_modules /tmp/node_modules
RUN site=$(python -c "import app, os; print(os.path.dirname(app.__file__))") \
    && mkdir -p "$site/static" && mv /tmp/node_modules "$site/static/node_modules"
USER mia
WORKDIR /home/mia
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/health', timeout=4)"
CMD ["sh", "-c", "mia migrate && exec mia serve --host \"$HOST\" --port \"$PORT\""]
