-- requires ClickHouse >= 21.8
-- Retention per table (TTL; ClickHouse 18.16 has none: there, drop old monthly partitions,
-- see sinks/chsink/README.md). Rows are removed by background merges after they expire.
-- To change a retention: ALTER TABLE ams.<table> MODIFY TTL ... (a later migration
-- keeps this one's statements from being run again).
ALTER TABLE {db}.device_events MODIFY TTL ingest_time + INTERVAL 7 DAY DELETE WHERE kind = 'HEARTBEAT', ingest_time + INTERVAL 400 DAY
;
ALTER TABLE {db}.uplink_raw MODIFY TTL ingest_time + INTERVAL 7 DAY
;
ALTER TABLE {db}.rejects MODIFY TTL at + INTERVAL 90 DAY
;
ALTER TABLE {db}.presence MODIFY TTL at + INTERVAL 1095 DAY
;
ALTER TABLE {db}.commands MODIFY TTL at + INTERVAL 1095 DAY
;
ALTER TABLE {db}.heartbeats_hourly MODIFY TTL hour + INTERVAL 730 DAY
