-- A small generated fleet for TestCurrentClickHouse, inserted with INSERT ... SELECT from
-- numbers() so the same SQL runs on ClickHouse 18.16 and on a current engine (chdb).
-- {db} is the database, {now} a unix time in seconds fixed by the test (not now(): both
-- engines must get identical rows). 30 devices, three firmware versions, presence over the
-- last 8 days (every 4th device online now), 3 command kinds, rejects in and out of the
-- last hour, raw uplinks.

INSERT INTO {db}.device_events (event_id, sn, kind, cmd_type, body, ingest_time, ingest_time_ms, processed_at_ms, config_ok, fw_version, model_name, chn_cnt)
SELECT concat('SN', toString(i), '-cfg', toString(v)) AS event_id,
    concat('SN', toString(i)) AS sn, 'CONFIGURATION' AS kind, toInt32(1) AS cmd_type, '{}' AS body,
    toDateTime(t) AS ingest_time, toUInt64(t) * 1000 + 123 AS ingest_time_ms, toUInt64(t) * 1000 + 200 AS processed_at_ms,
    toUInt8(1) AS config_ok,
    if(v = 0, 'V0.9', arrayElement(['V1.0', 'V1.1', 'V2.0'], (i % 3) + 1)) AS fw_version,
    'IPC-X' AS model_name, toInt32(1 + i % 4) AS chn_cnt
FROM (SELECT intDiv(number, 2) AS i, number % 2 AS v,
    if(v = 0, {now} - 9 * 86400, {now} - i * 60) AS t FROM system.numbers LIMIT 60)
;
INSERT INTO {db}.device_events (event_id, sn, kind, cmd_type, body, ingest_time, ingest_time_ms, processed_at_ms)
SELECT concat('SN', toString(number % 30), '-hb', toString(number)) AS event_id, concat('SN', toString(number % 30)) AS sn,
    'HEARTBEAT' AS kind, toInt32(1) AS cmd_type, '{"iHeartbeat":1}' AS body,
    toDateTime({now} - number * 30) AS ingest_time, toUInt64({now} - number * 30) * 1000 AS ingest_time_ms,
    toUInt64({now} - number * 30) * 1000 + 5 AS processed_at_ms
FROM system.numbers LIMIT 300
;
INSERT INTO {db}.presence (event_id, sn, online, reason, at, at_ms, since_ms, interval_ms, epoch, seq)
SELECT concat('SN', toString(i), '-p', toString(j + 1)) AS event_id, concat('SN', toString(i)) AS sn,
    toUInt8(j % 2 = 0) AS online, if(online = 1, 'connected', 'heartbeat_timeout') AS reason,
    toDateTime(intDiv(ms, 1000)) AS at, ms AS at_ms,
    if(online = 1, toUInt64(0), start_ms) AS since_ms, if(online = 1, toInt64(0), toInt64(ms - start_ms)) AS interval_ms,
    toInt64(1) AS epoch, toInt64(j + 1) AS seq
FROM (
    SELECT intDiv(number, 6) AS i, number % 6 AS j, intDiv(j, 2) AS k,
        toUInt64((toUInt64({now}) - 8 * 86400 + i * 3600 + k * 2 * 86400) * 1000 + (i * 7) % 1000) AS start_ms,
        toUInt64(if(j % 2 = 0, start_ms, start_ms + ((10 + i + k * 7) * 3600 + 17 * 60) * 1000)) AS ms
    FROM system.numbers LIMIT 180
)
WHERE NOT (i % 4 = 0 AND j = 5)
;
INSERT INTO {db}.commands (event_id, command_id, sn, kind, code, state, at, at_ms, reason, msg_id, has_reply, reply, seq)
SELECT concat(command_id, '-', toString(s + 1)) AS event_id, command_id, concat('SN', toString(c % 30)) AS sn,
    kind, toInt32(300 + k) AS code, state, toDateTime(intDiv(ms, 1000)) AS at, ms AS at_ms,
    if(state = 'TIMED_OUT', 'no reply', '') AS reason, concat('m', toString(c)) AS msg_id,
    toUInt8(state = 'SUCCEEDED') AS has_reply, if(state = 'SUCCEEDED', '{"ok":1}', '') AS reply, toInt32(s + 1) AS seq
FROM (
    SELECT intDiv(number, 160) AS k, intDiv(number % 160, 4) AS c, number % 4 AS s,
        arrayElement(['sd_info', 'reboot', 'osd'], k + 1) AS kind,
        concat(kind, '-', toString(c)) AS command_id,
        arrayElement(['ACCEPTED', 'SENT', 'DELIVERED', if(c % 5 = 0, 'TIMED_OUT', 'SUCCEEDED')], s + 1) AS state,
        toUInt64((toUInt64({now}) - (c + 1) * 60) * 1000 + arrayElement([0, 3, 9, if(c % 5 = 0, 10000, 50 + (c * 37) % 400 + 100 * k)], s + 1)) AS ms
    FROM system.numbers LIMIT 480
)
WHERE NOT (c = 0 AND s = 3)
;
INSERT INTO {db}.rejects (reject_id, stage, reason, detail, sn, topic, payload, source_topic, source_partition, source_offset, at, at_ms)
SELECT concat('rj-', toString(g), '-', toString(n)) AS reject_id,
    arrayElement(['INGEST', 'PROCESSOR', 'PROCESSOR', 'INGEST'], g + 1) AS stage,
    arrayElement(['bad_hex', 'no_session', 'decrypt_failed', 'bad_hex'], g + 1) AS reason,
    'generated' AS detail, concat('SN', toString(n)) AS sn, '/ivms/pub/x' AS topic, 'zz' AS payload,
    'ams.uplink.raw' AS source_topic, toInt32(0) AS source_partition, toInt64(g * 100 + n) AS source_offset,
    toDateTime({now} - ago) AS at, toUInt64({now} - ago) * 1000 AS at_ms
FROM (
    SELECT intDiv(number, 10) AS g, number % 10 AS n, arrayElement([600, 3000, 1200, 7200], g + 1) AS ago
    FROM system.numbers LIMIT 40
)
WHERE n < arrayElement([7, 3, 5, 4], g + 1)
;
INSERT INTO {db}.uplink_raw (src_partition, src_offset, kind, sn, topic, payload, client_id, username, node, broker_time_ms, ingest_time, ingest_time_ms, ingest)
SELECT toInt32(number % 4) AS src_partition, toInt64(number) AS src_offset, 'FRAME' AS kind, concat('SN', toString(number % 30)) AS sn,
    concat('/ivms/pub/SN', toString(number % 30)) AS topic, 'deadbeef' AS payload, sn AS client_id, sn AS username, 'n1' AS node,
    toUInt64({now} - number) * 1000 AS broker_time_ms, toDateTime({now} - number) AS ingest_time,
    toUInt64({now} - number) * 1000 + 2 AS ingest_time_ms, 'ingest-0' AS ingest
FROM system.numbers LIMIT 200
