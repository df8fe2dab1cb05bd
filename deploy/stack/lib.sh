# shellcheck shell=bash disable=SC2034 # variables are used by the scripts that source this
# Shared by deploy/stack/up.sh and deploy/stack/down.sh (sourced, not run).
#
# Everything the stack writes lives under $STACK (default <repo>/.stack):
#   $STACK/run/<svc>.pid      pid of each process up.sh started
#   $STACK/logs/...           every log (kafka/, clickhouse/, redis.log, mosquitto.log, apt.log, maven.log)
#   $STACK/kafka|redis|mosquitto|clickhouse/   generated configs and data

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

STACK_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$STACK_HERE/../.." && pwd)"
STACK="${AMS_STACK_DIR:-$REPO/.stack}"
RUN="$STACK/run"
LOGS="$STACK/logs"
# Marker that makes `down.sh --purge` willing to delete $STACK.
STACK_MARKER=".ams-stack"

HOST=127.0.0.1
KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093
REDIS_PORT=6379
MQTT_PORT="${AMS_MQTT_PORT:-1883}"
CLICKHOUSE_PORT=9000
CLICKHOUSE_HTTP_PORT=8123

ALL_SERVICES=(kafka redis mosquitto clickhouse)

# One lock for the whole machine: two work trees share the same loopback ports, so their
# up.sh/down.sh runs are serialized and the second one finds the services answering.
STACK_LOCK="${AMS_STACK_LOCK:-/tmp/ams-stack.lock}"

log() { printf '[stack] %s\n' "$*" >&2; }
die() {
	printf '[stack] ERROR: %s\n' "$*" >&2
	exit 1
}

take_lock() {
	exec 9>"$STACK_LOCK"
	if ! flock -w 600 9; then
		die "another up.sh/down.sh holds $STACK_LOCK for more than 10 minutes"
	fi
}

# port_open PORT: something accepts TCP connections on $HOST:PORT.
port_open() {
	timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

# exe_pattern SVC: extended regexp the basename of /proc/PID/exe must match for SVC,
# so a recycled pid is never taken for one of ours.
exe_pattern() {
	case "$1" in
	kafka) echo '^java$' ;;
	redis) echo '^redis-(server|check-rdb)$' ;;
	mosquitto) echo '^mosquitto$' ;;
	clickhouse) echo '^clickhouse' ;;
	*) die "unknown service $1" ;;
	esac
}

# pid_running PID: the process exists and is not a zombie waiting to be reaped.
pid_running() {
	local state
	state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
	[[ -n $state && $state != Z && $state != X ]]
}

# svc_pid SVC: prints the pid of our running SVC and succeeds, or fails.
svc_pid() {
	local f="$RUN/$1.pid" pid exe
	[[ -f $f ]] || return 1
	pid="$(tr -dc '0-9' <"$f")"
	[[ -n $pid ]] || return 1
	pid_running "$pid" || return 1
	exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
	exe="${exe% (deleted)}"
	[[ "$(basename "$exe")" =~ $(exe_pattern "$1") ]] || return 1
	echo "$pid"
}

# svc_logs SVC: the log files worth showing when SVC fails.
svc_logs() {
	case "$1" in
	kafka) echo "$LOGS/kafka/stdout.log $LOGS/kafka/server.log $LOGS/kafka/format.log" ;;
	redis) echo "$LOGS/redis.stdout.log $LOGS/redis.log" ;;
	mosquitto) echo "$LOGS/mosquitto.stdout.log $LOGS/mosquitto.log" ;;
	clickhouse) echo "$LOGS/clickhouse/stdout.log $LOGS/clickhouse/clickhouse-server.err.log $LOGS/clickhouse/clickhouse-server.log" ;;
	esac
}

show_logs() {
	local f errs
	for f in $(svc_logs "$1"); do
		if [[ -s $f ]]; then
			printf '[stack] ---- last lines of %s ----\n' "$f" >&2
			tail -n 40 "$f" >&2
			errs="$(grep -E '(ERROR|FATAL|Error|error:)' "$f" | tail -n 8 || true)"
			if [[ -n $errs ]]; then
				printf '[stack] ---- last error lines of %s ----\n%s\n' "$f" "$errs" >&2
			fi
		fi
	done
}
