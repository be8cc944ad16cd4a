# syntax=docker/dockerfile:1
# One image recipe for every service (and the development inbox). Build from the repository root:
#   docker build --build-arg SERVICE=issuer --build-arg HTTP_PORT=8001 -t convocations/issuer:dev .
#   docker build --build-arg SERVICE=devinbox --build-arg SERVICE_DIR=tools/devinbox -t convocations/devinbox:dev .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: the runtime dependencies only, each checked against the hash in the lock ---
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements/runtime.lock /tmp/runtime.lock
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/runtime.lock

# --- runtime: the venv, the shared package and this one service; nothing else ---
FROM ${PYTHON_IMAGE}
# SERVICE: the folder name under services/ (issuer, mailer, sms-gateway, access-portal); its Python
# package is the same name with underscores.
ARG SERVICE
ARG SERVICE_DIR=services/${SERVICE}
ARG HTTP_PORT=8000
LABEL org.opencontainers.image.title="convocations-${SERVICE}" \
      org.opencontainers.image.source="Convocations: secure delivery of hospital appointment letters"
# HTTP_HOST: the services bind 127.0.0.1 unless told otherwise, which is unreachable from
# outside a container (probes, Prometheus, other services).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=${HTTP_PORT} \
    SERVICE=${SERVICE} \
    PYTHONPATH=/app:/app/${SERVICE_DIR}
# Only the issuer renders PDFs: WeasyPrint (tagged PDF/UA-1) loads pango, harfbuzz's subsetter and
# fontconfig at run time, and sets the letter in DejaVu Sans.
# hadolint ignore=DL3008
RUN if [ "$SERVICE" = "issuer" ]; then \
      apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core \
        libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 \
      && rm -rf /var/lib/apt/lists/*; \
    fi
# Fixed uid/gid 10001: the Kubernetes manifests set runAsUser to the same value. The key store's volume
# is mounted at /var/lib/key-store: a new compose volume takes this directory's owner.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app \
 && if [ "$SERVICE" = "key-store" ]; then install -d -o 10001 -g 10001 -m 0700 /var/lib/key-store; fi
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# Code stays root-owned and read-only for the app user; bytecode is compiled now because the
# root filesystem is read-only at run time.
COPY shared/ /app/shared/
COPY ${SERVICE_DIR}/ /app/${SERVICE_DIR}/
RUN test -n "$SERVICE" && python -m compileall -q /app
USER 10001:10001
EXPOSE ${HTTP_PORT}
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['HTTP_PORT'], timeout=2)"]
# The package is the folder's name with underscores (sms-gateway -> sms_gateway).
CMD ["sh", "-c", "exec python -m \"$(echo \"$SERVICE\" | tr - _)\""]
