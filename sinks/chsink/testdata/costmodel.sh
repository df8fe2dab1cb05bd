#!/usr/bin/env bash
# Cost model of the ClickHouse history (sinks/chsink/README.md, "What a million cameras
# cost"). Generates a fleet inside ClickHouse (INSERT ... SELECT from numbers(), nothing from
# Go), merges every table (OPTIMIZE ... FINAL), prints bytes per row on disk per table, the
# rows and bytes per day at 1M cameras, and the time of every documented query (median of 3
# runs, clickhouse-client --time), then drops its database.
#
# Usage: sinks/chsink/testdata/costmodel.sh [ROWS]   (heartbeat rows, default 10000000)
# Environment: CH_HOST (127.0.0.1), CH_PORT (9000). Needs clickhouse-client.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
ROWS="${1:-10000000}"
DEVICES=$((ROWS / 1000))                     # 1000 heartbeats per device
DB="ams_cost_$$"
ch() { clickhouse-client --host "${CH_HOST:-127.0.0.1}" --port "${CH_PORT:-9000}" "$@"; }
trap 'ch --query "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true' EXIT

ch --query "CREATE DATABASE $DB"
for f in "$repo"/sinks/chsink/migrations/0*.sql; do
	head -1 "$f" | grep -q '^-- requires ClickHouse' && continue # this server is 18.16
	sed "s/{db}/$DB/g" "$f" | grep -v '^--' | sed 's/^;$/;/' | ch -n
done
NOW=$(date +%s)
t0=$SECONDS
# device_events: ROWS heartbeats of DEVICES devices over the last day (+ one config each).
ch --query "INSERT INTO $DB.device_events (event_id, sn, kind, cmd_type, msg_id, protocol_version, body, ingest_time, ingest_time_ms, broker_time_ms, processed_at_ms)
SELECT concat('ams.uplink.raw/', toString(number % 12), '/', toString(number)), lower(hex(toUInt64(1e15) + number % $DEVICES)),
  'HEARTBEAT', 1, toString(cityHash64(number) % 100000), '1.0', '{\"iCmdType\":1,\"iHeartbeat\":1}',
  toDateTime(t), toUInt64(t) * 1000 + number % 1000, toUInt64(t) * 1000 + number % 1000 - 3, toUInt64(t) * 1000 + number % 1000 + 4
FROM (SELECT number, $NOW - 86400 + intDiv(number * 86400, $ROWS) AS t FROM numbers($ROWS))"
ch --query "INSERT INTO $DB.device_events (event_id, sn, kind, cmd_type, body, ingest_time, ingest_time_ms, config_ok, fw_version, model_name, hw_version, ip_addr, mac_addr, chn_cnt)
SELECT concat('cfg/', toString(number)), lower(hex(toUInt64(1e15) + number)), 'CONFIGURATION', 1, '{\"sDevSN\":\"x\"}',
  toDateTime($NOW - 3600), ($NOW - 3600) * 1000, 1, ['V1.0','V1.1','V2.0'][number % 3 + 1], 'IPC-X', 'H1', '10.0.0.1', '00:11:22:33:44:55', 1
FROM numbers($DEVICES)"
# uplink_raw: every frame as received (encrypted payloads: incompressible hex).
ch --query "INSERT INTO $DB.uplink_raw (src_partition, src_offset, kind, sn, topic, payload, client_id, username, node, broker_time_ms, ingest_time, ingest_time_ms, ingest)
SELECT number % 12, number, 'FRAME', sn, concat('/ivms/pub/', sn), concat(hex(SHA256(toString(number))), hex(SHA256(toString(number + 1)))),
  sn, sn, 'emqx@n1', toUInt64(t) * 1000, toDateTime(t), toUInt64(t) * 1000 + 2, 'ingest-0'
FROM (SELECT number, lower(hex(toUInt64(1e15) + number % $DEVICES)) AS sn, $NOW - 86400 + intDiv(number * 86400, $ROWS) AS t FROM numbers($ROWS))"
# presence: 20 transitions per device; commands: 25 commands per device, 4 states each; rejects.
ch --query "INSERT INTO $DB.presence (event_id, sn, online, reason, detail, at, at_ms, since_ms, interval_ms, epoch, seq)
SELECT concat('p/', toString(number)), lower(hex(toUInt64(1e15) + intDiv(number, 20))), number % 2 = 0, if(number % 2 = 0, 'connected', 'heartbeat_timeout'), '',
  toDateTime(t), toUInt64(t) * 1000, if(number % 2 = 0, 0, (toUInt64(t) - 3000) * 1000), if(number % 2 = 0, 0, 3000000), 1, number % 20 + 1
FROM (SELECT number, $NOW - 86400 + (number % 20) * 4000 AS t FROM numbers($DEVICES * 20))"
ch --query "INSERT INTO $DB.commands (event_id, command_id, sn, kind, code, state, at, at_ms, reason, msg_id, has_reply, reply, seq)
SELECT concat(cid, '/', toString(s + 1)), cid, lower(hex(toUInt64(1e15) + intDiv(c, 25))), ['sd_info','reboot','osd'][c % 3 + 1], 332,
  ['ACCEPTED','SENT','DELIVERED','SUCCEEDED'][s + 1], toDateTime(intDiv(ms, 1000)), ms, '', toString(c), s = 3, if(s = 3, '{\"iResult\":0}', ''), s + 1
FROM (SELECT intDiv(number, 4) AS c, number % 4 AS s, lower(hex(cityHash64(c))) AS cid,
  toUInt64(($NOW - 86400 + c % 86000) * 1000 + s * 40 + c % 300) AS ms FROM numbers($DEVICES * 100))"
ch --query "INSERT INTO $DB.rejects (reject_id, stage, reason, detail, sn, topic, payload, source_topic, source_partition, source_offset, at, at_ms)
SELECT concat('rj/', toString(number)), ['INGEST','PROCESSOR'][number % 2 + 1], ['bad_hex','no_session','decrypt_failed'][number % 3 + 1], 'generated',
  lower(hex(toUInt64(1e15) + number % $DEVICES)), '/ivms/pub/x', hex(SHA256(toString(number))), 'ams.uplink.raw', number % 12, number,
  toDateTime($NOW - number % 86400), ($NOW - number % 86400) * 1000
FROM numbers(intDiv($ROWS, 100))"
gen=$((SECONDS - t0))
t0=$SECONDS
for t in device_events uplink_raw presence commands rejects heartbeats_hourly presence_latest; do
	ch --query "OPTIMIZE TABLE $DB.$t FINAL"
done
merge=$((SECONDS - t0))
echo "generated in ${gen}s, merged in ${merge}s; ClickHouse $(ch --query 'SELECT version()'); heartbeat rows $ROWS, devices $DEVICES"
echo
echo "| table | rows | bytes on disk | bytes/row | rows/day at 1M cameras | GB/day at 1M cameras |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
# Rows per day per camera: heartbeats every 30 s (2880), each also a raw frame; 20 presence
# transitions; 25 commands x 4 states; rejects 1% of frames; 24 heartbeat-hours; 1 latest row.
for spec in "device_events 2880" "uplink_raw 2880" "presence 20" "commands 100" "rejects 28.8" "heartbeats_hourly 24" "presence_latest 0"; do
	set -- $spec
	ch --query "SELECT '| \`$1\` |', sum(rows), '|', sum(bytes_on_disk), '|', round(sum(bytes_on_disk) / sum(rows), 1), '|',
	  toUInt64($2 * 1000000), '|', round($2 * 1000000 * sum(bytes_on_disk) / sum(rows) / 1e9, 1), '|'
	  FROM system.parts WHERE database = '$DB' AND table = '$1' AND active" | tr '\t' ' '
done
echo
echo "| query | median of 3 (s) |"
echo "| --- | ---: |"
awk '/^## Example queries/{on=1; next} /^## /{on=0} on' "$repo/sinks/chsink/README.md" |
	awk '/^```sql/{q=""; inq=1; next} /^```/{if(inq){print q; print "\x1e"}; inq=0; next} inq{q=q $0 "\n"}' |
	while IFS= read -r -d $'\x1e' q; do
		q="${q#$'\n'}"
		[[ -z ${q//[[:space:]]/} ]] && continue
		title="$(head -1 <<<"$q" | sed 's/^-- //')"
		sql="${q//ams./$DB.}"
		times=()
		for _ in 1 2 3; do
			times+=("$(ch --time --format Null --query "$sql" 2>&1 >/dev/null | tail -1)")
		done
		median="$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)"
		echo "| $title | $median |"
	done
