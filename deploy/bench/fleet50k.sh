#!/usr/bin/env bash
# A fleet larger than one broker holds: N simulated cameras (default 50,000)
# over three private Mosquitto brokers, bridged for the downlink topics
# /ivms/sub/# (broker 1 is where egress publishes; brokers 2 and 3 pull
# /ivms/sub/# from it, as an EMQX cluster routes between its nodes), one
# ingest instance per broker, one simulator process per broker, each from
# its own loopback source addresses. Kafka, Redis and ClickHouse are the local
# stack's (`make up`), on private topics / database. Everything started is
# stopped at the end.
#
#   deploy/bench/fleet50k.sh [devices] [duration]     (default 50000 15m)
#
#   AMS_FLEET_HEARTBEAT  heartbeat interval (default 30s)
#   AMS_FLEET_RAMP       connections/s per simulator (default 500)
#   AMS_FLEET_STORM      reconnect-storm interval (default 5m; 10% of each
#                        simulator's devices reconnect at once)
#   AMS_FLEET_VANISH     share of devices that vanish silently now and then (default 0.05)
#   AMS_BENCH_BIN, AMS_BENCH_DIR, AMS_BENCH_ENV as in closed-loop.sh.
#
# Needs: mosquitto (deploy/stack/up.sh installs it), an open-file hard limit
# above devices/3 + 1000 per process (checked below). It takes the machine:
# run it alone (not run on the shared development machine).
#
# Output: every minute, the online count from ClickHouse's presence (latest
# state per camera) against the simulators' connected count; at the end CPU
# seconds per uplink frame of each role, the processor's RSS per device, and
# the simulators' summaries. A storm should settle (online == connected)
# within the heartbeat timeout; nothing else should flap.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
devices=${1:-50000}
duration=${2:-15m}
hb=${AMS_FLEET_HEARTBEAT:-30s}
ramp=${AMS_FLEET_RAMP:-500}
storm=${AMS_FLEET_STORM:-5m}
vanish=${AMS_FLEET_VANISH:-0.05}
dir=${AMS_BENCH_DIR:-$(mktemp -d /tmp/ams-fleet.XXXXXX)}
mkdir -p "$dir"
bin=${AMS_BENCH_BIN:-$dir/ams}
[ -x "$bin" ] || go build -o "$bin" ./cmd/ams
command -v mosquitto >/dev/null || { echo "mosquitto not installed: run deploy/stack/up.sh mosquitto" >&2; exit 1; }
per=$(((devices + 2) / 3))
need=$((per + 1000))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$need" ]; then
  echo "open-file hard limit $(ulimit -Hn) < $need: raise it (limits.conf / systemd LimitNOFILE)" >&2; exit 1
fi
ulimit -n "$(ulimit -Hn)"

id=fleet$(date +%s)$RANDOM
if [ ! -s "$dir/rsa.pem" ]; then
  openssl genrsa -traditional -out "$dir/rsa.pem" 1024 2>/dev/null
  openssl rsa -in "$dir/rsa.pem" -RSAPublicKey_out -out "$dir/rsa.pub.pem" 2>/dev/null
  openssl rand -hex 32 >"$dir/kek.hex"
  openssl rand -hex 32 >"$dir/stream.secret"
  chmod 600 "$dir"/rsa.pem "$dir"/kek.hex "$dir"/stream.secret
fi
export AMS_TOPIC_PREFIX=$id.
export AMS_CLICKHOUSE_DATABASE=$id
export AMS_RSA_PRIVATE_KEY_FILE=$dir/rsa.pem
export AMS_KEK_FILE=$dir/kek.hex
export AMS_STREAM_SECRET_FILE=$dir/stream.secret
export AMS_STREAM_BASE_URL=${AMS_STREAM_BASE_URL:-rtmp://127.0.0.1:1935/live}
export AMS_LOG_LEVEL=${AMS_LOG_LEVEL:-info}
# shellcheck disable=SC2086
[ -z "${AMS_BENCH_ENV:-}" ] || export ${AMS_BENCH_ENV}

base=$((28000 + (RANDOM % 300) * 10))
mq=(0 $((base + 7)) $((base + 8)) $((base + 9)))
declare -A pid
pids=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
bg() { # name cmd...
  local name=$1; shift
  "$@" >"$dir/$name.log" 2>&1 &
  pids+=($!); pid[$name]=$!
}

# Brokers: 1 is the hub; 2 and 3 bridge /ivms/sub/# in from it.
for b in 1 2 3; do
  {
    echo "listener ${mq[$b]} 127.0.0.1"
    echo "allow_anonymous true"
    echo "persistence false"
    echo "max_connections -1"
    echo "max_inflight_messages 1000"
    echo "max_queued_messages 100000"
    if [ "$b" != 1 ]; then
      echo "connection hub$b"
      echo "address 127.0.0.1:${mq[1]}"
      echo "clientid $id-bridge$b"
      echo "topic /ivms/sub/# in 1"
      echo "cleansession true"
    fi
  } >"$dir/mosquitto$b.conf"
  bg "mosquitto$b" mosquitto -c "$dir/mosquitto$b.conf"
done
sleep 1

"$bin" migrate >"$dir/migrate.log" 2>&1
bg process "$bin" process -ops-addr 127.0.0.1:$((base + 3)) -process-group "$id-process" -transactional-id-prefix "$id-" -allow-unregistered
bg egress "$bin" egress -ops-addr 127.0.0.1:$((base + 2)) -egress-group "$id-egress" -egress-id "$id" -mqtt-url "tcp://127.0.0.1:${mq[1]}"
bg clickhouse "$bin" sink clickhouse -ops-addr 127.0.0.1:$((base + 4)) -sink-group "$id-ch"
for b in 1 2 3; do
  bg "ingest$b" "$bin" ingest -ops-addr 127.0.0.1:$((base + 4 + b)) -mqtt-url "tcp://127.0.0.1:${mq[$b]}" \
    -mqtt-share-group "$id" -mqtt-client-id "ams-$id-ingest$b" -instance "$id-$b"
done
for port in 2 3 4 5 6 7; do
  for _ in $(seq 1 300); do curl -fs "http://127.0.0.1:$((base + port))/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
done

cpu() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; } # clock ticks
declare -A cpu0
for n in process egress clickhouse ingest1 ingest2 ingest3; do cpu0[$n]=$(cpu "${pid[$n]}"); done

echo "fleet: $devices devices over 3 bridged brokers (ports ${mq[*]:1}), heartbeat $hb, storm every $storm, vanish $vanish, $duration; logs in $dir"
echo "load before: $(uptime)"
prefix=$(printf '%04d' $((RANDOM % 10000)))05
sims=()
for b in 1 2 3; do
  first=$(((b - 1) * per + 1))
  n=$((b == 3 ? devices - 2 * per : per))
  addrs=$(seq -s, -f "127.0.$b.%g" 1 $(((n + 19999) / 20000)))
  "$bin" simulate -rsa-public-key-file "$dir/rsa.pub.pem" -mqtt-url "tcp://127.0.0.1:${mq[$b]}" \
    -sim-devices "$n" -sim-sn-start "$first" -sim-sn-prefix "$prefix" -sim-source-addrs "$addrs" \
    -sim-heartbeat "$hb" -sim-ramp "$ramp" -sim-reconnect-storm "$storm" -sim-storm-share 0.1 \
    -sim-vanish "$vanish" -sim-duration "$duration" -sim-progress 60s \
    -sim-summary-json "$dir/sim$b.json" >"$dir/sim$b.txt" 2>"$dir/sim$b.log" &
  sims+=($!); pids+=($!)
done

online() {
  clickhouse-client --query "SELECT countIf(o = 1) FROM (SELECT sn, argMax(online, (at_ms, seq)) AS o FROM $id.presence GROUP BY sn)" 2>/dev/null || echo "?"
}
connected() { # sum of the simulators' last progress lines' "conn N/M"
  for b in 1 2 3; do tail -n 1 "$dir/sim$b.log" 2>/dev/null | sed -n 's/.*conn \([0-9]*\)\/.*/\1/p'; done | awk '{s += $1} END {print s + 0}'
}
while kill -0 "${sims[0]}" 2>/dev/null || kill -0 "${sims[1]}" 2>/dev/null || kill -0 "${sims[2]}" 2>/dev/null; do
  sleep 60
  echo "$(date -u +%T) simulators connected $(connected), presence online $(online)"
done
wait "${sims[@]}" 2>/dev/null || true
echo "load after: $(uptime)"

frames=0
for b in 1 2 3; do
  f=$(curl -fs "http://127.0.0.1:$((base + 4 + b))/metrics" | awk '/^ams_ingest_messages_total/ && /outcome="frame"/ {s += $NF} END {printf "%d", s}')
  frames=$((frames + f))
done
hz=$(getconf CLK_TCK)
echo "uplink frames: $frames"
for n in process egress clickhouse ingest1 ingest2 ingest3; do
  t=$(( $(cpu "${pid[$n]}") - ${cpu0[$n]} ))
  awk -v n="$n" -v t="$t" -v hz="$hz" -v f="$frames" 'BEGIN {printf "cpu %-10s %8.1f s, %6.1f µs per uplink frame\n", n, t / hz, f ? 1e6 * t / hz / f : 0}'
done
awk -v d="$devices" '/VmRSS/ {printf "processor rss %.0f MB, %.0f B per device\n", $2 / 1024, 1024 * $2 / d}' "/proc/${pid[process]}/status"
for b in 1 2 3; do echo "--- simulator $b"; cat "$dir/sim$b.txt"; done
