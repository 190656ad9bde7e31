# studio-sink: Twilio Studio Event Streams webhook receiver.
#
#   docker build -t studio-sink .
#   docker run --rm -p 8080:8080 --read-only --tmpfs /tmp \
#     -e SINK_DATABASE_URL=postgresql://... studio-sink            # serve
#   docker run --rm -e SINK_DATABASE_URL=... studio-sink migrate   # one-off
#
# Both stages use the same base image: the venv's interpreter links
# (/opt/venv/bin/python3 -> /usr/local/bin/python3) must resolve in the final stage.
# Bump the tag in both places together (and pin the digest in your registry mirror).

FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# .dockerignore admits only what the package build needs.
COPY . /src
RUN sh /src/docker/install.sh /src /opt/venv


FROM python:3.11.14-slim-bookworm

LABEL org.opencontainers.image.title="studio-sink" \
      org.opencontainers.image.description="Twilio Studio Event Streams webhook sink storing events in Postgres" \
      org.opencontainers.image.licenses="MIT"

# A fixed numeric UID/GID (10001), matching the Helm chart's runAsUser.
RUN groupadd --system --gid 10001 sink \
    && useradd --system --no-log-init --uid 10001 --gid 10001 \
       --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sink

# Only the finished venv comes over: no compiler, no sources, no pip cache.
COPY --from=builder /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Nothing is written outside /tmp, so the root filesystem can be read-only.
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080

# Kubernetes ignores this (the chart has its own probes); it helps plain Docker and Compose.
# Python only: the image has no curl or wget.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SINK_PORT', '8080'), timeout=3)"]

ENTRYPOINT ["studio-sink"]
CMD ["serve"]
