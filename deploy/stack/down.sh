#!/usr/bin/env bash
# Stops the services deploy/stack/up.sh started (by the pid files under the stack folder),
# leaving data and logs in place. A service up.sh found already running and left alone is
# not stopped.
#
# Usage: deploy/stack/down.sh [--purge] [kafka|redis|mosquitto|clickhouse ...]
#   --purge   also delete the stack folder ${AMS_STACK_DIR:-<repo>/.stack} (data and logs)
set -euo pipefail

# shellcheck source=deploy/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

purge=0
services=()
for a in "$@"; do
	case "$a" in
	--purge) purge=1 ;;
	-h | --help)
		sed -n '2,7p' "$0"
		exit 0
		;;
	*)
		exe_pattern "$a" >/dev/null
		services+=("$a")
		;;
	esac
done
if [[ $purge == 1 && ${#services[@]} -gt 0 ]]; then
	die "--purge deletes every service's data: give no service names with it"
fi
if [[ ${#services[@]} -eq 0 ]]; then
	services=("${ALL_SERVICES[@]}")
fi

if [[ ! -d $STACK ]]; then
	log "no stack folder at $STACK: nothing to stop"
	exit 0
fi
take_lock

# Ask every service to stop at once, then wait for each (Kafka's and ClickHouse's clean
# shutdowns take a few seconds); anything still running after 60 s is killed.
declare -A pids=()
for s in "${services[@]}"; do
	if pid="$(svc_pid "$s")"; then
		log "$s: stopping pid $pid"
		kill -TERM "$pid" 2>/dev/null || true
		pids[$s]=$pid
	else
		rm -f "$RUN/$s.pid"
	fi
done

deadline=$((SECONDS + 60))
for s in "${!pids[@]}"; do
	pid=${pids[$s]}
	while pid_running "$pid" && ((SECONDS < deadline)); do
		sleep 0.2
	done
	if pid_running "$pid"; then
		log "$s: still running after 60s, killing pid $pid"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$RUN/$s.pid"
	log "$s: stopped"
done

if [[ $purge == 1 ]]; then
	if [[ ! -f $STACK/$STACK_MARKER ]]; then
		die "$STACK has no $STACK_MARKER marker: not deleting it"
	fi
	log "purging $STACK"
	rm -rf "$STACK"
fi
