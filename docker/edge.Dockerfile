# The edge agent: `patio edge run`. Build from the repository root:
#   docker build -f docker/edge.Dockerfile -t patio-edge .
# BASE: as in gateway.Dockerfile.
ARG BASE=python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

FROM ${BASE} AS build
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir --upgrade pip
COPY pyproject.toml README.md /src/
RUN /opt/venv/bin/pip install --no-cache-dir /src && /opt/venv/bin/pip uninstall -y patio-ledger
COPY ledger /src/ledger
COPY contracts /src/contracts
COPY gateway /src/gateway
COPY edge /src/edge
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps /src

FROM ${BASE}
RUN useradd --system --uid 10002 --user-group --home-dir /var/lib/patio-edge --create-home patio-edge \
    && chmod 0700 /var/lib/patio-edge
COPY --from=build /opt/venv /opt/venv
COPY docker/edge-entrypoint.sh /usr/local/bin/patio-edge-entrypoint
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 W1THERMSENSOR_NO_KERNEL_MODULE=1
USER patio-edge
WORKDIR /var/lib/patio-edge
# Unhealthy when the outbox holds dead letters (entries the gateway refused for good).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD patio edge status --config /var/lib/patio-edge/edge.toml
ENTRYPOINT ["patio-edge-entrypoint"]
CMD ["patio", "edge", "run", "--config", "/var/lib/patio-edge/edge.toml"]
