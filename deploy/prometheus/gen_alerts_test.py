import yaml, re
rules = {r['alert']: r for g in yaml.safe_load(open('alerts.yml'))['groups'] for r in g['rules']}
def ann(name, labels):
    out = {}
    for k, v in rules[name]['annotations'].items():
        out[k] = re.sub(r'\{\{ \$labels\.(\w+) \}\}', lambda m: labels[m.group(1)], v)
    return out
def alert(name, **labels):
    l = dict(rules[name]['labels']); l.update(labels)
    return {'exp_labels': l, 'exp_annotations': ann(name, labels)}
def t(name, series, at, firing, quiet_at=None):
    """One test group: firing alerts at `at`; nothing yet at quiet_at (before `for`)."""
    ev = [{'eval_time': at, 'alertname': name, 'exp_alerts': firing}]
    if quiet_at:
        ev.insert(0, {'eval_time': quiet_at, 'alertname': name, 'exp_alerts': []})
    return {'name': name + (' fires' if firing else ' stays quiet'), 'interval': '1m',
            'input_series': [{'series': s, 'values': v} for s, v in series], 'alert_rule_test': ev}
T = []
P = 'processor="device",job="ams-process",instance="p1"'
T.append(t('AmsProcessorLagGrowing', [
    ('ams_keyed_lag{%s,topic="ams.uplink.raw",partition="0"}' % P, '20000+100x30'),  # high, growing: fires
    ('ams_keyed_lag{%s,topic="ams.commands",partition="0"}' % P, '20000x30'),        # high, steady: quiet
    ('ams_keyed_lag{%s,topic="ams.registry",partition="0"}' % P, '100+10x30'),       # growing, low: quiet
], '25m', [alert('AmsProcessorLagGrowing', processor='device', topic='ams.uplink.raw')], quiet_at='5m'))
C = 'job="ams-sink-clickhouse",instance="c1"'
T.append(t('AmsClickHouseSinkLagGrowing', [
    ('ams_sink_clickhouse_lag{%s,topic="ams.device.events",partition="0"}' % C, '200000+1000x40'),
    ('ams_sink_clickhouse_lag{%s,topic="ams.presence",partition="0"}' % C, '200000x40'),
    ('ams_sink_clickhouse_lag{%s,topic="ams.rejects",partition="0"}' % C, '10+10x40'),
], '30m', [alert('AmsClickHouseSinkLagGrowing', topic='ams.device.events')], quiet_at='10m'))
T.append(t('AmsEgressBacklog', [
    ('ams_egress_buffered{job="ams-egress",instance="e1"}', '9000x20'),
    ('ams_egress_buffered{job="ams-egress",instance="e2"}', '100x20'),
], '15m', [alert('AmsEgressBacklog', job='ams-egress', instance='e1')], quiet_at='5m'))
T.append(t('AmsIngestBackpressure', [
    ('ams_ingest_backpressure_total{job="ams-ingest",instance="i1"}', '0+120x30'),
    ('ams_ingest_backpressure_total{job="ams-ingest",instance="i2"}', '0+6x30'),
], '20m', [alert('AmsIngestBackpressure', instance='i1')], quiet_at='5m'))
K = 'processor="device",job="ams-process"'
T.append(t('AmsTransactionsAborted', [
    ('ams_keyed_transactions_total{%s,instance="p1",result="committed"}' % K, '0+600x30'),
    ('ams_keyed_transactions_total{%s,instance="p1",result="aborted"}' % K, '0+60x30'),
    ('ams_keyed_transactions_total{%s,instance="p2",result="committed"}' % K, '0+600x30'),
    ('ams_keyed_transactions_total{%s,instance="p2",result="aborted"}' % K, '0+6x30'),
], '20m', [alert('AmsTransactionsAborted', processor='device', instance='p1')], quiet_at='5m'))
T.append(t('AmsProcessorRestoreSlow', [
    ('ams_keyed_restoring_partitions{%s,instance="p1"}' % K, '2x10'),
    ('ams_keyed_restoring_partitions{%s,instance="p2"}' % K, '1 1 0x10'),
], '8m', [alert('AmsProcessorRestoreSlow', processor='device', instance='p1')], quiet_at='3m'))
T.append(t('AmsEgressPublishFailing', [
    ('ams_egress_republished_total{job="ams-egress",instance="e1"}', '0+60x30'),
    ('ams_egress_republished_total{job="ams-egress",instance="e2"}', '0+1x30'),
], '20m', [alert('AmsEgressPublishFailing', instance='e1')], quiet_at='5m'))
T.append(t('AmsEgressDisconnected', [
    ('ams_egress_mqtt_connections_up{job="ams-egress",instance="e1"}', '0x10'),
    ('ams_egress_mqtt_connections_up{job="ams-egress",instance="e2"}', '4x10'),
], '8m', [alert('AmsEgressDisconnected', instance='e1')], quiet_at='3m'))
T.append(t('AmsClickHouseSinkFailing', [
    ('ams_sink_clickhouse_insert_failures_total{%s,table="device_events"}' % C, '0+1x30'),
    ('ams_sink_clickhouse_insert_failures_total{%s,table="presence"}' % C, '0x30'),
], '20m', [alert('AmsClickHouseSinkFailing', table='device_events')], quiet_at='5m'))
T.append(t('AmsRedisSinkFailing', [
    ('ams_redis_sink_errors_total{job="ams-sink-redis",instance="r1"}', '0+1x20'),
    ('ams_redis_sink_errors_total{job="ams-sink-redis",instance="r2"}', '0x20'),
], '10m', [alert('AmsRedisSinkFailing', instance='r1')], quiet_at='3m'))
T.append(t('AmsDeviceRejectsSpiking', [
    ('ams_device_events_total{job="ams-process",instance="p1",kind="heartbeat"}', '0+6000x30'),
    ('ams_device_rejects_total{job="ams-process",instance="p1",reason="no_session"}', '0+120x30'),  # 2% of 100/s: fires
    ('ams_device_rejects_total{job="ams-process",instance="p1",reason="bad_json"}', '0+30x30'),    # 0.5%: quiet
], '20m', [alert('AmsDeviceRejectsSpiking', reason='no_session')], quiet_at='5m'))
T.append(t('AmsDeviceRejectsSpiking', [  # a few rejects of a small fleet are under the absolute floor
    ('ams_device_events_total{job="ams-process",instance="p1",kind="heartbeat"}', '0+60x30'),
    ('ams_device_rejects_total{job="ams-process",instance="p1",reason="no_session"}', '0+3x30'),
], '20m', []))
T.append(t('AmsIngestRejectsSpiking', [
    ('ams_ingest_messages_total{job="ams-ingest",instance="i1",outcome="frame"}', '0+6000x30'),
    ('ams_ingest_rejects_total{job="ams-ingest",instance="i1",reason="bad_topic"}', '0+120x30'),
    ('ams_ingest_rejects_total{job="ams-ingest",instance="i1",reason="empty_payload"}', '0+30x30'),
], '20m', [alert('AmsIngestRejectsSpiking', reason='bad_topic')], quiet_at='5m'))
R = 'job="ams-sink-redis"'
T.append(t('AmsFleetGoingOffline', [  # 1000 online, then 250 go offline within 5 minutes (two sink instances)
    ('ams_devices_online{%s,instance="r1"}' % R, '1000x5 950 900 850 800 750x15'),
    ('ams_devices_online{%s,instance="r2"}' % R, '1000x5 950 900 850 800 750x15'),
], '11m', [alert('AmsFleetGoingOffline')], quiet_at='4m'))
T.append(t('AmsFleetGoingOffline', [  # 25 of 1000 in 5 minutes: single cameras
    ('ams_devices_online{%s,instance="r1"}' % R, '1000-5x20'),
], '15m', []))
T.append(t('AmsFleetGoingOffline', [  # a fleet of 10 losing half: too small to tell
    ('ams_devices_online{%s,instance="r1"}' % R, '10x5 5x15'),
], '9m', []))
T.append(t('AmsHandshakeFailures', [  # 12 failures for 60 handshakes a minute
    ('ams_device_rejects_total{job="ams-process",instance="p1",reason="bad_rsa"}', '0+12x30'),
    ('ams_device_downlinks_total{job="ams-process",instance="p1",purpose="handshake_reply"}', '0+60x30'),
], '20m', [alert('AmsHandshakeFailures')], quiet_at='5m'))
T.append(t('AmsHandshakeFailures', [  # 1 in 61
    ('ams_device_rejects_total{job="ams-process",instance="p1",reason="bad_rsa"}', '0+1x30'),
    ('ams_device_rejects_total{job="ams-process",instance="p1",reason="no_session"}', '0+100x30'),
    ('ams_device_downlinks_total{job="ams-process",instance="p1",purpose="handshake_reply"}', '0+60x30'),
], '20m', []))
T.append(t('AmsRoleDown', [
    ('up{job="ams-egress",instance="e1"}', '0x10'),
    ('up{job="ams-api",instance="a1"}', '1x10'),
    ('up{job="node",instance="n1"}', '0x10'),
], '8m', [alert('AmsRoleDown', job='ams-egress', instance='e1')], quiet_at='3m'))
T.append(t('AmsRoleNotReady', [
    ('ams_ready{job="ams-process",instance="p1",role="process"}', '0x20'),
    ('ams_ready{job="ams-process",instance="p2",role="process"}', '1x20'),
    ('ams_ready{job="ams-egress",instance="e1",role="egress"}', '0x3 1x17'),  # not ready for 3 minutes only
], '15m', [alert('AmsRoleNotReady', role='process', job='ams-process', instance='p1')], quiet_at='5m'))
T.append(t('AmsRestoreSkippedState', [
    ('ams_keyed_restore_skipped_total{%s,instance="p1"}' % K, '0x5 3x20'),
    ('ams_keyed_restore_skipped_total{%s,instance="p2"}' % K, '0x25'),
], '10m', [alert('AmsRestoreSkippedState', processor='device', instance='p1')], quiet_at='4m'))
hdr = ('# Unit tests of alerts.yml: `promtool test rules alerts_test.yml` (deploy/prometheus/check.sh).\n'
       '# Each rule has a group whose series fire it (and, beside them or in a second group, series\n'
       '# that must not), plus an evaluation before its `for:` has passed where nothing fires.\n'
       '# Generated by gen_alerts_test.py from the cases there; edit that and rerun it.\n')
open('alerts_test.yml', 'w').write(hdr + yaml.safe_dump({'rule_files': ['alerts.yml'], 'evaluation_interval': '1m', 'tests': T}, sort_keys=False, width=200))
