#!/usr/bin/env bash
# A fleet larger than one broker holds: N simulated cameras (default 50,000)
# over three private Mosquitto brokers with dynamic security (no anonymous
# access, every device its own account; deploy/bench/lib.sh), bridged for the
# downlink topics /ivms/sub/# (broker 1 is where egress publishes; brokers 2
# and 3 pull /ivms/sub/# from it, as an EMQX cluster routes between its
# nodes), one ingest instance per broker, and per broker several simulator
# processes, each from its own loopback source address (127.0.B.x). Kafka,
# Redis and ClickHouse are the local secure stack's (`make up`; source
# $AMS_STACK_DIR/env first), under a -namespace of this run. Everything
# started is stopped at the end.
#
#   deploy/bench/fleet50k.sh [devices]          (default 50000)
#
# What it does and checks (times from the simulators' start):
#   1. ramp-up: every camera connects and handshakes; presence (ClickHouse's
#      copy of ams.presence, latest state per camera) must show every camera
#      online before the storm.
#   2. reconnect storm at AMS_FLEET_STORM_AT: 10% of the cameras of each
#      main simulator disconnect and reconnect at once (new handshake). The
#      fleet has settled when every simulator reports all its cameras ready
#      again and presence shows all online; it must within the heartbeat
#      timeout + 60 s. "storm to settled" is that time.
#   3. silent vanish: the vanish simulators (5% of the cameras, the last of
#      each broker's range) are frozen with SIGSTOP: their sockets stay open
#      and mute. Presence must show exactly those cameras offline, and every
#      other camera online, within the heartbeat timeout + 45 s.
#   4. AMS_FLEET_TAIL more seconds of watching; then nothing may have
#      flapped: no camera outside the vanish set ever went offline, every
#      vanished camera went offline once.
# It exits 1 when a check fails. At the end it prints CPU seconds per uplink
# frame of every process (from /proc/<pid>/stat, so other load on the
# machine does not count), the processor's RSS per device, and the
# simulators' summaries. Takes about storm_at + 4 min.
#
#   AMS_FLEET_HEARTBEAT  heartbeat interval (default 30s, the cameras' own)
#   AMS_FLEET_TIMEOUT    processor -heartbeat-timeout (default 90s, the presence default)
#   AMS_FLEET_RAMP       connections/s per simulator process (default 300)
#   AMS_FLEET_PER_SIM    most cameras per simulator process (default 9000)
#   AMS_FLEET_STORM_AT   seconds from start to the storm (default 120 + devices/200)
#   AMS_FLEET_TAIL       seconds watched after the vanish (default 60)
#   AMS_BENCH_BIN, AMS_BENCH_DIR, AMS_BENCH_ENV, AMS_BENCH_KEEP_TOPICS as in closed-loop.sh.
#
# Needs: mosquitto (deploy/stack/up.sh installs it) and about devices/3 +
# 1000 open files per broker: the script raises its limit (as root, the hard
# one too) and stops if it cannot. It takes the machine: run it alone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. deploy/bench/lib.sh
devices=${1:-50000}
hb=${AMS_FLEET_HEARTBEAT:-30s}
timeout=${AMS_FLEET_TIMEOUT:-90s}
ramp=${AMS_FLEET_RAMP:-300}
perSim=${AMS_FLEET_PER_SIM:-9000}
stormAt=${AMS_FLEET_STORM_AT:-$((120 + devices / 200))}
tail=${AMS_FLEET_TAIL:-60}
dir=${AMS_BENCH_DIR:-$(mktemp -d /tmp/ams-fleet.XXXXXX)}
mkdir -p "$dir"
bin=${AMS_BENCH_BIN:-$dir/ams}
[ -x "$bin" ] || go build -o "$bin" ./cmd/ams
command -v mosquitto >/dev/null || { echo "mosquitto not installed: run deploy/stack/up.sh mosquitto" >&2; exit 1; }
secs() { local v=$1; case $v in *m) echo $((${v%m} * 60)) ;; *s) echo "${v%s}" ;; *) echo "$v" ;; esac; }
timeoutS=$(secs "$timeout")
per=$(((devices + 2) / 3))
need=$((per + 2000))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$need" ]; then
  ulimit -Hn "$need" 2>/dev/null || { echo "open-file hard limit $(ulimit -Hn) < $need and not raisable: raise it (limits.conf / systemd LimitNOFILE)" >&2; exit 1; }
fi
ulimit -n "$(ulimit -Hn)"

id=fleet$(date +%s)$((RANDOM % 100))
db=${id}_ams
if [ ! -s "$dir/rsa.pem" ]; then
  openssl genrsa -traditional -out "$dir/rsa.pem" 1024 2>/dev/null
  openssl rsa -in "$dir/rsa.pem" -RSAPublicKey_out -out "$dir/rsa.pub.pem" 2>/dev/null
  openssl rand -hex 32 >"$dir/kek.hex"
  openssl rand -hex 32 >"$dir/stream.secret"
  chmod 600 "$dir"/rsa.pem "$dir"/kek.hex "$dir"/stream.secret
fi
export AMS_NAMESPACE=$id
export AMS_RSA_PRIVATE_KEY_FILE=$dir/rsa.pem
export AMS_KEK_FILE=$dir/kek.hex
export AMS_STREAM_SECRET_FILE=$dir/stream.secret
export AMS_STREAM_BASE_URL=${AMS_STREAM_BASE_URL:-rtmp://127.0.0.1:1935/live}
export AMS_LOG_LEVEL=${AMS_LOG_LEVEL:-info}
# shellcheck disable=SC2086
[ -z "${AMS_BENCH_ENV:-}" ] || export ${AMS_BENCH_ENV}

base=$((28000 + (RANDOM % 300) * 20))
mq=(0 $((base + 11)) $((base + 12)) $((base + 13)))
declare -A pid
pids=()
stopped=()
cleanup() {
  trap - EXIT INT TERM
  # Every role's /metrics as it ends (per-hop histograms, lags, CPU), for the analysis after.
  for port in $(seq $((base + 1)) $((base + 8))); do
    curl -fs --max-time 2 "http://127.0.0.1:$port/metrics" >"$dir/metrics.$port.txt" 2>/dev/null || rm -f "$dir/metrics.$port.txt"
  done
  for p in "${stopped[@]}"; do kill -CONT "$p" 2>/dev/null || true; done
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

# The fleet: per broker b a range of serial numbers; its last 5% vanish.
prefix=$(printf '%04d' $((RANDOM % 10000)))05
declare -a sims=() simName=() simMain=()
mainTotal=0 vanTotal=0 vcond=""
plan=()
for b in 1 2 3; do
  first=$(((b - 1) * per + 1))
  n=$((b == 3 ? devices - 2 * per : per))
  v=$(((n + 10) / 20))
  m=$((n - v))
  bench_sns "$prefix" "$first" "$n" | awk '{print $1 ":" $1}' >"$dir/devices$b.txt"
  k=$(((m + perSim - 1) / perSim))
  for j in $(seq 1 "$k"); do
    s=$((first + (j - 1) * m / k))
    e=$((first + j * m / k))
    plan+=("$b main$b.$j $s $((e - s)) 127.0.$b.$j")
  done
  plan+=("$b vanish$b $((first + m)) $v 127.0.$b.100")
  vcond="$vcond${vcond:+ OR }(n >= $((first + m)) AND n < $((first + n)))"
  mainTotal=$((mainTotal + m))
  vanTotal=$((vanTotal + v))
done

echo "writing the brokers' accounts ($devices devices)..."
bench_mosquitto_auth "$dir/mqtt-auth1" "$dir/devices1.txt" # creates the shared passwords first
bench_mosquitto_auth "$dir/mqtt-auth2" "$dir/devices2.txt" & a2=$!
bench_mosquitto_auth "$dir/mqtt-auth3" "$dir/devices3.txt" & a3=$!
wait "$a2" && wait "$a3"
bench_mosquitto mosquitto1 "${mq[1]}" "$dir/mqtt-auth1"
bench_mosquitto mosquitto2 "${mq[2]}" "$dir/mqtt-auth2" "${mq[1]}"
bench_mosquitto mosquitto3 "${mq[3]}" "$dir/mqtt-auth3" "${mq[1]}"
export AMS_MQTT_USERNAME=ams AMS_MQTT_PASSWORD_FILE=$dir/mqtt-secrets/ams.password
unset AMS_MQTT_PASSWORD

bench_migrate
bg process "$bin" process -ops-addr 127.0.0.1:$((base + 3)) -heartbeat-timeout "$timeout" \
  -allow-unregistered # the fleet is not registered in ams: this measures the pipeline, not registration
bg egress "$bin" egress -ops-addr 127.0.0.1:$((base + 2)) -mqtt-url "tcp://127.0.0.1:${mq[1]}"
bg clickhouse "$bin" sink clickhouse -ops-addr 127.0.0.1:$((base + 4))
bg redis "$bin" sink redis -ops-addr 127.0.0.1:$((base + 1))
# Mosquitto publishes no client connection events: presence comes from frames.
for b in 1 2 3; do
  bg "ingest$b" "$bin" ingest -ops-addr 127.0.0.1:$((base + 4 + b)) -mqtt-url "tcp://127.0.0.1:${mq[$b]}" \
    -event-connected-filter "" -event-disconnected-filter "" -instance "$id-$b" -mqtt-client-id "ams-$id-ingest$b"
done
for port in 1 2 3 4 5 6 7; do
  for _ in $(seq 1 300); do curl -fs "http://127.0.0.1:$((base + port))/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
done

roles=(process egress clickhouse redis ingest1 ingest2 ingest3 mosquitto1 mosquitto2 mosquitto3)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; } # clock ticks, user + system
rsskb() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
declare -A cpu0
for n in "${roles[@]}"; do cpu0[$n]=$(cpu "${pid[$n]}"); done
rss0=$(rsskb "${pid[process]}")

echo "fleet: $devices devices ($mainTotal main, $vanTotal vanishing) over 3 bridged brokers (ports ${mq[*]:1}), ${#plan[@]} simulators,"
echo "  heartbeat $hb, timeout $timeout, storm at ${stormAt}s, namespace $id, logs in $dir"
echo "load before: $(uptime)"
t0=$SECONDS
for p in "${plan[@]}"; do
  read -r b name s n addr <<<"$p"
  storm=()
  [[ $name == main* ]] && storm=(-sim-reconnect-storm "${stormAt}s" -sim-storm-share 0.1)
  "$bin" simulate -rsa-public-key-file "$dir/rsa.pub.pem" -mqtt-url "tcp://127.0.0.1:${mq[$b]}" \
    -sim-devices "$n" -sim-sn-start "$s" -sim-sn-prefix "$prefix" -sim-source-addrs "$addr" -sim-device-password '{sn}' \
    -sim-heartbeat "$hb" -sim-ramp "$ramp" "${storm[@]}" -sim-progress 2s \
    -sim-summary-json "$dir/$name.json" >"$dir/$name.txt" 2>"$dir/$name.log" &
  pids+=($!); sims+=($!); simName+=("$name")
  [[ $name == main* ]] && simMain+=($!)
done

el() { echo $((SECONDS - t0)); }
fail=0
problem() { echo "FAIL: $*"; fail=1; }
presence() { # main_online main_offline vanish_online vanish_offline
  clickhouse-client --query "
    SELECT countIf(o = 1 AND NOT v), countIf(o = 0 AND NOT v), countIf(o = 1 AND v), countIf(o = 0 AND v)
    FROM (SELECT sn, argMax(online, (at_ms, seq)) AS o, toUInt64(substring(sn, 7, 10)) AS n, ($vcond) AS v
          FROM $db.presence WHERE substring(sn, 1, 6) = '$prefix' GROUP BY sn)" 2>/dev/null | tr '\t' ' ' || echo "? ? ? ?"
}
ready() { # sum of the main simulators' last "ready N"
  local i s=0 r
  for i in "${!sims[@]}"; do
    [[ ${simName[$i]} == main* ]] || continue
    r=$(tail -c 400 "$dir/${simName[$i]}.log" 2>/dev/null | tr '\r' '\n' | sed -n 's/.* ready \([0-9]*\).*/\1/p' | tail -1)
    s=$((s + ${r:-0}))
  done
  echo "$s"
}
log() { echo "$(date -u +%T) +$(el)s $*"; }
dead=""
alive() { # false (and FAIL once) when a role or broker has exited
  local n
  [ -z "$dead" ] || return 1
  for n in "${roles[@]}"; do
    if ! kill -0 "${pid[$n]}" 2>/dev/null; then
      dead=$n
      problem "$n exited: $(tail -n 1 "$dir/$n.log" | cut -c1-300)"
      return 1
    fi
  done
}

# 1. ramp-up
rampDone=""
while alive && [ "$(el)" -lt $((stormAt - 5)) ]; do
  sleep 5
  read -r mo mf vo vf <<<"$(presence)"
  log "ramp: ready $(ready)/$mainTotal (main), presence online main $mo vanish $vo, offline main $mf vanish $vf"
  if [ "$mo" = "$mainTotal" ] && [ "$vo" = "$vanTotal" ]; then rampDone=$(el); break; fi
done
if [ -n "$rampDone" ]; then log "all $devices online after ${rampDone}s"; else problem "not all online before the storm"; fi
rssRamp=$(rsskb "${pid[process]}")
keys=$(curl -fs "http://127.0.0.1:$((base + 3))/metrics" | awk '/^ams_keyed_state_keys/ {s += $NF} END {printf "%d", s}')

# 2. reconnect storm
while alive && [ "$(el)" -lt "$stormAt" ]; do sleep 1; done
seenDip=0 settled=""
while alive && [ "$(el)" -lt $((stormAt + timeoutS + 60)) ]; do
  sleep 2
  r=$(ready)
  read -r mo mf vo vf <<<"$(presence)"
  [ "$r" -lt "$mainTotal" ] && seenDip=1
  log "storm: ready $r/$mainTotal, presence online main $mo vanish $vo, offline main $mf vanish $vf"
  if [ "$seenDip" = 1 ] && [ "$r" = "$mainTotal" ] && [ "$mo" = "$mainTotal" ] && [ "$mf" = 0 ]; then settled=$(($(el) - stormAt)); break; fi
  if [ "$seenDip" = 0 ] && [ "$(el)" -gt $((stormAt + 20)) ]; then problem "no storm seen in the simulators' ready counts"; break; fi
done
if [ -n "$settled" ]; then log "storm to settled fleet: ${settled}s"; else problem "fleet not settled within $((timeoutS + 60))s of the storm"; fi

# 3. silent vanish
tv=$(el)
for i in "${!sims[@]}"; do
  [[ ${simName[$i]} == vanish* ]] || continue
  kill -STOP "${sims[$i]}"; stopped+=("${sims[$i]}")
done
log "vanish: $vanTotal cameras frozen (SIGSTOP: sockets open and mute)"
vanished=""
while alive && [ "$(el)" -lt $((tv + timeoutS + 45)) ]; do
  sleep 2
  read -r mo mf vo vf <<<"$(presence)"
  log "vanish: presence online main $mo vanish $vo, offline main $mf vanish $vf"
  if [ "$vf" = "$vanTotal" ] && [ "$mo" = "$mainTotal" ]; then vanished=$(($(el) - tv)); break; fi
done
if [ -n "$vanished" ]; then log "vanish reflected in presence after ${vanished}s (heartbeat timeout $timeout)"
else problem "vanish not reflected within the heartbeat timeout + 45s"; fi

# 4. tail: nothing else flaps (stops before a second storm would start)
end=$((SECONDS + tail))
while alive && [ "$SECONDS" -lt "$end" ] && [ "$(el)" -lt $((2 * stormAt - 5)) ]; do
  sleep 10
  read -r mo mf vo vf <<<"$(presence)"
  log "tail: presence online main $mo vanish $vo, offline main $mf vanish $vf"
done
sleep 5 # the sinks' last batch
read -r flapMain vanNone vanMulti maxOn <<<"$(clickhouse-client --query "
  SELECT countIf(offs > 0 AND NOT v), countIf(offs = 0 AND v), countIf(offs > 1 AND v), max(ons)
  FROM (SELECT sn, uniqExactIf(event_id, online = 0) AS offs, uniqExactIf(event_id, online = 1) AS ons,
               toUInt64(substring(sn, 7, 10)) AS n, ($vcond) AS v
        FROM $db.presence WHERE substring(sn, 1, 6) = '$prefix' GROUP BY sn)" 2>/dev/null | tr '\t' ' ' || echo "? ? ? ?")"
echo "presence history: $flapMain main cameras ever offline (want 0), $vanNone vanished cameras never offline (want 0),"
echo "  $vanMulti vanished cameras offline more than once, at most $maxOn online records per camera"
[ "$flapMain" = 0 ] && [ "$vanNone" = 0 ] || problem "presence flapped or missed a vanish"
echo "load after: $(uptime)"

frames=0
for b in 1 2 3; do
  f=$(curl -fs "http://127.0.0.1:$((base + 4 + b))/metrics" | awk '/^ams_ingest_messages_total/ && /frame/ {s += $NF} END {printf "%d", s}')
  frames=$((frames + f))
done
hz=$(getconf CLK_TCK)
el=$(el)
echo "uplink frames: $frames in ${el}s ($((frames / (el > 0 ? el : 1)))/s)"
for n in "${roles[@]}"; do
  t=$(($(cpu "${pid[$n]}") - ${cpu0[$n]}))
  awk -v n="$n" -v t="$t" -v hz="$hz" -v f="$frames" 'BEGIN {printf "cpu %-11s %8.1f s, %7.1f µs per uplink frame\n", n, t / hz, f ? 1e6 * t / hz / f : 0}'
done
simcpu=0
for p in "${sims[@]}"; do simcpu=$((simcpu + $(cpu "$p"))); done
awk -v t="$simcpu" -v hz="$hz" -v f="$frames" 'BEGIN {printf "cpu %-11s %8.1f s, %7.1f µs per uplink frame\n", "simulators", t / hz, f ? 1e6 * t / hz / f : 0}'
awk -v a="$rss0" -v b="$rssRamp" -v c="$(rsskb "${pid[process]}")" -v d="$devices" -v k="$keys" 'BEGIN {
  printf "processor rss: %.0f MB before, %.0f MB after ramp-up, %.0f MB at the end; %.0f B per device ((after ramp-up - before) / devices; %d state keys)\n",
    a / 1024, b / 1024, c / 1024, 1024 * (b - a) / d, k}'
for p in "${stopped[@]}"; do kill -CONT "$p" 2>/dev/null || true; done
stopped=()
for p in "${sims[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
wait "${sims[@]}" 2>/dev/null || true
for name in "${simName[@]}"; do
  [ -s "$dir/$name.json" ] || continue
  python3 - "$dir/$name.json" "$name" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
print("sim %-9s devices %5d, connects %6d, storm reconnects %5d, handshakes %6d, heartbeats sent %7d, replies %7d, unanswered %d, failures %d" % (
    sys.argv[2], s["devices"], s["connects"], s["storm_reconnects"], s["handshakes"], (s.get("sent") or {}).get("heartbeat", 0),
    (s.get("received") or {}).get("heartbeat", 0), sum((s.get("unanswered") or {}).values()), s.get("failures_total", 0)))
PY
done
if [ "$fail" = 0 ]; then echo "PASS: all online after ramp-up, storm settled, vanish reflected, nothing else flapped"; fi
exit "$fail"
