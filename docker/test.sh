#!/usr/bin/env bash
# `make docker-test`: build the images on a local base, bring the compose stack up, check it
# end to end through the proxy (docker/smoke.py), kill a gateway and check again, bring it
# all down. Needs a running Docker engine, docker-compose, debootstrap, and the host .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PROXY=http://127.0.0.1:18000
COMPOSE=(docker-compose -f docker/compose.yaml -p patio-test)
export PATH="$PWD/.venv/bin:$PATH"

PATIO_PYTHON_BASE=$(docker/base.sh)
export PATIO_PYTHON_BASE PATIO_DEBIAN_BASE=$PATIO_PYTHON_BASE

down() {
  code=$?
  if [ "$code" != 0 ]; then
    "${COMPOSE[@]}" ps || true
    "${COMPOSE[@]}" logs --tail=40 || true
  fi
  "${COMPOSE[@]}" down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1 || true
  exit "$code"
}
trap down EXIT
"${COMPOSE[@]}" down --volumes --remove-orphans >/dev/null 2>&1 || true  # a run cut short

step() { echo "docker-test: $* ($(date -u +%T))"; }
step "building images on $PATIO_PYTHON_BASE"
"${COMPOSE[@]}" build --quiet
step "starting PostgreSQL, Mosquitto, anvil, two gateways, the proxy"
"${COMPOSE[@]}" up -d proxy
curl -sS --fail --retry 60 --retry-delay 1 --retry-connrefused -o /dev/null "$PROXY/readyz"
TOKEN=$("${COMPOSE[@]}" exec -T gateway-1 patio admin create-token | tail -1)

# Each edge device creates its key on first start, in its volume; register its public key.
edges=()
for n in 1 2 3; do
  pub=$("${COMPOSE[@]}" run --rm --no-deps -T edge-$n python3 -c \
    'from pathlib import Path; from ledger.keys import NamedKey; print(NamedKey.load(Path("/var/lib/patio-edge/device.key")).public_key_b64)' \
    | tail -1)
  edges+=(--edge "edge-$n=$pub")
done

step "checking through the proxy"
python docker/smoke.py --proxy "$PROXY" --token "$TOKEN" "${edges[@]}" \
  --then "${COMPOSE[*]} up -d --no-deps edge-1 edge-2 edge-3" \
  --kill "${COMPOSE[*]} kill -s SIGKILL gateway-1 >/dev/null 2>&1 && echo 'killed gateway-1 (SIGKILL)'" \
  --before 20 --after 50

# gateway-1 holds the MQTT ingest: edge-3's messages wait in the broker (QoS 1, a persistent
# session) until it is back, then are acknowledged.
step "restarting gateway-1"
"${COMPOSE[@]}" start gateway-1
curl -sS --fail --retry 60 --retry-delay 1 --retry-connrefused -o /dev/null http://127.0.0.1:18001/readyz

step "waiting for every edge device to have entries acknowledged"
for n in 1 2 3; do
  for _ in $(seq 60); do
    acked=$("${COMPOSE[@]}" exec -T edge-$n patio edge status --json --config /var/lib/patio-edge/edge.toml \
      | python -c 'import json, sys; print(json.load(sys.stdin)["acked"])')
    [ "$acked" -gt 0 ] && break
    sleep 1
  done
  [ "$acked" -gt 0 ] || { echo "docker-test: FAILED edge-$n has nothing acknowledged"; exit 1; }
  echo "edge-$n: $acked entries acknowledged"
done
step "OK"
