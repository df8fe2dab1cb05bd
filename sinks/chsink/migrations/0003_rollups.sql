-- What the data team reads at a million cameras without scanning or FINAL-merging the raw
-- tables: heartbeats rolled up per device and hour, and each device's latest presence.
-- Both are AggregatingMergeTree tables filled by materialized views on insert, so they cost
-- one row per device-hour / per device, whatever the raw tables hold.
--
-- heartbeats_hourly: countState counts rows as inserted: a batch the sink inserts again
-- after a crash between insert and commit is counted again here (the raw device_events
-- deduplicates; compare with it for an exact count). first/last are exact.
CREATE TABLE IF NOT EXISTS {db}.heartbeats_hourly (
    sn String,
    hour DateTime,
    heartbeats AggregateFunction(count),
    first_ms AggregateFunction(min, UInt64),
    last_ms AggregateFunction(max, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (sn, hour)
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.heartbeats_hourly_mv TO {db}.heartbeats_hourly AS
SELECT sn, toStartOfHour(ingest_time) AS hour, countState() AS heartbeats,
    minState(ingest_time_ms) AS first_ms, maxState(ingest_time_ms) AS last_ms
FROM {db}.device_events
WHERE kind = 'HEARTBEAT'
GROUP BY sn, hour
;
-- presence_latest: per device the state of its transition with the highest seq. argMax
-- and max are unchanged by a duplicate row, so replays are harmless.
CREATE TABLE IF NOT EXISTS {db}.presence_latest (
    sn String,
    last_seq AggregateFunction(max, Int64),
    last_online AggregateFunction(argMax, UInt8, Int64),
    last_at_ms AggregateFunction(argMax, UInt64, Int64),
    last_since_ms AggregateFunction(argMax, UInt64, Int64),
    last_reason AggregateFunction(argMax, String, Int64)
) ENGINE = AggregatingMergeTree
ORDER BY sn
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.presence_latest_mv TO {db}.presence_latest AS
SELECT sn, maxState(seq) AS last_seq, argMaxState(online, seq) AS last_online, argMaxState(at_ms, seq) AS last_at_ms,
    argMaxState(since_ms, seq) AS last_since_ms, argMaxState(reason, seq) AS last_reason
FROM {db}.presence
GROUP BY sn
;
-- The rows written before this migration (idempotent: argMax/max of a row twice is the same).
INSERT INTO {db}.presence_latest
SELECT sn, maxState(seq), argMaxState(online, seq), argMaxState(at_ms, seq), argMaxState(since_ms, seq), argMaxState(reason, seq)
FROM {db}.presence
GROUP BY sn
;
-- One row per device: its latest presence.
CREATE VIEW IF NOT EXISTS {db}.presence_now AS
SELECT sn, maxMerge(last_seq) AS seq, argMaxMerge(last_online) AS online, argMaxMerge(last_at_ms) AS at_ms,
    argMaxMerge(last_since_ms) AS since_ms, argMaxMerge(last_reason) AS reason
FROM {db}.presence_latest
GROUP BY sn
;
-- Heartbeats per device and hour.
CREATE VIEW IF NOT EXISTS {db}.heartbeats_per_hour AS
SELECT sn, hour, countMerge(heartbeats) AS heartbeats, minMerge(first_ms) AS first_ms, maxMerge(last_ms) AS last_ms
FROM {db}.heartbeats_hourly
GROUP BY sn, hour
