#!/usr/bin/env python3
"""Writes the Grafana dashboards of ams (one JSON file per dashboard) from the
panel lists below. Rerun after editing: python3 gen_dashboards.py
Every expression is checked against what the roles export by
TestOpsMetricsExported (cmd/ams) and the files by the dashboards package's tests."""
import json

R = '$__rate_interval'

def panel(title, exprs, unit='short', legend=None, kind='timeseries'):
    return {'title': title, 'type': kind, 'unit': unit,
            'targets': [{'expr': e, 'legendFormat': (legend[i] if legend else '')} for i, e in enumerate(exprs)]}

def resources(job):
    return [
        panel('CPU (cores)', [f'sum by (instance) (rate(process_cpu_seconds_total{{job="{job}"}}[{R}]))'], legend=['{{instance}}']),
        panel('Resident memory', [f'sum by (instance) (process_resident_memory_bytes{{job="{job}"}})'], 'bytes', ['{{instance}}']),
        panel('Goroutines', [f'sum by (instance) (go_goroutines{{job="{job}"}})'], legend=['{{instance}}']),
        panel('Up', [f'up{{job="{job}"}}'], legend=['{{instance}}']),
    ]

def q(metric, le='le', by=''):
    extra = (', ' + by) if by else ''
    return lambda p: f'histogram_quantile({p}, sum by ({le}{extra}) (rate({metric}_bucket[{R}])))'

DASH = {}
DASH['ams-fleet'] = ('ams: fleet', [
    panel('Devices with state (processor keys)', ['sum(ams_keyed_state_keys{processor="device"})'], legend=['devices']),
    panel('Devices online / offline (read model)', ['max(ams_devices_online)', 'max(ams_devices_offline)'], legend=['online', 'offline']),
    panel('Roles not ready', ['count by (role) (ams_ready == 0)'], legend=['{{role}}']),
    panel('Presence transitions / s', [f'sum by (online, reason) (rate(ams_device_presence_transitions_total[{R}]))'], legend=['online={{online}} {{reason}}']),
    panel('Uplinks accepted / s by kind', [f'sum by (kind) (rate(ams_device_events_total[{R}]))'], legend=['{{kind}}']),
    panel('Handshakes answered / s', [f'sum(rate(ams_device_downlinks_total{{purpose="handshake_reply"}}[{R}]))'], legend=['handshakes']),
    panel('Commands by state / s', [f'sum by (state) (rate(ams_device_command_events_total[{R}]))'], legend=['{{state}}']),
    panel('Rejects / s by reason (process, ingest, egress, sink)', [
        f'sum by (reason) (rate(ams_device_rejects_total[{R}]))',
        f'sum by (reason) (rate(ams_ingest_rejects_total[{R}]))',
        f'sum by (reason) (rate(ams_egress_rejects_total[{R}]))',
        f'sum by (reason) (rate(ams_sink_clickhouse_rejects_total[{R}]))'],
        legend=['process {{reason}}', 'ingest {{reason}}', 'egress {{reason}}', 'sink {{reason}}']),
    panel('Requests unanswered / s', [f'sum by (request, reason) (rate(ams_device_requests_unanswered_total[{R}]))'], legend=['{{request}} {{reason}}']),
])
p = q('ams_ingest_produce_seconds')
DASH['ams-ingest'] = ('ams: ingest', [
    panel('MQTT messages / s by outcome', [f'sum by (outcome) (rate(ams_ingest_messages_total[{R}]))'], legend=['{{outcome}}']),
    panel('Acknowledged to the broker / s', [f'sum by (instance) (rate(ams_ingest_acked_total[{R}]))'], legend=['{{instance}}']),
    panel('Kafka produce latency (MQTT -> ams.uplink.raw)', [p(0.5), p(0.99), p(0.999)], 's', ['p50', 'p99', 'p999']),
    panel('In flight (read, not acknowledged)', ['sum by (instance) (ams_ingest_inflight)'], legend=['{{instance}}']),
    panel('Back-pressure / s', [f'sum by (instance) (rate(ams_ingest_backpressure_total[{R}]))'], legend=['{{instance}}']),
    panel('Errors: produce errors, connection lost / s', [
        f'sum(rate(ams_ingest_produce_errors_total[{R}]))', f'sum(rate(ams_ingest_mqtt_connection_lost_total[{R}]))'],
        legend=['produce errors', 'connection lost']),
    panel('MQTT connected', ['ams_ingest_mqtt_connected'], legend=['{{instance}}']),
] + resources('ams-ingest'))
p = q('ams_keyed_batch_seconds')
r = q('ams_keyed_restore_seconds')
DASH['ams-process'] = ('ams: process', [
    panel('Input records / s by topic', [f'sum by (topic) (rate(ams_keyed_records_total[{R}]))'], legend=['{{topic}}']),
    panel('Output records / s by topic', [f'sum by (topic) (rate(ams_keyed_outputs_total[{R}]))'], legend=['{{topic}}']),
    panel('Transaction latency (poll -> commit)', [p(0.5), p(0.99), p(0.999)], 's', ['p50', 'p99', 'p999']),
    panel('Transactions / s by result', [f'sum by (result) (rate(ams_keyed_transactions_total[{R}]))'], legend=['{{result}}']),
    panel('Lag by topic', ['sum by (topic) (ams_keyed_lag)'], legend=['{{topic}}']),
    panel('State sealed under a previous KEK (drop it at 0)', ['sum by (partition) (ams_keyed_state_stale_keys{processor="device"})'], legend=['partition {{partition}}']),
    panel('Restores: partitions restoring, p99 restore time', ['sum by (instance) (ams_keyed_restoring_partitions)', r(0.99)], legend=['{{instance}} restoring', 'p99 s']),
    panel('Changelog and timers / s', [f'sum(rate(ams_keyed_changelog_records_total[{R}]))', f'sum(rate(ams_keyed_timers_fired_total[{R}]))',
        f'sum(rate(ams_keyed_restore_records_total[{R}]))'], legend=['changelog', 'timers fired', 'restore records']),
    panel('Downlinks / s by purpose', [f'sum by (purpose) (rate(ams_device_downlinks_total[{R}]))'], legend=['{{purpose}}']),
    panel('Command inputs / s', [f'sum by (input, outcome) (rate(ams_device_command_inputs_total[{R}]))'], legend=['{{input}} {{outcome}}']),
    panel('Keys per partition', ['sum by (partition) (ams_keyed_state_keys)'], legend=['{{partition}}']),
] + resources('ams-process'))
p = q('ams_egress_publish_seconds')
DASH['ams-egress'] = ('ams: egress', [
    panel('Downlinks / s by result', [f'sum by (result) (rate(ams_egress_frames_total[{R}]))'], legend=['{{result}}']),
    panel('Publish latency (PUBLISH -> PUBACK)', [p(0.5), p(0.99), p(0.999)], 's', ['p50', 'p99', 'p999']),
    panel('Buffered and in flight', ['sum by (instance) (ams_egress_buffered)', 'sum by (instance) (ams_egress_inflight)'], legend=['{{instance}} buffered', '{{instance}} in flight']),
    panel('Republished / s (errors)', [f'sum by (instance) (rate(ams_egress_republished_total[{R}]))'], legend=['{{instance}}']),
    panel('Receipts / s', [f'sum(rate(ams_egress_receipts_total[{R}]))'], legend=['receipts']),
    panel('MQTT connections up, connects / s', ['sum by (instance) (ams_egress_mqtt_connections_up)', f'sum(rate(ams_egress_mqtt_connects_total[{R}]))'], legend=['{{instance}} up', 'connects']),
    panel('Partitions owned', ['sum by (instance) (ams_egress_partitions)'], legend=['{{instance}}']),
] + resources('ams-egress'))
p = q('ams_sink_clickhouse_batch_seconds', by='table')
DASH['ams-sink-clickhouse'] = ('ams: sink clickhouse', [
    panel('Rows inserted / s by table', [f'sum by (table) (rate(ams_sink_clickhouse_rows_inserted_total[{R}]))'], legend=['{{table}}']),
    panel('Insert latency p99 by table', [p(0.99)], 's', ['{{table}}']),
    panel('Lag by topic', ['sum by (topic) (ams_sink_clickhouse_lag)'], legend=['{{topic}}']),
    panel('Buffered rows', ['sum by (instance) (ams_sink_clickhouse_buffered_rows)'], legend=['{{instance}}']),
    panel('Errors / s: insert failures, commit errors', [f'sum by (table) (rate(ams_sink_clickhouse_insert_failures_total[{R}]))',
        f'sum(rate(ams_sink_clickhouse_commit_errors_total[{R}]))'], legend=['insert {{table}}', 'commit']),
    panel('Commits / s', [f'sum(rate(ams_sink_clickhouse_commits_total[{R}]))'], legend=['commits']),
] + resources('ams-sink-clickhouse'))
p = q('ams_redis_sink_batch_seconds')
DASH['ams-sink-redis'] = ('ams: sink redis', [
    panel('Records / s by topic and outcome', [f'sum by (topic, outcome) (rate(ams_redis_sink_records_total[{R}]))'], legend=['{{topic}} {{outcome}}']),
    panel('Applied / s', [f'sum(rate(ams_redis_sink_applied_total[{R}]))'], legend=['applied']),
    panel('Batch latency', [p(0.5), p(0.99), p(0.999)], 's', ['p50', 'p99', 'p999']),
    panel('Redis errors / s', [f'sum by (instance) (rate(ams_redis_sink_errors_total[{R}]))'], legend=['{{instance}}']),
] + resources('ams-sink-redis'))
p = q('ams_api_request_seconds', by='route')
DASH['ams-api'] = ('ams: api', [
    panel('Requests / s by route and code', [f'sum by (route, code) (rate(ams_api_requests_total[{R}]))'], legend=['{{route}} {{code}}']),
    panel('Latency p99 by route', [p(0.99)], 's', ['{{route}}']),
    panel('Broker auth decisions / s', [f'sum by (kind, result, reason) (rate(ams_api_broker_auth_total[{R}]))'], legend=['{{kind}} {{result}} {{reason}}']),
    panel('Waiting ?wait= requests, refused / s', ['sum(ams_api_waiting_requests)', f'sum(rate(ams_api_wait_refused_total[{R}]))'], legend=['waiting', 'refused']),
] + resources('ams-api'))

def dashboard(uid, title, panels):
    out = []
    for i, p in enumerate(panels):
        unit = p.pop('unit')
        p.update({'id': i + 1, 'datasource': {'type': 'prometheus', 'uid': '${datasource}'},
                  'gridPos': {'h': 8, 'w': 12, 'x': (i % 2) * 12, 'y': (i // 2) * 8},
                  'fieldConfig': {'defaults': {'unit': unit}, 'overrides': []}})
        for j, t in enumerate(p['targets']):
            t['refId'] = chr(ord('A') + j)
            t['datasource'] = {'type': 'prometheus', 'uid': '${datasource}'}
        out.append(p)
    links = [{'title': t, 'type': 'link', 'url': '/d/' + u} for u, (t, _) in DASH.items() if u != uid]
    return {'uid': uid, 'title': title, 'tags': ['ams'], 'schemaVersion': 39, 'version': 1, 'editable': True,
            'time': {'from': 'now-6h', 'to': 'now'}, 'refresh': '30s', 'links': links,
            'templating': {'list': [{'name': 'datasource', 'type': 'datasource', 'query': 'prometheus', 'label': 'Prometheus'}]},
            'panels': out}

for uid, (title, panels) in DASH.items():
    with open(uid + '.json', 'w') as f:
        json.dump(dashboard(uid, title, panels), f, indent=2)
        f.write('\n')
