#!/usr/bin/env bash
# `make run-stack`: the whole pipeline on this machine, against the local stack
# (`make up`), with a simulated fleet. Every role runs as its own process, as
# it would in production; logs go to $AMS_STACK_DIR/logs/run/.
#
#   AMS_RUN_DEVICES   simulated devices (default 1000)
#   AMS_RUN_DURATION  how long the fleet runs (default 0: until Ctrl-C)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
stack=${AMS_STACK_DIR:-$root/.stack}
bin=$root/bin/ams
dev=$stack/dev
logs=$stack/logs/run
mkdir -p "$dev" "$logs"
devices=${AMS_RUN_DEVICES:-1000}
duration=${AMS_RUN_DURATION:-0}

# The stack's connection settings (deploy/stack/up.sh writes them): with an
# authenticated Mosquitto, ingest and egress log in with its role account
# (AMS_MQTT_USERNAME / AMS_MQTT_PASSWORD) and the simulator gives each device
# its account (password = sn, as registered below) through the broker's
# dynamic-security administrator.
if [ -f "$stack/env" ]; then
  set -a
  # shellcheck source=/dev/null
  . "$stack/env"
  set +a
fi
sim_auth=()
if [ -n "${AMS_MQTT_DYNSEC_USERNAME:-}" ]; then
  sim_auth=(-sim-device-password '{sn}' -sim-dynsec-admin "$AMS_MQTT_DYNSEC_USERNAME"
    -sim-dynsec-admin-password-file "$AMS_MQTT_DYNSEC_PASSWORD_FILE")
fi

# Secrets for this machine only: the cloud's RSA key pair (1024-bit PKCS#1, as
# the firmware in the field expects), the key-encryption key of the state
# changelog, and the stream-URL signing secret.
if [ ! -s "$dev/cloud_rsa_private.pem" ]; then
  openssl genrsa -traditional -out "$dev/cloud_rsa_private.pem" 1024 2>/dev/null
  openssl rsa -in "$dev/cloud_rsa_private.pem" -RSAPublicKey_out -out "$dev/cloud_rsa_public.pem" 2>/dev/null
fi
[ -s "$dev/kek.hex" ] || openssl rand -hex 32 >"$dev/kek.hex"
[ -s "$dev/stream.secret" ] || openssl rand -hex 32 >"$dev/stream.secret"
[ -s "$dev/upload.secret" ] || openssl rand -hex 32 >"$dev/upload.secret"
chmod 600 "$dev"/*.pem "$dev"/kek.hex "$dev"/stream.secret "$dev"/upload.secret

export AMS_RSA_PRIVATE_KEY_FILE=$dev/cloud_rsa_private.pem
export AMS_KEK_FILE=$dev/kek.hex
export AMS_STREAM_SECRET_FILE=$dev/stream.secret
export AMS_STREAM_BASE_URL=${AMS_STREAM_BASE_URL:-rtmp://127.0.0.1:1935/live}
export AMS_UPLOAD_SIGNING_SECRET_FILE=$dev/upload.secret
export AMS_UPLOAD_HOST_URL=${AMS_UPLOAD_HOST_URL:-http://127.0.0.1:9900}
export AMS_UPLOAD_BUCKET=${AMS_UPLOAD_BUCKET:-ams-dev}

# The local stack has one broker: replication factor 1, allowed explicitly (never in production).
"$bin" migrate -replication 1 -allow-unsafe-replication | sed 's/^/migrate: /'

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "stopping roles..."
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

start() {
  local role=$1; shift
  "$bin" "$role" "$@" >>"$logs/$role.log" 2>&1 &
  pids+=($!)
  echo "started ams $role (pid $!, log $logs/$role.log)"
}
export AMS_API_TOKEN=${AMS_API_TOKEN:-$(cat "$dev/api.token" 2>/dev/null || true)}
if [ -z "$AMS_API_TOKEN" ]; then
  AMS_API_TOKEN=$(openssl rand -hex 16); echo "$AMS_API_TOKEN" >"$dev/api.token"; chmod 600 "$dev/api.token"
fi
start process
start ingest
start egress
start sink redis
start sink clickhouse
start api

# Register every simulated device (bound, with a name), so configuration
# uploads get their OSD name and stream requests a signed URL.
api=http://127.0.0.1:8080
# /healthz, /readyz and /metrics are on the ops port (AMS_OPS_ADDR of the api, :9106), not the API port.
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:9106/readyz" >/dev/null && break; sleep 0.2; done
prefix=0505050505
echo "registering $devices devices..."
failed=0
for i in $(seq 1 "$devices"); do
  sn=$(printf "%s%06d" "$prefix" "$i")
  curl -fsS -X PUT -H "Authorization: Bearer $AMS_API_TOKEN" -H 'Content-Type: application/json' \
    -d "{\"token\":\"$sn\",\"bound\":true,\"name\":\"camera $i\"}" "$api/v1/devices/$sn" >/dev/null 2>>"$logs/register.err" \
    || failed=$((failed + 1))
done
[ "$failed" -eq 0 ] || echo "warning: $failed registrations failed (see $logs/register.err and $logs/api.log)" >&2
cat <<HINT

While the fleet runs (Ctrl-C stops everything), try in another terminal:
  curl -s -H "Authorization: Bearer $AMS_API_TOKEN" $api/v1/devices/${prefix}000001 | jq .
  curl -s -H "Authorization: Bearer $AMS_API_TOKEN" -X POST -d '{"kind":"sd_info"}' \\
       "$api/v1/devices/${prefix}000001/commands?wait=15s" | jq .
  clickhouse-client --query 'SELECT kind, count() FROM ams.device_events GROUP BY kind'
HINT
echo
echo "Simulating $devices devices (Ctrl-C to stop). Logs: $logs"
"$bin" simulate -rsa-public-key-file "$dev/cloud_rsa_public.pem" "${sim_auth[@]}" \
  -sim-devices "$devices" -sim-heartbeat 30s -sim-stream-every 5m -sim-upload-every 10m \
  -sim-duration "$duration" -sim-summary-json "$logs/simulate-summary.json" || true
