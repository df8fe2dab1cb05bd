#!/usr/bin/env bash
# Installs the programs the integration tests drive but up.sh does not start as services:
#   media   nginx with the RTMP module and ffmpeg (TestStreamPublishHook)
#   clickhouse-cluster   Debian's zookeeper (TestClickHouseCluster starts its own server class)
#
# Usage: deploy/stack/tools.sh [group...]   (default: every group)
# Idempotent: installs only what is missing, with Debian's apt-get (root; `apt-get update` only
# when the first try fails). Log: $AMS_STACK_DIR/logs/apt-tools.log.
set -euo pipefail

# shellcheck source=deploy/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL_GROUPS=(media clickhouse-cluster)
groups=("$@")
[[ ${#groups[@]} -gt 0 ]] || groups=("${ALL_GROUPS[@]}")

have() { command -v "$1" >/dev/null 2>&1; }

pkgs=()
for g in "${groups[@]}"; do
	case "$g" in
	media)
		have nginx || pkgs+=(nginx)
		[[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ]] || pkgs+=(libnginx-mod-rtmp)
		have ffmpeg || pkgs+=(ffmpeg)
		;;
	clickhouse-cluster)
		[[ -f /usr/share/java/zookeeper.jar ]] || pkgs+=(zookeeper)
		;;
	*) die "unknown tool group $g (known: ${ALL_GROUPS[*]})" ;;
	esac
done
[[ ${#pkgs[@]} -gt 0 ]] || exit 0

[[ $(id -u) == 0 ]] || die "missing packages ${pkgs[*]}: run as root or install them (apt-get install ${pkgs[*]})"
mkdir -p "$LOGS"
take_lock
log "installing ${pkgs[*]} (log: $LOGS/apt-tools.log)"
t0=$SECONDS
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d keeps nginx from starting as a service on install (the tests start their own).
POLICY_RC=/usr/sbin/policy-rc.d
added=0
if [[ ! -e $POLICY_RC ]]; then
	printf '#!/bin/sh\n# added by ams deploy/stack/tools.sh while installing\nexit 101\n' >"$POLICY_RC"
	chmod 755 "$POLICY_RC"
	added=1
fi
cleanup() { if [[ $added == 1 ]]; then rm -f "$POLICY_RC"; fi; }
trap cleanup EXIT
apt=(apt-get -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
	-o DPkg::Lock::Timeout=300 install --no-install-recommends)
if ! "${apt[@]}" "${pkgs[@]}" >>"$LOGS/apt-tools.log" 2>&1; then
	log "install failed; running apt-get update and retrying"
	if ! { apt-get -q -o DPkg::Lock::Timeout=300 update && "${apt[@]}" "${pkgs[@]}"; } >>"$LOGS/apt-tools.log" 2>&1; then
		tail -n 30 "$LOGS/apt-tools.log" >&2
		die "apt-get install ${pkgs[*]} failed"
	fi
fi
log "installed in $((SECONDS - t0))s"
