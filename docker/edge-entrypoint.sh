#!/bin/sh
# A simulated device: writes its edge.toml from the environment and creates its key on the
# first start (both kept in the /var/lib/patio-edge volume), then runs the command.
set -eu
DIR=/var/lib/patio-edge
CONFIG=$DIR/edge.toml
if [ ! -f "$CONFIG" ]; then
  cat > "$CONFIG" <<TOML
device_id = "${DEVICE_ID:?set DEVICE_ID}"
community = "${COMMUNITY:?set COMMUNITY}"
key_file = "$DIR/device.key"
data_dir = "$DIR"

[agent]
time_scale = ${TIME_SCALE:-60}

[delivery]
transport = "${TRANSPORT:-http}"
url = "${GATEWAY_URL:?set GATEWAY_URL}"
batch_size = 100
backoff_base_s = 1
backoff_max_s = 5

[mqtt]
host = "127.0.0.1"
port = ${MQTT_PORT:-1883}
ack_timeout_s = 10

[[sensor]]
driver = "simulator"
name = "boiler"
kind = "boiler"
seed = ${SEED:-1}
interval_s = 10
TOML
fi
if [ ! -f "$DIR/device.key" ]; then
  patio edge keygen --device-id "$DEVICE_ID" --out "$DIR/device.key" >/dev/null 2>&1
fi
exec "$@"
