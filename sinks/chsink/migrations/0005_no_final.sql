-- presence_intervals without FINAL over the whole presence table: each offline transition
-- is read once by grouping on its id (any() of a duplicate is the same row), which
-- ClickHouse runs in parallel, where FINAL merges every part at read time. Same columns and
-- answers as 0002's view (checked by TestExampleQueries and TestCurrentClickHouse). DROP TABLE
-- drops a view on 18.16 (which has no DROP VIEW) and on current servers.
DROP TABLE IF EXISTS {db}.presence_intervals
;
CREATE VIEW IF NOT EXISTS {db}.presence_intervals AS
SELECT sn, start_ms, end_ms, toUInt8(0) AS open
FROM (
    SELECT sn, event_id, any(since_ms) AS start_ms, any(at_ms) AS end_ms
    FROM {db}.presence
    WHERE online = 0 AND since_ms > 0
    GROUP BY sn, event_id
)
UNION ALL
SELECT sn, start_ms, toUInt64(now()) * 1000 AS end_ms, toUInt8(1) AS open
FROM (
    SELECT sn, argMax(online, seq) AS last_online, argMax(at_ms, seq) AS start_ms
    FROM {db}.presence
    GROUP BY sn
)
WHERE last_online = 1
