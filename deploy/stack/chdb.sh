#!/usr/bin/env bash
# Installs the current ClickHouse engine, embedded in Python (chdb-core from PyPI), into a venv
# under ${AMS_STACK_DIR:-<repo>/.stack}/chdb, for the current-ClickHouse check of
# sinks/chsink (TestCurrentClickHouse). Idempotent: a venv that already imports the pinned
# version is left alone. Prints nothing else on success; `make test` runs it (target chdb).
#
# Environment: AMS_STACK_DIR; AMS_CHDB_VERSION (default below, pinned).
set -euo pipefail

# shellcheck source=deploy/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CHDB_VERSION="${AMS_CHDB_VERSION:-26.9.0}"
VENV="$STACK/chdb/venv"
PY="$VENV/bin/python"

if [[ -x $PY ]] && "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('chdb-core') != '$CHDB_VERSION')" 2>/dev/null; then
	exit 0
fi
mkdir -p "$STACK/chdb" "$LOGS"
# A fresh Debian has python3 but maybe not its venv module.
if ! /usr/bin/env python3 -c 'import venv, ensurepip' 2>/dev/null; then
	[[ $(id -u) == 0 ]] || die "python3-venv missing: run as root or apt-get install python3-venv"
	log "installing python3-venv"
	DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >>"$LOGS/apt.log" 2>&1 ||
		{ apt-get update >>"$LOGS/apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >>"$LOGS/apt.log" 2>&1; } ||
		die "apt-get install python3-venv failed (see $LOGS/apt.log)"
fi
log "installing chdb-core==$CHDB_VERSION into $VENV (log: $LOGS/chdb.log)"
python3 -m venv "$VENV" >>"$LOGS/chdb.log" 2>&1 || die "python3 -m venv $VENV failed (see $LOGS/chdb.log)"
"$PY" -m pip install --disable-pip-version-check -q "chdb-core==$CHDB_VERSION" >>"$LOGS/chdb.log" 2>&1 ||
	die "pip install chdb-core==$CHDB_VERSION failed (see $LOGS/chdb.log)"
"$PY" -c 'import chdb' || die "chdb does not import from $VENV"
log "chdb-core $CHDB_VERSION ready: $PY"
