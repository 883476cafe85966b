# The compose stack's other services, from Debian packages (no registry image needed):
#   docker build -f docker/services.Dockerfile --target postgres|mosquitto|proxy|anvil .
# BASE: Debian bookworm, pinned by digest; the tests pass the image docker/base.sh builds.
ARG BASE=debian:12.2-slim@sha256:2bc5c236e9b262645a323e9088dfa3bb1ecb16cc75811daf40a23a824d665be9

FROM ${BASE} AS postgres
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        postgresql-15 && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data
COPY docker/postgres-entrypoint.sh /usr/local/bin/patio-postgres
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data PGPORT=5432
USER postgres
HEALTHCHECK --interval=2s --timeout=3s --retries=30 CMD pg_isready -h 127.0.0.1 -p "$PGPORT" -q
CMD ["patio-postgres"]

FROM ${BASE} AS mosquitto
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        mosquitto && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /mosquitto/data && chown mosquitto:mosquitto /mosquitto/data
COPY docker/mosquitto.conf /etc/mosquitto/patio.conf
ENV MQTT_PORT=1883
USER mosquitto
HEALTHCHECK --interval=2s --timeout=3s --retries=30 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/$MQTT_PORT"]
# The shipped config listens on 1883; with host networking the port comes from MQTT_PORT.
CMD ["sh", "-c", "sed \"s/^listener 1883 /listener $MQTT_PORT /\" /etc/mosquitto/patio.conf > /tmp/mosquitto.conf && exec mosquitto -c /tmp/mosquitto.conf"]

FROM ${BASE} AS proxy
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        nginx-light && rm -rf /var/lib/apt/lists/* \
    && chown -R www-data:www-data /var/lib/nginx /var/log/nginx
COPY docker/nginx.conf /etc/nginx/nginx.conf
USER www-data
HEALTHCHECK --interval=2s --timeout=3s --retries=30 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/18000"]
CMD ["nginx", "-g", "daemon off;"]

# anvil from npm's @foundry-rs/anvil (the version package-lock.json pins), copied in:
# `make node_modules/.installed` first.
FROM ${BASE} AS anvil
COPY node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil /usr/local/bin/anvil
RUN useradd --system --uid 10003 anvil
USER anvil
ENV ANVIL_PORT=8545
HEALTHCHECK --interval=2s --timeout=3s --retries=30 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/$ANVIL_PORT"]
CMD ["sh", "-c", "exec anvil --host 127.0.0.1 --port \"$ANVIL_PORT\""]
