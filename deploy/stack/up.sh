#!/usr/bin/env bash
# shellcheck disable=SC2317 # check_* functions are called indirectly, by name
# Starts the real-service test stack on loopback, installing what is missing:
#   Kafka 4.x KRaft (broker+controller) 127.0.0.1:9092 (controller 127.0.0.1:9093)
#   Redis 127.0.0.1:6379, Mosquitto 127.0.0.1:1883, ClickHouse 127.0.0.1:9000 (HTTP 8123)
#
# Usage: deploy/stack/up.sh [--install-only] [kafka|redis|mosquitto|clickhouse ...]   (default: all four)
#
# --install-only: install what the named services need (Debian packages) and exit, starting
# nothing (`make run` uses it for clickhouse-server, which `ams dev` starts itself).
#
# Idempotent: a service already answering on its port is left alone. All data and logs go
# under ${AMS_STACK_DIR:-<repo>/.stack}. Stop with deploy/stack/down.sh [--purge].
# Environment:
#   AMS_STACK_DIR       where data, logs, configs and pid files go
#   AMS_STACK_TIMEOUT   seconds to wait for each service to answer (default 180)
#   AMS_KAFKA_HEAP      JVM heap flags for the broker (default "-Xms256m -Xmx1g")
set -euo pipefail

# shellcheck source=deploy/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TIMEOUT="${AMS_STACK_TIMEOUT:-180}"
KAFKA_HEAP="${AMS_KAFKA_HEAP:--Xms256m -Xmx1g}"
START_SECONDS=$SECONDS

INSTALL_ONLY=0
if [[ ${1:-} == --install-only ]]; then
	INSTALL_ONLY=1
	shift
fi
services=("$@")
if [[ ${#services[@]} -eq 0 ]]; then
	services=("${ALL_SERVICES[@]}")
fi
for s in "${services[@]}"; do
	exe_pattern "$s" >/dev/null
done
wants() {
	local s
	for s in "${services[@]}"; do [[ $s == "$1" ]] && return 0; done
	return 1
}

mkdir -p "$STACK" "$RUN" "$LOGS"
touch "$STACK/$STACK_MARKER"
take_lock

# ---------------------------------------------------------------------------------------------
# Install
# ---------------------------------------------------------------------------------------------

have() { command -v "$1" >/dev/null 2>&1; }

java_major() {
	local v
	v="$(java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')"
	v="${v#1.}"
	echo "${v%%[.+-]*}"
}

POLICY_RC=/usr/sbin/policy-rc.d
POLICY_ADDED=0
remove_policy() {
	if [[ $POLICY_ADDED == 1 ]]; then
		rm -f "$POLICY_RC"
		POLICY_ADDED=0
	fi
}

# apt_install PKG...: installs with services kept from starting (policy-rc.d exit 101: there is
# no systemd here and up.sh starts them itself with its own configs). Runs `apt-get update`
# only when the first try fails (unknown package or stale index).
apt_install() {
	[[ $# -gt 0 ]] || return 0
	[[ $(id -u) == 0 ]] || die "missing packages $*: run as root or install them (apt-get install $*)"
	if [[ ! -e $POLICY_RC ]]; then
		printf '#!/bin/sh\n# added by ams deploy/stack/up.sh while installing\nexit 101\n' >"$POLICY_RC"
		chmod 755 "$POLICY_RC"
		POLICY_ADDED=1
		trap remove_policy EXIT
	fi
	log "installing $* (log: $LOGS/apt.log)"
	local t0=$SECONDS
	export DEBIAN_FRONTEND=noninteractive
	local apt=(apt-get -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
		-o DPkg::Lock::Timeout=300 install --no-install-recommends)
	if ! "${apt[@]}" "$@" >>"$LOGS/apt.log" 2>&1; then
		log "install failed; running apt-get update and retrying"
		if ! { apt-get -q -o DPkg::Lock::Timeout=300 update && "${apt[@]}" "$@"; } >>"$LOGS/apt.log" 2>&1; then
			remove_policy
			tail -n 30 "$LOGS/apt.log" >&2
			die "apt-get install $* failed"
		fi
	fi
	remove_policy
	log "installed in $((SECONDS - t0))s"
}

pkgs=()
if wants kafka; then
	if ! have java || (($(java_major) < 17)); then pkgs+=(openjdk-17-jre-headless); fi
	have mvn || pkgs+=(maven)
	have go || die "go is not on PATH (needed to build deploy/stack/waitfor)"
fi
if wants redis; then
	have redis-server || pkgs+=(redis-server)
	have redis-cli || pkgs+=(redis-tools)
fi
if wants mosquitto; then
	have mosquitto || pkgs+=(mosquitto)
	have mosquitto_sub || pkgs+=(mosquitto-clients)
fi
if wants clickhouse; then
	have clickhouse-server || pkgs+=(clickhouse-server)
	have clickhouse-client || pkgs+=(clickhouse-client)
fi
# The console's browser tests (cmd/ams TestConsoleInBrowser) drive Debian's chromium; installed
# with the whole stack (no service named), which is what `make up` / `make test` ask for.
if [[ $# -eq 0 ]] && ! have chromium; then
	pkgs+=(chromium)
fi

# The broker's jars: gathered from Maven Central (cached in ~/.m2) once per pom.xml content.
KAFKA_LIBS="$STACK/kafka/libs"
KAFKA_POM="$STACK_HERE/kafka/pom.xml"
kafka_jars_fresh() {
	[[ -f $KAFKA_LIBS/.pom.sha256 && "$(cat "$KAFKA_LIBS/.pom.sha256")" == "$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)" ]]
}
gather_kafka_jars() {
	local t0=$SECONDS want
	want="$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)"
	log "kafka: gathering jars with Maven (log: $LOGS/maven.log)"
	rm -rf "$KAFKA_LIBS"
	if ! mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies -DoutputDirectory="$KAFKA_LIBS" \
		-DincludeScope=runtime >"$LOGS/maven.log" 2>&1; then
		tail -n 30 "$LOGS/maven.log" >&2
		log "kafka: mvn dependency:copy-dependencies failed (log: $LOGS/maven.log)"
		return 1
	fi
	echo "$want" >"$KAFKA_LIBS/.pom.sha256"
	log "kafka: jars gathered in $((SECONDS - t0))s"
}

if [[ $INSTALL_ONLY == 1 ]]; then
	apt_install "${pkgs[@]}"
	log "installed what ${services[*]} need; nothing started (--install-only)"
	exit 0
fi

# When Java and Maven are already there, gather the jars while apt installs the rest.
jars_pid=
if wants kafka && ! port_open "$KAFKA_PORT" && ! kafka_jars_fresh && have java && have mvn; then
	gather_kafka_jars &
	jars_pid=$!
fi
apt_install "${pkgs[@]}"
if [[ -n $jars_pid ]]; then
	wait "$jars_pid" || die "kafka: could not gather the broker's jars"
fi
if wants kafka && (($(java_major) < 17)); then
	die "Kafka 4 needs Java 17 or newer; 'java' on PATH is $(java -version 2>&1 | head -n1)"
fi

# ---------------------------------------------------------------------------------------------
# Start
# ---------------------------------------------------------------------------------------------

# launch SVC CMD...: runs CMD in the background in its own session, detached from the caller's
# terminal and stdio, with the open-file limit raised, and records its pid.
launch() {
	local svc="$1"
	shift
	(
		exec 9>&- # the stack lock must not outlive this script
		ulimit -Hn 1048576 2>/dev/null || true
		ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
		exec setsid nohup "$@" </dev/null >>"$(stdout_log "$svc")" 2>&1
	) &
	echo $! >"$RUN/$svc.pid"
}

stdout_log() {
	case "$1" in
	kafka) echo "$LOGS/kafka/stdout.log" ;;
	clickhouse) echo "$LOGS/clickhouse/stdout.log" ;;
	*) echo "$LOGS/$1.stdout.log" ;;
	esac
}

started=()

# needs_start SVC PORT: false (and says so) when SVC already answers or is starting.
needs_start() {
	local pid
	if port_open "$2"; then
		log "$1: already answering on $HOST:$2, left alone"
		return 1
	fi
	if pid="$(svc_pid "$1")"; then
		log "$1: pid $pid is running (starting up?), not started again"
		return 1
	fi
	return 0
}

start_kafka() {
	local dir="$STACK/kafka" libs="$KAFKA_LIBS"
	mkdir -p "$dir/data" "$LOGS/kafka"

	if ! kafka_jars_fresh; then
		gather_kafka_jars || die "kafka: could not gather the broker's jars"
	fi

	cat >"$dir/server.properties" <<EOF
# Generated by deploy/stack/up.sh: single-node KRaft (combined broker + controller) for tests.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data

num.partitions=12
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
delete.topic.enable=true

offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=12
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

log.cleaner.enable=true
log.cleaner.threads=1
log.retention.hours=168
log.segment.bytes=268435456
num.network.threads=3
num.io.threads=4
EOF

	local heap java_opts
	read -r -a heap <<<"$KAFKA_HEAP"
	java_opts=(-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
		-Dlog4j2.configurationFile="$STACK_HERE/kafka/log4j2.xml" -Dkafka.logs.dir="$LOGS/kafka")

	if [[ ! -f $dir/data/meta.properties ]]; then
		[[ -s $dir/cluster-id ]] || head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$dir/cluster-id"
		log "kafka: formatting storage (cluster id $(cat "$dir/cluster-id"))"
		if ! java -Xmx256m "${java_opts[@]}" -cp "$libs/*" kafka.tools.StorageTool format \
			-t "$(cat "$dir/cluster-id")" -c "$dir/server.properties" --ignore-formatted \
			>>"$LOGS/kafka/format.log" 2>&1; then
			show_logs kafka
			die "kafka: storage format failed"
		fi
	fi

	log "kafka: starting (Kafka $(kafka_version), logs: $LOGS/kafka)"
	(cd "$dir" && launch kafka java "${heap[@]}" "${java_opts[@]}" -cp "$libs/*" kafka.Kafka "$dir/server.properties")
	started+=(kafka)
}

kafka_version() {
	local j
	for j in "$STACK/kafka/libs"/kafka_2.13-*.jar; do break; done
	j="${j##*/kafka_2.13-}"
	echo "${j%.jar}"
}

start_redis() {
	local dir="$STACK/redis"
	mkdir -p "$dir"
	cat >"$dir/redis.conf" <<EOF
# Generated by deploy/stack/up.sh (tests: no persistence).
bind $HOST
port $REDIS_PORT
protected-mode yes
daemonize no
logfile $LOGS/redis.log
dir $dir
save ""
appendonly no
maxclients 10000
EOF
	log "redis: starting"
	launch redis redis-server "$dir/redis.conf"
	started+=(redis)
}

start_mosquitto() {
	local dir="$STACK/mosquitto"
	mkdir -p "$dir"
	cat >"$dir/mosquitto.conf" <<EOF
# Generated by deploy/stack/up.sh: local broker for tests and load tests.
user root
per_listener_settings false
allow_anonymous true
persistence false
persistence_location $dir/
log_dest file $LOGS/mosquitto.log
log_type error
log_type warning
log_type notice
connection_messages false
log_timestamp_format %Y-%m-%dT%H:%M:%S
max_inflight_messages 1000
max_queued_messages 1000000
max_queued_bytes 0
memory_limit 0
set_tcp_nodelay true

listener $MQTT_PORT $HOST
max_connections -1
EOF
	log "mosquitto: starting (open files limit: $(ulimit -Hn) hard)"
	launch mosquitto mosquitto -c "$dir/mosquitto.conf"
	started+=(mosquitto)
}

start_clickhouse() {
	local dir="$STACK/clickhouse"
	mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$LOGS/clickhouse"
	cat >"$dir/users.xml" <<'EOF'
<?xml version="1.0"?>
<!-- Generated by deploy/stack/up.sh: user "default", no password, loopback only. -->
<yandex>
    <profiles>
        <default>
            <max_memory_usage>10000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
        </default>
        <readonly>
            <readonly>1</readonly>
        </readonly>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks replace="replace">
                <ip>::1</ip>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
EOF
	cat >"$dir/config.xml" <<EOF
<?xml version="1.0"?>
<!-- Generated by deploy/stack/up.sh: every path under the stack folder. -->
<yandex>
    <logger>
        <level>information</level>
        <log>$LOGS/clickhouse/clickhouse-server.log</log>
        <errorlog>$LOGS/clickhouse/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <listen_host>$HOST</listen_host>
    <http_port>$CLICKHOUSE_HTTP_PORT</http_port>
    <tcp_port>$CLICKHOUSE_PORT</tcp_port>
    <max_connections>4096</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>1073741824</uncompressed_cache_size>
    <mark_cache_size>536870912</mark_cache_size>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
    <query_log>
        <database>system</database>
        <table>query_log</table>
        <partition_by>toYYYYMM(event_date)</partition_by>
        <flush_interval_milliseconds>7500</flush_interval_milliseconds>
    </query_log>
    <max_table_size_to_drop>0</max_table_size_to_drop>
    <max_partition_size_to_drop>0</max_partition_size_to_drop>
</yandex>
EOF
	log "clickhouse: starting (logs: $LOGS/clickhouse)"
	(cd "$dir" && launch clickhouse clickhouse-server --config-file="$dir/config.xml")
	started+=(clickhouse)
}

if wants kafka && needs_start kafka "$KAFKA_PORT"; then start_kafka; fi
if wants redis && needs_start redis "$REDIS_PORT"; then start_redis; fi
if wants mosquitto && needs_start mosquitto "$MQTT_PORT"; then start_mosquitto; fi
if wants clickhouse && needs_start clickhouse "$CLICKHOUSE_PORT"; then start_clickhouse; fi

# ---------------------------------------------------------------------------------------------
# Wait until each answers a real request
# ---------------------------------------------------------------------------------------------

WAITFOR="$STACK/bin/waitfor"
if wants kafka; then
	mkdir -p "$STACK/bin"
	if ! (cd "$REPO" && go build -o "$WAITFOR" ./deploy/stack/waitfor) >"$LOGS/waitfor-build.log" 2>&1; then
		cat "$LOGS/waitfor-build.log" >&2
		die "building deploy/stack/waitfor failed"
	fi
fi

# check_SVC: one readiness probe (called indirectly by wait_ready).
check_kafka() { "$WAITFOR" -q -kafka "$HOST:$KAFKA_PORT" -timeout 3s 2>/dev/null; }
check_redis() { [[ "$(timeout 5 redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }
check_mosquitto() {
	local topic="ams/stack/ping/$$" out
	# A real MQTT round trip: subscribe, publish once the subscription is in place, receive.
	out="$(
		timeout 10 mosquitto_sub -h "$HOST" -p "$MQTT_PORT" -q 1 -t "$topic" -C 1 -W 5 2>/dev/null &
		sleep 0.3
		timeout 5 mosquitto_pub -h "$HOST" -p "$MQTT_PORT" -q 1 -t "$topic" -m pong 2>/dev/null || true
		wait
	)" || true
	[[ $out == pong ]]
}
check_clickhouse() {
	[[ "$(timeout 10 clickhouse-client --host "$HOST" --port "$CLICKHOUSE_PORT" --query 'SELECT 1' 2>/dev/null)" == 1 ]]
}

# wait_ready SVC: polls check_SVC until it succeeds; fails early when our process died.
wait_ready() {
	local svc="$1" deadline=$((SECONDS + TIMEOUT)) ours=0 s
	for s in "${started[@]}"; do [[ $s == "$svc" ]] && ours=1; done
	until "check_$svc"; do
		if [[ $ours == 1 ]] && ! svc_pid "$svc" >/dev/null; then
			show_logs "$svc"
			die "$svc exited during start-up (logs above; all logs under $LOGS)"
		fi
		if ((SECONDS >= deadline)); then
			show_logs "$svc"
			die "$svc did not answer within ${TIMEOUT}s (logs above; all logs under $LOGS)"
		fi
		sleep 0.5
	done
	log "$svc: ready (+$((SECONDS - START_SECONDS))s)"
}

for s in "${ALL_SERVICES[@]}"; do
	if wants "$s"; then wait_ready "$s"; fi
done

# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------

ver_kafka() { [[ -d $STACK/kafka/libs ]] && echo "Kafka $(kafka_version) KRaft" || echo "Kafka"; }
ver_redis() { timeout 5 redis-cli -h "$HOST" -p "$REDIS_PORT" info server 2>/dev/null | tr -d '\r' | awk -F: '/^redis_version/ {print "Redis " $2}'; }
# shellcheck disable=SC2016 # $SYS is a literal MQTT topic
ver_mosquitto() { timeout 5 mosquitto_sub -h "$HOST" -p "$MQTT_PORT" -t '$SYS/broker/version' -C 1 -W 3 2>/dev/null || true; }
ver_clickhouse() { echo "ClickHouse $(timeout 10 clickhouse-client --host "$HOST" --port "$CLICKHOUSE_PORT" --query 'SELECT version()' 2>/dev/null)"; }

echo "AMS test stack up in $((SECONDS - START_SECONDS))s (data and logs: $STACK)"
wants kafka && printf '  %-11s %-28s %s\n' kafka "$HOST:$KAFKA_PORT" "$(ver_kafka), controller $HOST:$KAFKA_CONTROLLER_PORT"
wants redis && printf '  %-11s %-28s %s\n' redis "$HOST:$REDIS_PORT" "$(ver_redis)"
wants mosquitto && printf '  %-11s %-28s %s\n' mqtt "tcp://$HOST:$MQTT_PORT" "$(ver_mosquitto)"
wants clickhouse && printf '  %-11s %-28s %s\n' clickhouse "$HOST:$CLICKHOUSE_PORT" "$(ver_clickhouse), native; HTTP http://$HOST:$CLICKHOUSE_HTTP_PORT"
exit 0
