#!/usr/bin/env bash
# Closed-loop round trip of the whole pipeline, every role its own process,
# against the local stack (`make up`): ingest, process and egress start on
# a private topic prefix, MQTT share group and ops ports; then
# `ams simulate -sim-closed-loop` runs a fleet in which every camera sends
# its next heartbeat as soon as the reply to the last one arrives, and prints
# replies/s, the round trip's p50/p99/p999 and the per-hop breakdown read
# from the roles' /metrics. Everything it started is stopped at the end.
#
#   deploy/bench/closed-loop.sh [devices] [duration]    (default 50 30s)
#
#   AMS_BENCH_WARMUP    left out of the measurement (default 10s)
#   AMS_BENCH_BIN       ams binary of the roles (default: go build into $AMS_BENCH_DIR)
#   AMS_BENCH_SIM_BIN   ams binary of the simulator (default: AMS_BENCH_BIN); lets
#                       roles built from an older commit be measured by this client
#   AMS_BENCH_DIR       work dir for keys and logs (default: a new temp dir)
#   AMS_BENCH_ENV       extra "NAME=value ..." for the roles (e.g. AMS_MAX_LINGER=2ms)
#   AMS_BENCH_KEEP_TOPICS=1  keep the run's Kafka topics (deleted at exit otherwise)
#   AMS_KAFKA_BROKERS, AMS_MQTT_URL and every other AMS_* variable reach the
#   roles unchanged (the secure stack's settings included).
#
# Numbers depend on what else runs on the machine: note `uptime` with them
# (the script prints it before and after).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. deploy/bench/lib.sh
devices=${1:-50}
duration=${2:-30s}
warmup=${AMS_BENCH_WARMUP:-10s}
dir=${AMS_BENCH_DIR:-$(mktemp -d /tmp/ams-closed-loop.XXXXXX)}
mkdir -p "$dir"
bin=${AMS_BENCH_BIN:-$dir/ams}
[ -x "$bin" ] || go build -o "$bin" ./cmd/ams
sim=${AMS_BENCH_SIM_BIN:-$bin}

id=$(date +%s)$RANDOM
if [ ! -s "$dir/rsa.pem" ]; then
  openssl genrsa -traditional -out "$dir/rsa.pem" 1024 2>/dev/null
  openssl rsa -in "$dir/rsa.pem" -RSAPublicKey_out -out "$dir/rsa.pub.pem" 2>/dev/null
  openssl rand -hex 32 >"$dir/kek.hex"
  openssl rand -hex 32 >"$dir/stream.secret"
  chmod 600 "$dir"/rsa.pem "$dir"/kek.hex "$dir"/stream.secret
fi
export AMS_TOPIC_PREFIX=bench$id.
export AMS_RSA_PRIVATE_KEY_FILE=$dir/rsa.pem
export AMS_KEK_FILE=$dir/kek.hex
export AMS_STREAM_SECRET_FILE=$dir/stream.secret
export AMS_STREAM_BASE_URL=${AMS_STREAM_BASE_URL:-rtmp://127.0.0.1:1935/live}
export AMS_LOG_LEVEL=${AMS_LOG_LEVEL:-warn}
# shellcheck disable=SC2086
[ -z "${AMS_BENCH_ENV:-}" ] || export ${AMS_BENCH_ENV}

# Free-ish ops ports: a random base per run (several runs may overlap).
base=$((20000 + (RANDOM % 400) * 10))
pids=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
  bench_drop_topics -topic-prefix "$AMS_TOPIC_PREFIX"
}
trap cleanup EXIT INT TERM

"$bin" migrate >"$dir/migrate.log" 2>&1
start() {
  local role=$1; shift
  "$bin" "$role" "$@" >"$dir/$role.log" 2>&1 &
  pids+=($!)
}
start process -ops-addr 127.0.0.1:$((base + 3)) -process-group "bench$id-process" -transactional-id-prefix "bench$id-" \
  -allow-unregistered -rate-frame-burst -1
# -allow-unregistered: the fleet is not registered in ams; this measures the
# pipeline, not registration. -rate-frame-burst -1: a closed-loop camera sends
# 20-60 frames/s, far above the per-device limit (120 at once, then 10/s), which
# would reject one heartbeat per camera once its burst is spent, and the camera
# would wait out its 10 s reply timeout: the figures would be of a fleet that is
# mostly idle.
start ingest -ops-addr 127.0.0.1:$((base + 1)) -mqtt-share-group "bench$id" -mqtt-client-id "ams-bench$id-ingest" -instance "bench$id"
start egress -ops-addr 127.0.0.1:$((base + 2)) -egress-group "bench$id-egress" -egress-id "bench$id"
for port in $((base + 1)) $((base + 2)) $((base + 3)); do
  for _ in $(seq 1 150); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
done
urls=http://127.0.0.1:$((base + 1))/metrics,http://127.0.0.1:$((base + 3))/metrics,http://127.0.0.1:$((base + 2))/metrics

echo "closed loop: $devices devices, $duration (warm-up $warmup), prefix $AMS_TOPIC_PREFIX, logs $dir"
echo "load before: $(uptime)"
# A random 6-digit serial prefix keeps this fleet apart from any other.
# On the stack's authenticated Mosquitto the simulator gives every device its
# account first (password = sn) through the dynamic-security plugin.
sim_auth=()
if [ -n "${AMS_MQTT_DYNSEC_USERNAME:-}" ]; then
  sim_auth=(-sim-device-password '{sn}' -sim-dynsec-admin "$AMS_MQTT_DYNSEC_USERNAME"
    -sim-dynsec-admin-password-file "$AMS_MQTT_DYNSEC_PASSWORD_FILE")
fi
"$sim" simulate -rsa-public-key-file "$dir/rsa.pub.pem" -sim-devices "$devices" "${sim_auth[@]}" \
  -sim-sn-prefix "$(printf '%04d' $((RANDOM % 10000)))05" -sim-closed-loop -sim-heartbeat 1s \
  -sim-warmup "$warmup" -sim-duration "$duration" -sim-ramp 0 -sim-progress 0 \
  -sim-metrics-urls "$urls" -sim-summary-json "$dir/summary.json"
echo "load after: $(uptime)"
