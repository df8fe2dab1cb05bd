#!/usr/bin/env bash
# shellcheck disable=SC2317 # check_* functions are called indirectly, by name
# Starts the real-service test stack on loopback, installing what is missing:
#   Kafka 4.x KRaft (broker+controller) 127.0.0.1:9092 (controller 127.0.0.1:9093)
#   Redis 127.0.0.1:6379, Mosquitto 127.0.0.1:1883, ClickHouse 127.0.0.1:9000 (HTTP 8123)
# Secure by default (AMS_STACK_SECURE=1): a CA and server/client certificates generated with
# openssl under $AMS_STACK_DIR/certs; Kafka's client listener is SASL_SSL with SCRAM-SHA-512
# (and -256), user "ams"; Redis serves TLS only, user "ams" (the default user is off).
# Passwords are generated once into $AMS_STACK_DIR/secrets. Everything a client needs is
# written to $AMS_STACK_DIR/env as `export AMS_...=...` lines (the Makefile sources it).
#
# Usage: deploy/stack/up.sh [--install-only] [kafka|redis|mosquitto|clickhouse ...]   (default: all four)
#
# --install-only: install what the named services need (Debian packages) and exit, starting
# nothing (`make run` uses it for clickhouse-server, which `ams-dev` starts itself).
#
# Idempotent: a service already answering on its port is left alone. All data and logs go
# under ${AMS_STACK_DIR:-<repo>/.stack}. Stop with deploy/stack/down.sh [--purge].
# Environment:
#   AMS_STACK_DIR       where data, logs, configs and pid files go
#   AMS_STACK_TIMEOUT   seconds to wait for each service to answer (default 180)
#   AMS_KAFKA_HEAP      JVM heap flags for the broker (default "-Xms256m -Xmx1g")
#   AMS_KAFKA_TRANSACTION_VERSION  the broker's transaction.version feature (default 1: the
#                       client adds partitions to a transaction itself; 2, Kafka 4's default,
#                       makes the first produce of each partition wait on the coordinator and
#                       measured slower round trips and sequence errors under backlog here:
#                       docs/OPERATIONS.md, "Kafka transaction version")
#   AMS_STACK_SECURE    1 (default): TLS + authentication as above; 0: plaintext and open
#   AMS_STACK_LOCK      lock file serializing up/down runs (default /tmp/ams-stack.lock)
#   AMS_KAFKA_PORT, AMS_KAFKA_CONTROLLER_PORT, AMS_REDIS_PORT, AMS_MQTT_PORT,
#   AMS_CLICKHOUSE_PORT, AMS_CLICKHOUSE_HTTP_PORT   ports (defaults above), for a private stack
#   AMS_MQTT_AUTH       1 (default): Mosquitto without anonymous access, with role accounts and
#                       devices managed at run time by its dynamic-security plugin; 0: anonymous
set -euo pipefail

# shellcheck source=deploy/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TIMEOUT="${AMS_STACK_TIMEOUT:-180}"
KAFKA_HEAP="${AMS_KAFKA_HEAP:--Xms256m -Xmx1g}"
KAFKA_TXN_VERSION="${AMS_KAFKA_TRANSACTION_VERSION:-1}"
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
if [[ $SECURE == 1 ]]; then
	have openssl || pkgs+=(openssl)
fi
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
# Tools the tests drive, installed by a whole-stack `up` (no service named), which is what
# `make up` / `make test` ask for: promtool (Debian's prometheus package; its service is kept
# from starting) checks the alerting rules in deploy/prometheus; chromium runs the console's
# browser tests (cmd/ams TestConsoleInBrowser).
if [[ $# -eq 0 ]]; then
	have promtool || pkgs+=(prometheus)
	have chromium || pkgs+=(chromium)
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
# Certificates and secrets (secure stack)
# ---------------------------------------------------------------------------------------------

# cert_fresh FILE: FILE is a certificate valid for at least 30 more days.
cert_fresh() { [[ -s $1 ]] && openssl x509 -checkend 2592000 -noout -in "$1" >/dev/null 2>&1; }

# make_certs: a CA, a server certificate (localhost, 127.0.0.1; server and client auth, so a
# broker can present it to itself) and a client certificate, under $CERTS. Kept while every
# file is there and valid for 30 more days; otherwise all are generated again.
make_certs() {
	local f ok=1
	for f in ca.pem ca-key.pem server.pem server-key.pem client.pem client-key.pem kafka-keystore.pem; do
		[[ -s $CERTS/$f ]] || ok=0
	done
	if [[ $ok == 1 ]] && cert_fresh "$CERTS/ca.pem" && cert_fresh "$CERTS/server.pem" && cert_fresh "$CERTS/client.pem"; then
		return 0
	fi
	log "certs: generating a CA, server and client certificates under $CERTS"
	mkdir -p "$CERTS"
	chmod 700 "$CERTS"
	local tmp
	tmp="$(mktemp -d "$CERTS/.gen.XXXXXX")"
	(
		set -e
		cd "$tmp"
		openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 825 -keyout ca-key.pem -out ca.pem \
			-subj "/CN=ams test stack CA" -addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign"
		printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
			"extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1" >server.ext
		printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
			"extendedKeyUsage=clientAuth" >client.ext
		openssl req -new -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr -subj "/CN=localhost"
		openssl x509 -req -sha256 -days 825 -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
			-extfile server.ext -out server.pem
		openssl req -new -newkey rsa:2048 -nodes -keyout client-key.pem -out client.csr -subj "/CN=ams-test-client"
		openssl x509 -req -sha256 -days 825 -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
			-extfile client.ext -out client.pem
		# Kafka's PEM key store: the (PKCS#8, unencrypted) key followed by the certificate chain.
		cat server-key.pem server.pem ca.pem >kafka-keystore.pem
		chmod 600 ./*-key.pem kafka-keystore.pem
		mv ca.pem ca-key.pem server.pem server-key.pem client.pem client-key.pem kafka-keystore.pem "$CERTS/"
	) >"$LOGS/certs.log" 2>&1 || {
		cat "$LOGS/certs.log" >&2
		rm -rf "$tmp"
		die "certs: openssl failed (log: $LOGS/certs.log)"
	}
	rm -rf "$tmp"
}

# secret NAME: prints the password in $SECRETS/NAME.password, generating it (hex) the first time.
secret_file() { echo "$SECRETS/$1.password"; }
secret() {
	local f
	f="$(secret_file "$1")"
	if [[ ! -s $f ]]; then
		mkdir -p "$SECRETS"
		chmod 700 "$SECRETS"
		(umask 077 && openssl rand -hex 24 >"$f")
	fi
	cat "$f"
}

if [[ $SECURE == 1 ]]; then
	make_certs
	secret kafka-admin >/dev/null
	secret kafka-ams >/dev/null
	secret redis-ams >/dev/null
fi

# ---------------------------------------------------------------------------------------------
# Environment file: what a client of this stack needs, one section per service
# ---------------------------------------------------------------------------------------------

# env_var NAME VALUE: one shell-quoted export line.
env_var() { printf 'export %s=%q\n' "$1" "$2"; }

env_kafka() {
	env_var AMS_KAFKA_BROKERS "$HOST:$KAFKA_PORT"
	if [[ $SECURE == 1 ]]; then
		env_var AMS_KAFKA_TLS_CA_FILE "$CERTS/ca.pem"
		env_var AMS_KAFKA_SASL_MECHANISM SCRAM-SHA-512
		env_var AMS_KAFKA_SASL_USERNAME ams
		env_var AMS_KAFKA_SASL_PASSWORD_FILE "$(secret_file kafka-ams)"
	fi
	echo "# A single broker: ams migrate creates topics with replication factor 1 here (only here)."
	env_var AMS_REPLICATION 1
	env_var AMS_ALLOW_UNSAFE_REPLICATION true
}
env_redis() {
	env_var AMS_REDIS_ADDR "$HOST:$REDIS_PORT"
	if [[ $SECURE == 1 ]]; then
		env_var AMS_REDIS_TLS_CA_FILE "$CERTS/ca.pem"
		env_var AMS_REDIS_TLS_CERT_FILE "$CERTS/client.pem"
		env_var AMS_REDIS_TLS_KEY_FILE "$CERTS/client-key.pem"
		env_var AMS_REDIS_USERNAME ams
		env_var AMS_REDIS_PASSWORD_FILE "$(secret_file redis-ams)"
	fi
}
MQTT_AUTH_DIR="$STACK/mosquitto/auth"
MQTT_DYNSEC_ADMIN=ams-dynsec-admin
# Credentials only when the broker of this folder runs with authentication (start_mosquitto
# leaves $MQTT_AUTH_DIR/on).
env_mosquitto() {
	env_var AMS_MQTT_URL "tcp://$HOST:$MQTT_PORT"
	if [[ -f $MQTT_AUTH_DIR/on ]]; then
		env_var AMS_MQTT_USERNAME tests
		env_var AMS_MQTT_PASSWORD "$(cat "$MQTT_AUTH_DIR/tests.password")"
		env_var AMS_MQTT_DYNSEC_USERNAME "$MQTT_DYNSEC_ADMIN"
		env_var AMS_MQTT_DYNSEC_PASSWORD_FILE "$MQTT_AUTH_DIR/$MQTT_DYNSEC_ADMIN.password"
	fi
}
env_clickhouse() {
	env_var AMS_CLICKHOUSE_ADDR "$HOST:$CLICKHOUSE_PORT"
	# ClickHouse serves plaintext and user "default" without a password on this stack.
}
ENV_SECTIONS=(kafka redis mosquitto clickhouse)

# write_env: $ENV_FILE from every section (all services, whichever were named), atomically.
write_env() {
	local s
	{
		echo "# Generated by deploy/stack/up.sh for the stack in $STACK ($([[ $SECURE == 1 ]] && echo secure || echo "plaintext, open"))."
		echo "# Source it before running tests or roles against this stack: source $ENV_FILE"
		for s in "${ENV_SECTIONS[@]}"; do
			echo "# --- $s ---"
			"env_$s"
		done
	} >"$ENV_FILE.tmp"
	chmod 600 "$ENV_FILE.tmp"
	mv "$ENV_FILE.tmp" "$ENV_FILE"
}
write_env

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
		if [[ $SECURE == 1 ]] && ! svc_pid "$1" >/dev/null; then
			log "$1: not started from $STACK: $ENV_FILE names this folder's certificates and passwords;" \
				"if that server belongs to another stack folder, set AMS_STACK_DIR to it"
		fi
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

	# The security setting the data was formatted with (SCRAM users live in the metadata log).
	local mode=plaintext listener=PLAINTEXT
	if [[ $SECURE == 1 ]]; then
		mode="scram:$(cat "$(secret_file kafka-admin)" "$(secret_file kafka-ams)" | sha256sum | cut -c1-16)"
		listener=SASL_SSL
	fi
	# The transaction version is set at format time too.
	mode="$mode;transaction.version=$KAFKA_TXN_VERSION"
	if [[ -f $dir/data/meta.properties && "$(cat "$dir/security" 2>/dev/null || echo plaintext)" != "$mode" ]]; then
		log "kafka: its data was formatted for another security or transaction version setting; deleting it (test data) to format again"
		rm -rf "$dir/data"
		mkdir -p "$dir/data"
	fi

	(umask 077 && cat >"$dir/server.properties" <<EOF
# Generated by deploy/stack/up.sh: single-node KRaft (combined broker + controller) for tests.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=$listener://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=$listener://$HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=$listener
listener.security.protocol.map=CONTROLLER:PLAINTEXT,$listener:$listener
log.dirs=$dir/data
$(kafka_security_properties)

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
	)

	local heap java_opts
	read -r -a heap <<<"$KAFKA_HEAP"
	java_opts=(-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
		-Dlog4j2.configurationFile="$STACK_HERE/kafka/log4j2.xml" -Dkafka.logs.dir="$LOGS/kafka")

	if [[ ! -f $dir/data/meta.properties ]]; then
		[[ -s $dir/cluster-id ]] || head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$dir/cluster-id"
		log "kafka: formatting storage (cluster id $(cat "$dir/cluster-id"), ${mode%%:*})"
		local scram=() u m
		if [[ $SECURE == 1 ]]; then
			# The broker's own user (inter-broker traffic) and the clients' user, both mechanisms.
			for u in admin ams; do
				for m in SCRAM-SHA-256 SCRAM-SHA-512; do
					scram+=(--add-scram "$m=[name=$u,password=$(secret "kafka-$u")]")
				done
			done
		fi
		if ! java -Xmx256m "${java_opts[@]}" -cp "$libs/*" kafka.tools.StorageTool format \
			-t "$(cat "$dir/cluster-id")" -c "$dir/server.properties" --ignore-formatted "${scram[@]}" \
			--feature "transaction.version=$KAFKA_TXN_VERSION" \
			>>"$LOGS/kafka/format.log" 2>&1; then
			show_logs kafka
			die "kafka: storage format failed"
		fi
		echo "$mode" >"$dir/security"
	fi

	log "kafka: starting (Kafka $(kafka_version), logs: $LOGS/kafka)"
	(cd "$dir" && launch kafka java "${heap[@]}" "${java_opts[@]}" -cp "$libs/*" kafka.Kafka "$dir/server.properties")
	started+=(kafka)
}

# kafka_security_properties: the TLS and SASL part of server.properties (empty when plaintext).
kafka_security_properties() {
	[[ $SECURE == 1 ]] || return 0
	cat <<EOF
# Clients authenticate with SCRAM over TLS; the controller listener stays plaintext on loopback.
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(secret kafka-admin)";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(secret kafka-admin)";
ssl.keystore.type=PEM
ssl.keystore.location=$CERTS/kafka-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$CERTS/ca.pem
ssl.client.auth=requested
ssl.endpoint.identification.algorithm=https
EOF
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
	(umask 077 && cat >"$dir/redis.conf" <<EOF
# Generated by deploy/stack/up.sh (tests: no persistence).
bind $HOST
$(redis_security_conf)
protected-mode yes
daemonize no
logfile $LOGS/redis.log
dir $dir
save ""
appendonly no
maxclients 10000
EOF
	)
	log "redis: starting ($([[ $SECURE == 1 ]] && echo "TLS only, ACL user ams" || echo "plaintext, no password"))"
	launch redis redis-server "$dir/redis.conf"
	started+=(redis)
}

# redis_security_conf: the listening and access part of redis.conf.
redis_security_conf() {
	if [[ $SECURE != 1 ]]; then
		echo "port $REDIS_PORT"
		return 0
	fi
	cat <<EOF
# TLS only (no plaintext port); clients present a certificate of the stack's CA.
port 0
tls-port $REDIS_PORT
tls-cert-file $CERTS/server.pem
tls-key-file $CERTS/server-key.pem
tls-ca-cert-file $CERTS/ca.pem
tls-auth-clients yes
# The default user is off: every client logs in as "ams".
user default off
user ams on >$(secret redis-ams) ~* &* +@all
EOF
}

start_mosquitto() {
	local dir="$STACK/mosquitto" auth_conf="allow_anonymous true"
	mkdir -p "$dir"
	rm -f "$MQTT_AUTH_DIR/on"
	if [[ $MQTT_AUTH == 1 ]]; then
		write_mosquitto_auth
		auth_conf="$(cat "$MQTT_AUTH_DIR/dynsec.conf")"
	fi
	cat >"$dir/mosquitto.conf" <<EOF
# Generated by deploy/stack/up.sh: local broker for tests and load tests.
user root
per_listener_settings false
$auth_conf
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
	if [[ $MQTT_AUTH == 1 ]]; then touch "$MQTT_AUTH_DIR/on"; fi
}

# ---------------------------------------------------------------------------------------------
# Mosquitto authentication (owned by the sec-auth work; keep edits to this block)
# ---------------------------------------------------------------------------------------------
# Role accounts ingest, egress and tests (service ACL: every uplink, every downlink; also ams/#
# and /ams/#, the smoke tests' topics) and the dynamic-security administrator "ams-dynsec-admin", each with a random password
# kept in $MQTT_AUTH_DIR/<name>.password (0600). Devices are created at run time by tests
# (testenv.MQTTDevice) through the plugin; none is in the files. The configuration comes from
# `ams api -write-mosquitto-config -mosquitto-dynsec-admin ...`, the same code production uses.
MQTT_AUTH="${AMS_MQTT_AUTH:-1}"
MQTT_ROLE_ACCOUNTS=(ingest egress tests)

mqtt_secret_file() {
	local f="$MQTT_AUTH_DIR/$1.password"
	if [[ ! -s $f ]]; then
		(umask 077 && head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$f")
	fi
	echo "$f"
}

write_mosquitto_auth() {
	mkdir -p "$MQTT_AUTH_DIR" "$STACK/bin"
	chmod 700 "$MQTT_AUTH_DIR"
	local a accounts="$MQTT_AUTH_DIR/accounts"
	: >"$accounts.tmp"
	chmod 600 "$accounts.tmp"
	for a in "${MQTT_ROLE_ACCOUNTS[@]}"; do
		printf '%s:%s\n' "$a" "$(cat "$(mqtt_secret_file "$a")")" >>"$accounts.tmp"
	done
	mv "$accounts.tmp" "$accounts"
	mqtt_secret_file "$MQTT_DYNSEC_ADMIN" >/dev/null
	if ! (cd "$REPO" && go build -o "$STACK/bin/ams" ./cmd/ams) >"$LOGS/ams-build.log" 2>&1; then
		cat "$LOGS/ams-build.log" >&2
		die "building ams (for the Mosquitto configuration) failed"
	fi
	"$STACK/bin/ams" api -write-mosquitto-config "$MQTT_AUTH_DIR" -service-accounts-file "$accounts" \
		-mosquitto-dynsec-admin "$MQTT_DYNSEC_ADMIN" \
		-mosquitto-dynsec-admin-password-file "$MQTT_AUTH_DIR/$MQTT_DYNSEC_ADMIN.password" \
		-mosquitto-service-topics 'ams/#,/ams/#' >>"$LOGS/mosquitto.stdout.log"
}

# mqtt_cli_auth: mosquitto_sub/pub options of the tests account, when the broker we run has auth.
mqtt_cli_auth() {
	if [[ -f $MQTT_AUTH_DIR/on ]]; then
		printf '%s\n' -u tests -P "$(cat "$MQTT_AUTH_DIR/tests.password")"
	fi
}

# write_mqtt_env: rewrite $STACK/env once Mosquitto runs, so it carries the broker's credentials
# (env_mosquitto).
write_mqtt_env() { write_env; }

start_clickhouse() {
	local dir="$STACK/clickhouse"
	mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$LOGS/clickhouse"
	# The one server configuration, shared with ams-dev (deploy/stack/chserver).
	local f
	for f in users.xml config.xml; do
		sed -e "s|{dir}|$dir|g" -e "s|{logs}|$LOGS/clickhouse|g" -e "s|{host}|$HOST|g" \
			-e "s|{tcp_port}|$CLICKHOUSE_PORT|g" -e "s|{http_port}|$CLICKHOUSE_HTTP_PORT|g" -e "s|{log_level}|information|g" \
			-e "s|{max_memory_usage}|10000000000|g" -e "s|{max_connections}|4096|g" -e "s|{max_concurrent_queries}|100|g" \
			-e "s|{uncompressed_cache_size}|1073741824|g" -e "s|{mark_cache_size}|536870912|g" \
			"$REPO/deploy/stack/chserver/$f" >"$dir/$f"
		if grep -q '{[a-z_]*}' "$dir/$f"; then die "clickhouse: a placeholder of deploy/stack/chserver/$f is left in $dir/$f"; fi
	done
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
# Kafka: a metadata request with the env file's settings (TLS and SCRAM on a secure stack).
check_kafka() { (source "$ENV_FILE" && "$WAITFOR" -q -kafka "$HOST:$KAFKA_PORT" -timeout 3s 2>/dev/null); }
# rcli ARGS...: redis-cli with this stack's TLS and ACL settings (password through REDISCLI_AUTH).
rcli() {
	if [[ $SECURE == 1 ]]; then
		REDISCLI_AUTH="$(secret redis-ams)" timeout 5 redis-cli -h "$HOST" -p "$REDIS_PORT" --tls \
			--cacert "$CERTS/ca.pem" --cert "$CERTS/client.pem" --key "$CERTS/client-key.pem" --user ams "$@"
	else
		timeout 5 redis-cli -h "$HOST" -p "$REDIS_PORT" "$@"
	fi
}
check_redis() { [[ "$(rcli ping 2>/dev/null)" == PONG ]]; }
check_mosquitto() {
	local topic="ams/stack/ping/$$" out
	# A real MQTT round trip: subscribe, publish once the subscription is in place, receive.
	out="$(
		mapfile -t auth < <(mqtt_cli_auth)
		timeout 10 mosquitto_sub -h "$HOST" -p "$MQTT_PORT" "${auth[@]}" -q 1 -t "$topic" -C 1 -W 5 2>/dev/null &
		sleep 0.3
		timeout 5 mosquitto_pub -h "$HOST" -p "$MQTT_PORT" "${auth[@]}" -q 1 -t "$topic" -m pong 2>/dev/null || true
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
			die "$svc did not answer within ${TIMEOUT}s (logs above; all logs under $LOGS; a server already on the port that up.sh left alone may not match AMS_STACK_SECURE=$SECURE)"
		fi
		sleep 0.5
	done
	log "$svc: ready (+$((SECONDS - START_SECONDS))s)"
}

for s in "${ALL_SERVICES[@]}"; do
	if wants "$s"; then wait_ready "$s"; fi
done
if wants mosquitto; then write_mqtt_env; fi

# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------

ver_kafka() { [[ -d $STACK/kafka/libs ]] && echo "Kafka $(kafka_version) KRaft" || echo "Kafka"; }
ver_redis() { rcli info server 2>/dev/null | tr -d '\r' | awk -F: '/^redis_version/ {print "Redis " $2}'; }
# shellcheck disable=SC2016 # $SYS is a literal MQTT topic
ver_mosquitto() {
	local auth
	mapfile -t auth < <(mqtt_cli_auth)
	timeout 5 mosquitto_sub -h "$HOST" -p "$MQTT_PORT" "${auth[@]}" -t '$SYS/broker/version' -C 1 -W 3 2>/dev/null || true
	if [[ -f $MQTT_AUTH_DIR/on ]]; then echo " (auth: dynamic-security, no anonymous)"; fi
}
ver_clickhouse() { echo "ClickHouse $(timeout 10 clickhouse-client --host "$HOST" --port "$CLICKHOUSE_PORT" --query 'SELECT version()' 2>/dev/null)"; }

echo "AMS test stack up in $((SECONDS - START_SECONDS))s (data and logs: $STACK)"
if [[ $SECURE == 1 ]]; then
	kafka_sec="SASL_SSL, SCRAM-SHA-512 user ams" redis_sec="TLS only, ACL user ams"
else
	kafka_sec="PLAINTEXT, open" redis_sec="plaintext, open"
fi
wants kafka && printf '  %-11s %-28s %s\n' kafka "$HOST:$KAFKA_PORT" "$(ver_kafka), controller $HOST:$KAFKA_CONTROLLER_PORT; $kafka_sec"
wants redis && printf '  %-11s %-28s %s\n' redis "$HOST:$REDIS_PORT" "$(ver_redis); $redis_sec"
wants mosquitto && printf '  %-11s %-28s %s\n' mqtt "tcp://$HOST:$MQTT_PORT" "$(ver_mosquitto)"
wants clickhouse && printf '  %-11s %-28s %s\n' clickhouse "$HOST:$CLICKHOUSE_PORT" "$(ver_clickhouse), native; HTTP http://$HOST:$CLICKHOUSE_HTTP_PORT"
echo "  client settings: source $ENV_FILE   (replication factor 1 allowed: single broker)"
exit 0
