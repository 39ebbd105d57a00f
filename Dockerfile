# vmd container image: one s390x VM per container.
#
#   docker build -t vmd .
#   docker run -d --name vm1 --init -p 127.0.0.1:4480:4480 -p 127.0.0.1:2300:2300 vmd
#   docker exec vm1 cat /run/vmd/token          # bearer token for the API
#
# Ports: 4480 JSON-RPC/HTTP API, 2300 tn3270 terminal.  QMP listens on the unix
# socket /run/vmd/qmp.sock inside the container; for QMP over TCP use a config
# whose qmp0 chardev has host/port instead of path (see docker/vm.toml) and
# publish that port to the host's loopback only -- QMP has no authentication.
# Another VM: mount its TOML over /etc/vmd/vm.toml, or give vmd a QEMU-style
# command line instead of the default CMD (docker run vmd -m 512M ...).
#
# The build needs only PyPI (for the dependencies pinned in pyproject.toml)
# and Debian's archive (a C compiler, for dependencies without a prebuilt
# wheel on the target architecture, e.g. uvloop on s390x).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: wheels for vmd and every dependency ---------------------------
FROM ${PYTHON_IMAGE} AS build

# Compiler for source-only dependencies.  Versions are not pinned (DL3008):
# Debian's security updates replace the exact versions, so a pin would break
# the build within weeks; the stage is thrown away, only wheels are kept.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
# README* may be absent; pyproject.toml names README.md as the long description.
COPY pyproject.toml README* ./
COPY vmd ./vmd
# Runtime dependencies come pinned from pyproject.toml; the build backend
# (setuptools) from its [build-system] table.
RUN pip wheel --wheel-dir /wheels .

# ---- runtime ---------------------------------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="vmd" \
      org.opencontainers.image.description="IBM Z (s390x) virtual machine daemon speaking QEMU's command line and QMP" \
      org.opencontainers.image.licenses="GPL-2.0-or-later"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    RUNTIME_DIRECTORY=/run/vmd

# Non-root user vmd (uid/gid 10001): owns the runtime directory (token, QMP
# socket) and the state volume (disk images).
RUN groupadd --system --gid 10001 vmd \
    && useradd --system --uid 10001 --gid vmd --no-create-home \
       --home-dir /var/lib/vmd --shell /usr/sbin/nologin vmd \
    && install -d -o vmd -g vmd -m 0700 /run/vmd /var/lib/vmd \
    && install -d -m 0755 /etc/vmd

# Install from the wheels only (no index): exactly what the build stage
# resolved.  The bind mount keeps the wheels out of the image's layers.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/vmd-*.whl

COPY docker/vm.toml /etc/vmd/vm.toml

VOLUME ["/var/lib/vmd"]
WORKDIR /var/lib/vmd
USER 10001:10001

EXPOSE 2300 4480

# Health = the API answers query-status.  This relies on vmctl accepting
# "--http URL" and "--token-file PATH" (the API client mode of vmctl) and
# exiting non-zero when the call fails; the token file is the [api] token_file
# of docker/vm.toml.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["vmctl", "--http", "http://127.0.0.1:4480", "--token-file", "/run/vmd/token", "query-status"]

# vmd treats SIGTERM like QEMU does ("quit": SHUTDOWN event, clean exit).
# Run with --init (or tini) if the VM configuration spawns helper processes.
STOPSIGNAL SIGTERM
ENTRYPOINT ["vmd"]
CMD ["--config", "/etc/vmd/vm.toml"]
