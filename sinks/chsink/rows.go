package chsink

import (
	"encoding/json"
	"time"

	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/schemas"
)

// The column structs below mirror sinks/chsink/migrations/0001_tables.sql; the
// field order is the INSERT's column order. The integration tests insert
// through them, so a mismatch with the DDL fails there.

type deviceEventCols struct {
	EventID            col[string]    `ch:"event_id"`
	SN                 col[string]    `ch:"sn"`
	Kind               col[string]    `ch:"kind"`
	CmdType            col[int32]     `ch:"cmd_type"`
	SubType            col[int32]     `ch:"sub_type"`
	MsgID              col[string]    `ch:"msg_id"`
	ProtocolVersion    col[string]    `ch:"protocol_version"`
	Body               col[string]    `ch:"body"`
	HasConnection      col[uint8]     `ch:"has_connection"`
	ConnConnected      col[uint8]     `ch:"conn_connected"`
	ConnReason         col[string]    `ch:"conn_reason"`
	ConnClientID       col[string]    `ch:"conn_client_id"`
	ConnConnectedAtMs  col[uint64]    `ch:"conn_connected_at_ms"`
	BrokerTimeMs       col[uint64]    `ch:"broker_time_ms"`
	IngestTime         col[time.Time] `ch:"ingest_time"`
	IngestTimeMs       col[uint64]    `ch:"ingest_time_ms"`
	ProcessedAtMs      col[uint64]    `ch:"processed_at_ms"`
	ConfigOK           col[uint8]     `ch:"config_ok"`
	DeviceSn           col[string]    `ch:"device_sn"`
	HwVersion          col[string]    `ch:"hw_version"`
	ModelName          col[string]    `ch:"model_name"`
	IPAddr             col[string]    `ch:"ip_addr"`
	MacAddr            col[string]    `ch:"mac_addr"`
	VPNIPAddr          col[string]    `ch:"vpn_ip_addr"`
	FwVersion          col[string]    `ch:"fw_version"`
	AlphaVer           col[string]    `ch:"alpha_ver"`
	AiModelVer         col[string]    `ch:"ai_model_ver"`
	IEVer              col[string]    `ch:"ie_ver"`
	ChnCnt             col[int32]     `ch:"chn_cnt"`
	AlarmIn            col[int32]     `ch:"alarm_in"`
	AlarmOut           col[int32]     `ch:"alarm_out"`
	NetMethod          col[int32]     `ch:"net_method"`
	TFCardState        col[int32]     `ch:"tf_card_state"`
	TFCardCapacitySize col[int64]     `ch:"tf_card_capacity_size"`
	TFCardUseSize      col[int64]     `ch:"tf_card_use_size"`
	SSID               col[string]    `ch:"ssid"`
	WifiStrength       col[int32]     `ch:"wifi_strength"`
}

func (c *deviceEventCols) add(ev *schemas.DeviceEvent) {
	c.EventID.add(ev.EventID)
	c.SN.add(ev.SN)
	c.Kind.add(ev.Kind)
	c.CmdType.add(ev.CmdType)
	c.SubType.add(ev.SubType)
	c.MsgID.add(ev.MsgID)
	c.ProtocolVersion.add(ev.ProtocolVersion)
	c.Body.add(ev.Body)
	if cn := ev.Connection; cn != nil {
		c.HasConnection.add(1)
		c.ConnConnected.add(b2u(cn.Connected))
		c.ConnReason.add(cn.Reason)
		c.ConnClientID.add(cn.ClientID)
		c.ConnConnectedAtMs.add(msPtr(cn.ConnectedAt))
	} else {
		c.HasConnection.add(0)
		c.ConnConnected.add(0)
		c.ConnReason.add("")
		c.ConnClientID.add("")
		c.ConnConnectedAtMs.add(0)
	}
	c.BrokerTimeMs.add(msPtr(ev.BrokerTime))
	c.IngestTime.add(ev.IngestTime)
	c.IngestTimeMs.add(ms(ev.IngestTime))
	c.ProcessedAtMs.add(ms(ev.ProcessedAt))

	var cfg protocol.Configuration
	ok := ev.Kind == schemas.EventConfiguration && json.Unmarshal([]byte(ev.Body), &cfg) == nil
	if !ok {
		cfg = protocol.Configuration{}
	}
	c.ConfigOK.add(b2u(ok))
	c.DeviceSn.add(cfg.DeviceSn)
	c.HwVersion.add(cfg.HwVersion)
	c.ModelName.add(cfg.ModelName)
	c.IPAddr.add(cfg.IPAddr)
	c.MacAddr.add(cfg.MacAddr)
	c.VPNIPAddr.add(cfg.VPNIPAddr)
	c.FwVersion.add(cfg.FwVersion)
	c.AlphaVer.add(cfg.AlphaVer)
	c.AiModelVer.add(cfg.AiModelVer)
	c.IEVer.add(cfg.IEVer)
	c.ChnCnt.add(int32(cfg.ChnCnt))
	c.AlarmIn.add(int32(cfg.AlarmIn))
	c.AlarmOut.add(int32(cfg.AlarmOut))
	c.NetMethod.add(int32(cfg.NetMethod))
	c.TFCardState.add(int32(cfg.TFCardState))
	c.TFCardCapacitySize.add(cfg.TFCardCapacitySize)
	c.TFCardUseSize.add(cfg.TFCardUseSize)
	c.SSID.add(cfg.SSID)
	c.WifiStrength.add(int32(cfg.WifiStrength))
}

type presenceCols struct {
	EventID    col[string]    `ch:"event_id"`
	SN         col[string]    `ch:"sn"`
	Online     col[uint8]     `ch:"online"`
	Reason     col[string]    `ch:"reason"`
	Detail     col[string]    `ch:"detail"`
	At         col[time.Time] `ch:"at"`
	AtMs       col[uint64]    `ch:"at_ms"`
	SinceMs    col[uint64]    `ch:"since_ms"`
	IntervalMs col[int64]     `ch:"interval_ms"`
	Epoch      col[int64]     `ch:"epoch"`
	Seq        col[int64]     `ch:"seq"`
}

func (c *presenceCols) add(p *schemas.Presence) {
	c.EventID.add(p.EventID)
	c.SN.add(p.SN)
	c.Online.add(b2u(p.Online))
	c.Reason.add(p.Reason)
	c.Detail.add(p.Detail)
	c.At.add(p.At)
	c.AtMs.add(ms(p.At))
	c.SinceMs.add(msPtr(p.Since))
	c.IntervalMs.add(p.IntervalMs)
	c.Epoch.add(p.Epoch)
	c.Seq.add(p.Seq)
}

type commandCols struct {
	EventID   col[string]    `ch:"event_id"`
	CommandID col[string]    `ch:"command_id"`
	SN        col[string]    `ch:"sn"`
	Kind      col[string]    `ch:"kind"`
	Code      col[int32]     `ch:"code"`
	State     col[string]    `ch:"state"`
	At        col[time.Time] `ch:"at"`
	AtMs      col[uint64]    `ch:"at_ms"`
	Reason    col[string]    `ch:"reason"`
	MsgID     col[string]    `ch:"msg_id"`
	HasReply  col[uint8]     `ch:"has_reply"`
	Reply     col[string]    `ch:"reply"`
	Seq       col[int32]     `ch:"seq"`
}

func (c *commandCols) add(e *schemas.CommandEvent) {
	c.EventID.add(e.EventID)
	c.CommandID.add(e.CommandID)
	c.SN.add(e.SN)
	c.Kind.add(e.Kind)
	c.Code.add(e.Code)
	c.State.add(e.State)
	c.At.add(e.At)
	c.AtMs.add(ms(e.At))
	c.Reason.add(e.Reason)
	c.MsgID.add(e.MsgID)
	if e.Reply != nil {
		c.HasReply.add(1)
		c.Reply.add(*e.Reply)
	} else {
		c.HasReply.add(0)
		c.Reply.add("")
	}
	c.Seq.add(e.Seq)
}

type rejectCols struct {
	RejectID        col[string]    `ch:"reject_id"`
	Stage           col[string]    `ch:"stage"`
	Reason          col[string]    `ch:"reason"`
	Detail          col[string]    `ch:"detail"`
	SN              col[string]    `ch:"sn"`
	Topic           col[string]    `ch:"topic"`
	Payload         col[string]    `ch:"payload"`
	SourceTopic     col[string]    `ch:"source_topic"`
	SourcePartition col[int32]     `ch:"source_partition"`
	SourceOffset    col[int64]     `ch:"source_offset"`
	At              col[time.Time] `ch:"at"`
	AtMs            col[uint64]    `ch:"at_ms"`
}

func (c *rejectCols) add(r *schemas.Reject) {
	c.RejectID.add(r.RejectID)
	c.Stage.add(r.Stage)
	c.Reason.add(r.Reason)
	c.Detail.add(r.Detail)
	c.SN.add(r.SN)
	c.Topic.add(r.Topic)
	c.Payload.add(string(r.Payload))
	c.SourceTopic.add(r.SourceTopic)
	c.SourcePartition.add(r.SourcePartition)
	c.SourceOffset.add(r.SourceOffset)
	c.At.add(r.At)
	c.AtMs.add(ms(r.At))
}

// uplinkCols: an UplinkRaw has no id of its own; its Kafka position
// (partition, offset in ams.uplink.raw) identifies it.
type uplinkCols struct {
	SrcPartition  col[int32]     `ch:"src_partition"`
	SrcOffset     col[int64]     `ch:"src_offset"`
	Kind          col[string]    `ch:"kind"`
	SN            col[string]    `ch:"sn"`
	Topic         col[string]    `ch:"topic"`
	Payload       col[string]    `ch:"payload"`
	ClientID      col[string]    `ch:"client_id"`
	Username      col[string]    `ch:"username"`
	Reason        col[string]    `ch:"reason"`
	Node          col[string]    `ch:"node"`
	BrokerTimeMs  col[uint64]    `ch:"broker_time_ms"`
	ConnectedAtMs col[uint64]    `ch:"connected_at_ms"`
	IngestTime    col[time.Time] `ch:"ingest_time"`
	IngestTimeMs  col[uint64]    `ch:"ingest_time_ms"`
	Ingest        col[string]    `ch:"ingest"`
}

func (c *uplinkCols) add(u *schemas.UplinkRaw, partition int32, offset int64) {
	c.SrcPartition.add(partition)
	c.SrcOffset.add(offset)
	c.Kind.add(u.Kind)
	c.SN.add(u.SN)
	c.Topic.add(u.Topic)
	c.Payload.add(string(u.Payload))
	c.ClientID.add(u.ClientID)
	c.Username.add(u.Username)
	c.Reason.add(u.Reason)
	c.Node.add(u.Node)
	c.BrokerTimeMs.add(msPtr(u.BrokerTime))
	c.ConnectedAtMs.add(msPtr(u.ConnectedAt))
	c.IngestTime.add(u.IngestTime)
	c.IngestTimeMs.add(ms(u.IngestTime))
	c.Ingest.add(u.Ingest)
}

// ms is t in unix milliseconds; times before 1970 (never valid here) are 0.
func ms(t time.Time) uint64 {
	if v := t.UnixMilli(); v > 0 {
		return uint64(v)
	}
	return 0
}

func msPtr(t *time.Time) uint64 {
	if t == nil {
		return 0
	}
	return ms(*t)
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
