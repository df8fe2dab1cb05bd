-- The tables the sink writes, one per Kafka topic. Every table is a
-- ReplacingMergeTree whose sorting key ends with the record's deterministic id,
-- so a row inserted twice (a replay after a crash) is one row after a merge;
-- queries that count read through FINAL or aggregate by the id (README.md).
-- Times: a DateTime (seconds, for partitioning and ranges) plus a UInt64 unix-ms
-- column where milliseconds matter (ClickHouse 18.16 has no DateTime64);
-- a nullable time is 0 when unknown.

CREATE TABLE IF NOT EXISTS {db}.device_events (
    event_id String,
    sn String,
    kind String,
    cmd_type Int32,
    sub_type Int32,
    msg_id String,
    protocol_version String,
    body String,
    has_connection UInt8,
    conn_connected UInt8,
    conn_reason String,
    conn_client_id String,
    conn_connected_at_ms UInt64,
    broker_time_ms UInt64,
    ingest_time DateTime,
    ingest_time_ms UInt64,
    processed_at_ms UInt64,
    config_ok UInt8,
    device_sn String,
    hw_version String,
    model_name String,
    ip_addr String,
    mac_addr String,
    vpn_ip_addr String,
    fw_version String,
    alpha_ver String,
    ai_model_ver String,
    ie_ver String,
    chn_cnt Int32,
    alarm_in Int32,
    alarm_out Int32,
    net_method Int32,
    tf_card_state Int32,
    tf_card_capacity_size Int64,
    tf_card_use_size Int64,
    ssid String,
    wifi_strength Int32
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ingest_time)
ORDER BY (sn, ingest_time, event_id)
;
CREATE TABLE IF NOT EXISTS {db}.presence (
    event_id String,
    sn String,
    online UInt8,
    reason String,
    detail String,
    at DateTime,
    at_ms UInt64,
    since_ms UInt64,
    interval_ms Int64,
    epoch Int64,
    seq Int64
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (sn, at, event_id)
;
CREATE TABLE IF NOT EXISTS {db}.commands (
    event_id String,
    command_id String,
    sn String,
    kind String,
    code Int32,
    state String,
    at DateTime,
    at_ms UInt64,
    reason String,
    msg_id String,
    has_reply UInt8,
    reply String,
    seq Int32
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (sn, command_id, seq, event_id)
;
CREATE TABLE IF NOT EXISTS {db}.rejects (
    reject_id String,
    stage String,
    reason String,
    detail String,
    sn String,
    topic String,
    payload String,
    source_topic String,
    source_partition Int32,
    source_offset Int64,
    at DateTime,
    at_ms UInt64
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (reason, at, reject_id)
;
CREATE TABLE IF NOT EXISTS {db}.uplink_raw (
    src_partition Int32,
    src_offset Int64,
    kind String,
    sn String,
    topic String,
    payload String,
    client_id String,
    username String,
    reason String,
    node String,
    broker_time_ms UInt64,
    connected_at_ms UInt64,
    ingest_time DateTime,
    ingest_time_ms UInt64,
    ingest String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ingest_time)
ORDER BY (sn, ingest_time, src_partition, src_offset)
