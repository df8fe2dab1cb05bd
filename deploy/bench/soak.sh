#!/usr/bin/env bash
# Soak: the whole pipeline, every role its own process, under a steady fleet
# for a long time, against the local stack (`make up`). Private topics, groups,
# Redis prefix and ClickHouse database per run; everything started is stopped.
#
#   deploy/bench/soak.sh [devices] [duration] [commands_per_s]   (default 5000 30m 50)
#
# Devices heartbeat once a second (AMS_SOAK_HEARTBEAT). Commands (sd_info, via
# POST .../commands?wait=15s) go to the first AMS_SOAK_CMD_DEVICES (default 200)
# devices, which are registered first. Every AMS_SOAK_SAMPLE (default 30s) a
# line goes to $dir/samples.tsv: time, the processor's committed and aborted
# transactions, its summed input lag, the ClickHouse sink's lag, and every
# role's RSS. At the end it prints the first and last samples, the aborted
# transactions, the simulator's summary (sent, answered, unanswered = lost
# replies, unsolicited = doubled replies) and ClickHouse's event counts.
#
#   AMS_BENCH_BIN, AMS_BENCH_DIR, AMS_BENCH_ENV as in closed-loop.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
devices=${1:-5000}
duration=${2:-30m}
cps=${3:-50}
hb=${AMS_SOAK_HEARTBEAT:-1s}
cmdDevices=${AMS_SOAK_CMD_DEVICES:-200}
sample=${AMS_SOAK_SAMPLE:-30}
sample=${sample%s}
dir=${AMS_BENCH_DIR:-$(mktemp -d /tmp/ams-soak.XXXXXX)}
mkdir -p "$dir"
bin=${AMS_BENCH_BIN:-$dir/ams}
[ -x "$bin" ] || go build -o "$bin" ./cmd/ams

id=soak$(date +%s)$RANDOM
if [ ! -s "$dir/rsa.pem" ]; then
  openssl genrsa -traditional -out "$dir/rsa.pem" 1024 2>/dev/null
  openssl rsa -in "$dir/rsa.pem" -RSAPublicKey_out -out "$dir/rsa.pub.pem" 2>/dev/null
  openssl rand -hex 32 >"$dir/kek.hex"
  openssl rand -hex 32 >"$dir/stream.secret"
  openssl rand -hex 16 >"$dir/api.token"
  chmod 600 "$dir"/rsa.pem "$dir"/kek.hex "$dir"/stream.secret "$dir"/api.token
fi
export AMS_TOPIC_PREFIX=$id.
export AMS_CLICKHOUSE_DATABASE=$id
export AMS_REDIS_PREFIX=$id:
export AMS_RSA_PRIVATE_KEY_FILE=$dir/rsa.pem
export AMS_KEK_FILE=$dir/kek.hex
export AMS_STREAM_SECRET_FILE=$dir/stream.secret
export AMS_STREAM_BASE_URL=${AMS_STREAM_BASE_URL:-rtmp://127.0.0.1:1935/live}
export AMS_API_TOKEN=$(cat "$dir/api.token")
export AMS_LOG_LEVEL=${AMS_LOG_LEVEL:-info}
# shellcheck disable=SC2086
[ -z "${AMS_BENCH_ENV:-}" ] || export ${AMS_BENCH_ENV}

base=$((24000 + (RANDOM % 400) * 10))
declare -A pid
pids=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
start() { # name role args...
  local name=$1; shift
  "$bin" "$@" >"$dir/$name.log" 2>&1 &
  pids+=($!); pid[$name]=$!
}
"$bin" migrate >"$dir/migrate.log" 2>&1
start process process -ops-addr 127.0.0.1:$((base + 3)) -process-group "$id-process" -transactional-id-prefix "$id-" \
  -allow-unregistered # the fleet is not registered in ams: this measures the pipeline, not registration
start ingest ingest -ops-addr 127.0.0.1:$((base + 1)) -mqtt-share-group "$id" -mqtt-client-id "ams-$id-ingest" -instance "$id"
start egress egress -ops-addr 127.0.0.1:$((base + 2)) -egress-group "$id-egress" -egress-id "$id"
start clickhouse sink clickhouse -ops-addr 127.0.0.1:$((base + 4)) -sink-group "$id-ch"
start redis sink redis -ops-addr 127.0.0.1:$((base + 5)) -sink-group "$id-redis"
start api api -http-addr 127.0.0.1:$((base + 6))
api=http://127.0.0.1:$((base + 6))
for port in 1 2 3 4 5; do
  for _ in $(seq 1 300); do curl -fs "http://127.0.0.1:$((base + port))/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
done
for _ in $(seq 1 150); do curl -fs "$api/healthz" >/dev/null 2>&1 && break; sleep 0.2; done

prefix=$(printf '%04d' $((RANDOM % 10000)))05
sn() { printf "%s%010d" "$prefix" "$1"; }
echo "registering $cmdDevices command targets..."
for i in $(seq 1 "$cmdDevices"); do
  curl -fsS -X PUT -H "Authorization: Bearer $AMS_API_TOKEN" -H 'Content-Type: application/json' \
    -d "{\"token\":\"$(sn "$i")\",\"bound\":true}" "$api/v1/devices/$(sn "$i")" >/dev/null 2>>"$dir/register.err" || true
done

metric() { # port name: sum of a metric's series (labels ignored)
  curl -fs "http://127.0.0.1:$1/metrics" 2>/dev/null | awk -v n="$2" '$1 ~ "^"n"({|$)" {s += $NF} END {printf "%d", s}'
}
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
sampler() {
  printf "t_s\ttxn_committed\ttxn_aborted\tprocess_lag\tclickhouse_lag\trss_kb_process\trss_kb_ingest\trss_kb_egress\trss_kb_clickhouse\trss_kb_redis\trss_kb_api\n" >"$dir/samples.tsv"
  local t0=$SECONDS
  while :; do
    printf "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" $((SECONDS - t0)) \
      "$(curl -fs "http://127.0.0.1:$((base + 3))/metrics" | awk '/^ams_keyed_transactions_total/ && /committed/ {s += $NF} END {printf "%d", s}')" \
      "$(curl -fs "http://127.0.0.1:$((base + 3))/metrics" | awk '/^ams_keyed_transactions_total/ && /aborted/ {s += $NF} END {printf "%d", s}')" \
      "$(metric $((base + 3)) ams_keyed_lag)" "$(metric $((base + 4)) ams_sink_clickhouse_lag)" \
      "$(rss "${pid[process]}")" "$(rss "${pid[ingest]}")" "$(rss "${pid[egress]}")" \
      "$(rss "${pid[clickhouse]}")" "$(rss "${pid[redis]}")" "$(rss "${pid[api]}")" >>"$dir/samples.tsv"
    sleep "$sample"
  done
}
commands() { # cps commands/s spread over the targets, each waiting up to 15s
  local i=0 gap
  gap=$(awk -v r="$cps" 'BEGIN {printf "%.4f", 1 / r}')
  while :; do
    i=$((i % cmdDevices + 1))
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -X POST -H "Authorization: Bearer $AMS_API_TOKEN" \
      -d '{"kind":"sd_info"}' "$api/v1/devices/$(sn "$i")/commands?wait=15s" >>"$dir/commands.txt" 2>/dev/null &
    sleep "$gap"
  done
}
echo "soak: $devices devices, heartbeat $hb, $cps commands/s, $duration; logs and samples in $dir"
echo "load before: $(uptime)"
sampler & pids+=($!)
(sleep 30; commands) & pids+=($!)
# On the stack's authenticated Mosquitto the simulator gives every device its
# account first (password = sn) through the dynamic-security plugin.
sim_auth=()
if [ -n "${AMS_MQTT_DYNSEC_USERNAME:-}" ]; then
  sim_auth=(-sim-device-password '{sn}' -sim-dynsec-admin "$AMS_MQTT_DYNSEC_USERNAME"
    -sim-dynsec-admin-password-file "$AMS_MQTT_DYNSEC_PASSWORD_FILE")
fi
"$bin" simulate -rsa-public-key-file "$dir/rsa.pub.pem" -sim-devices "$devices" -sim-sn-prefix "$prefix" "${sim_auth[@]}" \
  -sim-heartbeat "$hb" -sim-duration "$duration" -sim-progress 60s -sim-summary-json "$dir/summary.json" \
  2>"$dir/simulate.log" | tee "$dir/simulate.txt"
echo "load after: $(uptime)"
echo "samples (first, last):"; head -2 "$dir/samples.tsv"; tail -1 "$dir/samples.tsv"
echo "aborted transactions: $(tail -1 "$dir/samples.tsv" | cut -f3)"
if [ -s "$dir/commands.txt" ]; then
  echo "commands: $(wc -l <"$dir/commands.txt") sent; by HTTP status: $(cut -d' ' -f1 "$dir/commands.txt" | sort | uniq -c | tr '\n' ' ')"
  sort -n -k2 "$dir/commands.txt" | awk '{t[NR] = $2} END {if (NR) printf "command round trip (curl): p50 %.0f ms, p99 %.0f ms, max %.0f ms\n", 1000*t[int(NR*0.5)+1], 1000*t[int(NR*0.99)+1], 1000*t[NR]}'
fi
clickhouse-client --query "SELECT kind, count() FROM $id.device_events GROUP BY kind ORDER BY kind" 2>/dev/null \
  | sed 's/^/clickhouse device_events: /' || echo "clickhouse: query failed"
