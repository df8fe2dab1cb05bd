# Shared helpers of closed-loop.sh, soak.sh and fleet50k.sh (sourced, not run).
#
# bench_mosquitto_auth DIR DEVICES_FILE
#   Writes a private dynamic-security setup into DIR with the same code the
#   stack uses (`ams api -write-mosquitto-config -mosquitto-dynsec-admin`,
#   deploy/stack/up.sh): no anonymous access; service account "ams" (the
#   roles) and "bridge" (the bridges between brokers), each with a random
#   password in $dir/mqtt-secrets/<name>.password (shared by every DIR of a
#   run); administrator ams-dynsec-admin; and
#   every device of DEVICES_FILE (one sn:password per line) with its own
#   role, created before the broker starts (adding tens of thousands of
#   devices at run time through the plugin rewrites its JSON file once per
#   device). Service accounts may also subscribe /ivms/sub/# (the bridges).
# bench_mosquitto NAME PORT AUTHDIR [HUBPORT]
#   Starts a private Mosquitto on 127.0.0.1:PORT with the dynamic-security
#   plugin on a copy of AUTHDIR's JSON (the plugin rewrites it), logging to
#   $dir/NAME.log; with HUBPORT it bridges /ivms/sub/# in from the broker on
#   HUBPORT as account "bridge". Uses the caller's bg function, $dir and $id.
# bench_migrate
#   ams migrate into $dir/migrate.log, up to six times 10 s apart: on a
#   loaded machine its check after creating the topics can run before
#   Kafka's metadata shows them ("topic ... is missing"), and a rerun then
#   fails with TOPIC_ALREADY_EXISTS until the metadata catches up.
# bench_sns PREFIX FIRST N
#   Prints the simulator's serial numbers PREFIX + 10-digit FIRST..FIRST+N-1.
# bench_drop_topics -topic-prefix P | -namespace NS
#   Deletes the run's Kafka topics (deploy/bench/droptopics), unless
#   AMS_BENCH_KEEP_TOPICS=1; called by every script's cleanup. Left behind,
#   ten topics of twelve partitions per run pile up, and a broker holding
#   a couple of thousand idle partitions spends a good part of a core on
#   them, which skews every later measurement. Never fails the script.

bench_sns() {
  awk -v p="$1" -v f="$2" -v n="$3" 'BEGIN {for (i = f; i < f + n; i++) printf "%s%010d\n", p, i}'
}

bench_migrate() {
  local i
  for i in 1 2 3 4 5 6; do
    "$bin" migrate >>"$dir/migrate.log" 2>&1 && return 0
    sleep 10
  done
  echo "ams migrate failed six times: see $dir/migrate.log" >&2
  return 1
}

bench_mosquitto_auth() {
  local adir=$1 devices=$2 sdir="$dir/mqtt-secrets" a
  mkdir -p "$adir" "$sdir"
  chmod 700 "$adir" "$sdir"
  (umask 077
    for a in ams bridge ams-dynsec-admin; do
      [ -s "$sdir/$a.password" ] || openssl rand -hex 18 >"$sdir/$a.password"
    done
    printf 'ams:%s\nbridge:%s\n' "$(cat "$sdir/ams.password")" "$(cat "$sdir/bridge.password")" >"$sdir/accounts")
  "$bin" api -write-mosquitto-config "$adir" -service-accounts-file "$sdir/accounts" -mosquitto-devices "$devices" \
    -mosquitto-dynsec-admin ams-dynsec-admin -mosquitto-dynsec-admin-password-file "$sdir/ams-dynsec-admin.password" \
    -mosquitto-service-topics '/ivms/sub/#' >"$adir/write.log" 2>&1 || { cat "$adir/write.log" >&2; return 1; }
}

bench_mosquitto() {
  local name=$1 port=$2 adir=$3 hub=${4:-} bdir="$dir/$1"
  mkdir -p "$bdir"
  cp "$adir/dynamic-security.json" "$bdir/dynamic-security.json"
  chmod 600 "$bdir/dynamic-security.json"
  {
    echo "# Written by deploy/bench/lib.sh for one benchmark run."
    echo "user root"
    echo "per_listener_settings false"
    echo "allow_anonymous false"
    echo "plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
    echo "plugin_opt_config_file $bdir/dynamic-security.json"
    echo "persistence false"
    echo "log_dest file $dir/$name.log"
    echo "log_type error"
    echo "log_type warning"
    echo "log_type notice"
    echo "connection_messages false"
    echo "max_inflight_messages 1000"
    echo "max_queued_messages 1000000"
    echo "max_queued_bytes 0"
    echo "memory_limit 0"
    echo "set_tcp_nodelay true"
    echo "listener $port 127.0.0.1"
    echo "max_connections -1"
    if [ -n "$hub" ]; then
      echo "connection $name-hub"
      echo "address 127.0.0.1:$hub"
      echo "clientid ams-$id-bridge-$name"
      echo "remote_username bridge"
      echo "remote_password $(cat "$dir/mqtt-secrets/bridge.password")"
      echo "topic /ivms/sub/# in 1"
      echo "cleansession true"
      echo "try_private true"
    fi
  } >"$bdir/mosquitto.conf"
  chmod 600 "$bdir/mosquitto.conf"
  bg "$name" mosquitto -c "$bdir/mosquitto.conf"
  local _
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "mosquitto $name on port $port did not start: see $dir/$name.log" >&2
  return 1
}

bench_drop_topics() {
  [ "${AMS_BENCH_KEEP_TOPICS:-0}" = 1 ] && return 0
  local tool=$dir/droptopics
  [ -x "$tool" ] || go build -o "$tool" ./deploy/bench/droptopics || return 0
  "$tool" "$@" >>"$dir/droptopics.log" 2>&1 || echo "could not delete the run's topics: see $dir/droptopics.log" >&2
}
