-- Views for the data team. Each reads deduplicated data: either through FINAL
-- (presence_intervals) or by aggregating with functions that a duplicate row
-- cannot change (min, max, argMax, any, uniqExact), grouped by the id.

-- One row per online interval: closed ones come from an offline transition
-- (its since_ms .. at_ms); a device whose latest transition is online has an
-- open interval up to now (open = 1).
CREATE VIEW IF NOT EXISTS {db}.presence_intervals AS
SELECT sn, since_ms AS start_ms, at_ms AS end_ms, toUInt8(0) AS open
FROM {db}.presence FINAL
WHERE online = 0 AND since_ms > 0
UNION ALL
SELECT sn, start_ms, toUInt64(now()) * 1000 AS end_ms, toUInt8(1) AS open
FROM (
    SELECT sn, argMax(online, seq) AS last_online, argMax(at_ms, seq) AS start_ms
    FROM {db}.presence
    GROUP BY sn
)
WHERE last_online = 1
;
-- Online milliseconds per device and UTC day, intervals split at midnight.
CREATE VIEW IF NOT EXISTS {db}.presence_daily_uptime AS
SELECT sn, day,
    sum(toInt64(least(end_ms, day_start_ms + 86400000)) - toInt64(greatest(start_ms, day_start_ms))) AS online_ms,
    online_ms / 86400000 AS uptime_ratio
FROM (
    SELECT sn, start_ms, end_ms, day, toUInt64(toDateTime(day)) * 1000 AS day_start_ms
    FROM (
        SELECT sn, start_ms, end_ms,
            arrayJoin(arrayMap(i -> toDate(toDateTime(intDiv(start_ms, 1000))) + i,
                range(toUInt32(toRelativeDayNum(toDateTime(intDiv(end_ms, 1000))) - toRelativeDayNum(toDateTime(intDiv(start_ms, 1000))) + 1)))) AS day
        FROM {db}.presence_intervals
        WHERE end_ms > start_ms
    )
)
GROUP BY sn, day
;
-- One row per command: when it was issued (first state change), sent,
-- delivered (broker acknowledged) and replied (SUCCEEDED), its final state
-- so far (result) and latency_ms from issue to reply (0 without a reply).
-- A time is 0 when the command never reached that state.
CREATE VIEW IF NOT EXISTS {db}.command_summary AS
SELECT command_id,
    any(sn) AS sn,
    any(kind) AS kind,
    any(code) AS code,
    min(at_ms) AS issued_ms,
    minIf(at_ms, state = 'SENT') AS sent_ms,
    minIf(at_ms, state = 'DELIVERED') AS delivered_ms,
    minIf(at_ms, state = 'SUCCEEDED') AS replied_ms,
    argMax(state, seq) AS result,
    argMax(reason, seq) AS result_reason,
    argMax(reply, seq) AS reply,
    max(seq) AS state_changes,
    result IN ('SUCCEEDED', 'TIMED_OUT', 'EXPIRED', 'REJECTED', 'FAILED') AS finished,
    if(replied_ms > 0, replied_ms - issued_ms, 0) AS latency_ms
FROM {db}.commands
GROUP BY command_id
;
-- The latest configuration each device reported.
CREATE VIEW IF NOT EXISTS {db}.device_config_latest AS
SELECT sn,
    max(ingest_time_ms) AS reported_ms,
    argMax(event_id, ingest_time_ms) AS event_id,
    argMax(device_sn, ingest_time_ms) AS device_sn,
    argMax(hw_version, ingest_time_ms) AS hw_version,
    argMax(model_name, ingest_time_ms) AS model_name,
    argMax(ip_addr, ingest_time_ms) AS ip_addr,
    argMax(mac_addr, ingest_time_ms) AS mac_addr,
    argMax(vpn_ip_addr, ingest_time_ms) AS vpn_ip_addr,
    argMax(fw_version, ingest_time_ms) AS fw_version,
    argMax(alpha_ver, ingest_time_ms) AS alpha_ver,
    argMax(ai_model_ver, ingest_time_ms) AS ai_model_ver,
    argMax(ie_ver, ingest_time_ms) AS ie_ver,
    argMax(chn_cnt, ingest_time_ms) AS chn_cnt,
    argMax(alarm_in, ingest_time_ms) AS alarm_in,
    argMax(alarm_out, ingest_time_ms) AS alarm_out,
    argMax(net_method, ingest_time_ms) AS net_method,
    argMax(tf_card_state, ingest_time_ms) AS tf_card_state,
    argMax(tf_card_capacity_size, ingest_time_ms) AS tf_card_capacity_size,
    argMax(tf_card_use_size, ingest_time_ms) AS tf_card_use_size,
    argMax(ssid, ingest_time_ms) AS ssid,
    argMax(wifi_strength, ingest_time_ms) AS wifi_strength
FROM {db}.device_events
WHERE kind = 'CONFIGURATION' AND config_ok = 1
GROUP BY sn
;
-- Rejects per hour, stage and reason, each reject counted once.
CREATE VIEW IF NOT EXISTS {db}.rejects_by_reason AS
SELECT toStartOfHour(at) AS hour, stage, reason, uniqExact(reject_id) AS rejects
FROM {db}.rejects
GROUP BY hour, stage, reason
