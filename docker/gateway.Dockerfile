# The gateway: `patio gateway serve`. Build from the repository root:
#   docker build -f docker/gateway.Dockerfile -t patio-gateway .
# BASE defaults to the official Python image pinned by digest; any Debian bookworm image with
# python3 and python3-venv works (the tests use one built by docker/base.sh, no registry).
ARG BASE=python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

FROM ${BASE} AS build
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir --upgrade pip
# Dependencies first, from pyproject.toml alone: this layer stays cached until they change.
COPY pyproject.toml README.md /src/
RUN /opt/venv/bin/pip install --no-cache-dir /src && /opt/venv/bin/pip uninstall -y patio-ledger
COPY ledger /src/ledger
COPY contracts /src/contracts
COPY gateway /src/gateway
COPY edge /src/edge
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps /src

FROM ${BASE}
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/patio --create-home patio \
    && chmod 0700 /var/lib/patio
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PATIO_DATA_DIR=/var/lib/patio PORT=8000 PYTHONUNBUFFERED=1
USER patio
WORKDIR /var/lib/patio
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD python3 -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ['PORT'], timeout=2)"
CMD ["sh", "-c", "exec patio gateway serve --host \"${HOST:-0.0.0.0}\" --port \"$PORT\""]
