#!/usr/bin/env bash
# Soak: the whole pipeline, every role its own process, under a steady fleet
# for a long time, against the local secure stack (`make up`; source
# $AMS_STACK_DIR/env first). Each run has its own -namespace (Kafka topics,
# groups, transactional ids, Redis prefix, ClickHouse database) and its own
# Mosquitto (see below); everything started is stopped at the end.
#
#   deploy/bench/soak.sh [devices] [duration] [commands_per_s]   (default 5000 30m 50)
#
# Devices heartbeat once a second (AMS_SOAK_HEARTBEAT). Commands (sd_info, via
# POST .../commands?wait=15s, timed by curl from request to final state) go
# round robin to the first AMS_SOAK_CMD_DEVICES (default 200) devices, which
# are registered through the API first.
#
# MQTT: by default a private Mosquitto on a free loopback port with the same
# dynamic-security setup as the stack's (deploy/bench/lib.sh), the fleet's
# accounts written before it starts: the simulator would otherwise add them
# one by one to the shared broker, whose plugin rewrites its JSON file per
# account, and 5,000 msg/s each way would load the broker every other test
# uses. AMS_SOAK_MQTT=stack uses the stack's broker instead.
#
# Samples, every AMS_SOAK_SAMPLE (default 30s):
#   $dir/samples.tsv  time, load average (1 min), the processor's committed
#                     and aborted transactions, its input lag and the
#                     ClickHouse sink's lag (their gauges), every role's RSS
#   $dir/kafkalag.log time and each consumer group's lag read from Kafka
#                     (deploy/bench/kafkalag): process, egress, clickhouse, redis
# At the end it prints the first and last samples, aborted transactions,
# the lag over time, command latency p50/p99/p999 by HTTP status, the
# simulator's summary (sent, answered, unanswered = lost replies,
# unsolicited = doubled replies) and ClickHouse's device_events rows against
# the distinct events (rows > distinct = a doubled frame reached the table).
# Exit status 1 when a heartbeat reply was lost (unanswered and never late)
# or doubled (unsolicited), or a transaction aborted after the first sample.
#
#   AMS_BENCH_BIN, AMS_BENCH_DIR, AMS_BENCH_ENV, AMS_BENCH_KEEP_TOPICS as in closed-loop.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. deploy/bench/lib.sh
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
lagbin=$dir/kafkalag
[ -x "$lagbin" ] || go build -o "$lagbin" ./deploy/bench/kafkalag
ulimit -n "$(ulimit -Hn)"

id=soak$(date +%s)$((RANDOM % 100))
if [ ! -s "$dir/rsa.pem" ]; then
  openssl genrsa -traditional -out "$dir/rsa.pem" 1024 2>/dev/null
  openssl rsa -in "$dir/rsa.pem" -RSAPublicKey_out -out "$dir/rsa.pub.pem" 2>/dev/null
  openssl rand -hex 32 >"$dir/kek.hex"
  openssl rand -hex 32 >"$dir/stream.secret"
  openssl rand -hex 16 >"$dir/api.token"
  chmod 600 "$dir"/rsa.pem "$dir"/kek.hex "$dir"/stream.secret "$dir"/api.token
fi
export AMS_NAMESPACE=$id
db=${id}_ams
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
  bench_drop_topics -namespace "$id"
}
trap cleanup EXIT INT TERM
bg() { # name cmd...
  local name=$1; shift
  "$@" >"$dir/$name.log" 2>&1 &
  pids+=($!); pid[$name]=$!
}
start() { local name=$1; shift; bg "$name" "$bin" "$@"; }

prefix=$(printf '%04d' $((RANDOM % 10000)))05
sn() { printf "%s%010d" "$prefix" "$1"; }
sim_auth=()
if [ "${AMS_SOAK_MQTT:-private}" = stack ]; then
  # The stack's broker: the simulator gives every device its account
  # (password = sn) through the dynamic-security plugin.
  if [ -n "${AMS_MQTT_DYNSEC_USERNAME:-}" ]; then
    sim_auth=(-sim-device-password '{sn}' -sim-dynsec-admin "$AMS_MQTT_DYNSEC_USERNAME"
      -sim-dynsec-admin-password-file "$AMS_MQTT_DYNSEC_PASSWORD_FILE")
  fi
else
  bench_sns "$prefix" 1 "$devices" | awk '{print $1 ":" $1}' >"$dir/devices.txt"
  bench_mosquitto_auth "$dir/mqtt-auth" "$dir/devices.txt"
  bench_mosquitto mosquitto $((base + 7)) "$dir/mqtt-auth"
  export AMS_MQTT_URL=tcp://127.0.0.1:$((base + 7)) AMS_MQTT_USERNAME=ams AMS_MQTT_PASSWORD_FILE=$dir/mqtt-secrets/ams.password
  unset AMS_MQTT_PASSWORD
  sim_auth=(-sim-device-password '{sn}')
fi

bench_migrate
start process process -ops-addr 127.0.0.1:$((base + 3)) \
  -allow-unregistered # the fleet is not registered in ams: this measures the pipeline, not registration
# Mosquitto publishes no client connection events: presence comes from frames.
start ingest ingest -ops-addr 127.0.0.1:$((base + 1)) -instance "$id" -event-connected-filter "" -event-disconnected-filter ""
start egress egress -ops-addr 127.0.0.1:$((base + 2))
start clickhouse sink clickhouse -ops-addr 127.0.0.1:$((base + 4))
start redis sink redis -ops-addr 127.0.0.1:$((base + 5))
start api api -http-addr 127.0.0.1:$((base + 6)) -ops-addr 127.0.0.1:$((base + 8))
api=http://127.0.0.1:$((base + 6))
for port in 1 2 3 4 5; do
  for _ in $(seq 1 300); do curl -fs "http://127.0.0.1:$((base + port))/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
done
for _ in $(seq 1 150); do curl -fs "$api/healthz" >/dev/null 2>&1 && break; sleep 0.2; done

echo "registering $cmdDevices command targets..."
register() { # sn: PUT the device (each request waits for the registry; 20 at a time)
  curl -fsS -X PUT -H "Authorization: Bearer $AMS_API_TOKEN" -H 'Content-Type: application/json' \
    -d "{\"token\":\"$1\",\"bound\":true}" "$api/v1/devices/$1" >/dev/null 2>>"$dir/register.err" || true
}
export -f register
export api dir
bench_sns "$prefix" 1 "$cmdDevices" | xargs -P 20 -I{} bash -c 'register {}'

metric() { # port name: sum of a metric's series (labels ignored)
  curl -fs "http://127.0.0.1:$1/metrics" 2>/dev/null | awk -v n="$2" '$1 ~ "^"n"({|$)" {s += $NF} END {printf "%d", s}'
}
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
sampler() {
  printf "t_s\tload1\ttxn_committed\ttxn_aborted\tprocess_lag\tclickhouse_lag\trss_kb_process\trss_kb_ingest\trss_kb_egress\trss_kb_clickhouse\trss_kb_redis\trss_kb_api\trss_kb_mosquitto\n" >"$dir/samples.tsv"
  local t0=$SECONDS m
  while :; do
    m=$(curl -fs "http://127.0.0.1:$((base + 3))/metrics" || true)
    printf "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" $((SECONDS - t0)) "$(cut -d' ' -f1 /proc/loadavg)" \
      "$(awk '/^ams_keyed_transactions_total/ && /committed/ {s += $NF} END {printf "%d", s}' <<<"$m")" \
      "$(awk '/^ams_keyed_transactions_total/ && /aborted/ {s += $NF} END {printf "%d", s}' <<<"$m")" \
      "$(awk '$1 ~ /^ams_keyed_lag({|$)/ {s += $NF} END {printf "%d", s}' <<<"$m")" \
      "$(metric $((base + 4)) ams_sink_clickhouse_lag)" \
      "$(rss "${pid[process]}")" "$(rss "${pid[ingest]}")" "$(rss "${pid[egress]}")" \
      "$(rss "${pid[clickhouse]}")" "$(rss "${pid[redis]}")" "$(rss "${pid[api]}")" "$(rss "${pid[mosquitto]:-0}")" >>"$dir/samples.tsv"
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
echo "soak: $devices devices, heartbeat $hb, $cps commands/s, $duration, namespace $id, mqtt $AMS_MQTT_URL; logs and samples in $dir"
echo "load before: $(uptime)"
sampler & pids+=($!)
bg kafkalag "$lagbin" -interval "${sample}s" \
  -groups "$id.ams-process-device,$id.ams-egress,$id.ams-sink-clickhouse,$id.ams-sink-redis"
(sleep 30; commands) & pids+=($!)
"$bin" simulate -rsa-public-key-file "$dir/rsa.pub.pem" -sim-devices "$devices" -sim-sn-prefix "$prefix" "${sim_auth[@]}" \
  -sim-heartbeat "$hb" -sim-duration "$duration" -sim-progress 60s -sim-summary-json "$dir/summary.json" \
  2>"$dir/simulate.log" | tee "$dir/simulate.txt" || echo "simulator exit status $? (see $dir/simulate.log)"
echo "load after: $(uptime)"
kill -TERM "${pids[-1]}" 2>/dev/null || true # no new commands; those in flight finish within 15 s
sleep 20
fail=0
echo "samples (first, last):"; head -2 "$dir/samples.tsv"; tail -1 "$dir/samples.tsv"
first=$(sed -n 2p "$dir/samples.tsv" | cut -f4)
last=$(tail -1 "$dir/samples.tsv" | cut -f4)
echo "aborted transactions: $last in total, $((last - first)) after the first sample"
[ "$((last - first))" = 0 ] || fail=1
awk -F'\t' 'NR > 1 {l += $2; n++} END {if (n) printf "load average (1 min) over the run: mean %.1f\n", l / n}' "$dir/samples.tsv"
echo "consumer lag over time (records; $dir/kafkalag.log, every ${sample}s):"
awk -F'\t' 'NR == 1 {print; next} {print}' "$dir/kafkalag.log" | column -t | sed 's/^/  /'
if [ -s "$dir/commands.txt" ]; then
  echo "commands: $(wc -l <"$dir/commands.txt") sent; by HTTP status: $(cut -d' ' -f1 "$dir/commands.txt" | sort | uniq -c | tr '\n' ' ')"
  sort -n -k2 "$dir/commands.txt" | awk '{t[NR] = $2} END {if (NR) printf "command round trip (curl, API to final state): p50 %.0f ms, p99 %.0f ms, p999 %.0f ms, max %.0f ms\n", 1000*t[int(NR*0.5)+1], 1000*t[int(NR*0.99)+1], 1000*t[int(NR*0.999)+1], 1000*t[NR]}'
fi
# Lost / doubled frames: every heartbeat answered once (simulator) and stored
# once (ClickHouse, by event id) -- the heartbeats the processor answered.
read -r unans unsol late hbsent hbrecv < <(python3 - "$dir/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
print((s.get("unanswered") or {}).get("heartbeat", 0), (s.get("failures") or {}).get("unsolicited_reply", 0),
      s.get("late_replies", 0), (s.get("sent") or {}).get("heartbeat", 0), (s.get("received") or {}).get("heartbeat", 0))
PY
)
echo "simulator: heartbeats sent $hbsent, replies received $hbrecv, unanswered $unans (of which late $late), unsolicited (doubled) replies $unsol"
[ "$((unans - late))" -le 0 ] && [ "$unsol" = 0 ] || fail=1
ch=$(clickhouse-client --query "SELECT kind, count(), uniqExact(event_id) FROM $db.device_events GROUP BY kind ORDER BY kind" 2>/dev/null || echo "query failed")
echo "$ch" | sed 's/^/clickhouse device_events (kind, rows, distinct events): /'
answered=$(curl -fs "http://127.0.0.1:$((base + 3))/metrics" | awk '/^ams_keyed_outputs_total/ {print}' | head -20 || true)
echo "processor outputs:"; echo "$answered" | sed 's/^/  /'
for port in 1 2 3 4 5 8; do curl -fs "http://127.0.0.1:$((base + port))/metrics" >"$dir/metrics-$((base + port)).txt" 2>/dev/null || true; done
echo "every role's final /metrics: $dir/metrics-<ops port>.txt (ingest $((base + 1)), egress $((base + 2)), process $((base + 3)), clickhouse $((base + 4)), redis $((base + 5)), api $((base + 8)))"
echo "exit status $fail (1: aborted transactions after the first sample, or lost/doubled heartbeat replies)"
exit "$fail"
