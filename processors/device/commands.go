package device

import (
	"fmt"

	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/processors/cmdlife"
	"github.com/ivms/ams/schemas"
)

// The command lifecycle's glue: processors/cmdlife decides, this file turns
// its effects into ams.command.events records and command downlinks, in the
// transaction of the input or timer that caused them.

// deliverable reports whether a command can be sent to the device now:
// online, with a session.
func deliverable(s *State) bool {
	return s != nil && s.session != nil && s.presence.Online
}

// known reports whether the device is registered or has ever been seen.
func known(s *State) bool {
	return s != nil && (s.reg.Registered || s.session != nil || !s.presence.LastSeen.IsZero())
}

// cmdTx runs f on the commands of s and returns the resulting state (s
// itself when the command list did not change), emitting the effects.
func (c *call) cmdTx(s *State, f func(*cmdlife.Tx)) *State {
	if c.err != nil {
		return s
	}
	var list []schemas.PendingCommand
	if s != nil {
		list = s.pending
	}
	tx := c.p.cmds.Begin(c.now, list, c.newMsgID)
	f(tx)
	if err := tx.Err(); err != nil {
		c.fail(fmt.Errorf("device: %s: %w", c.sn, err))
		return s
	}
	for _, e := range tx.Effects() {
		switch {
		case e.Event != nil:
			ev := *e.Event
			ev.SN = c.sn
			c.p.m.cmdEvents.WithLabelValues(ev.State).Inc()
			c.emit(&ev)
		case e.Send != nil:
			c.sendCommand(s, e.Send)
		}
	}
	if !tx.Changed() {
		return s
	}
	next := c.change(s)
	next.pending = tx.List()
	return next
}

func (c *call) newMsgID() (string, error) {
	id := c.msgID()
	if c.err != nil {
		return "", c.err
	}
	return id, nil
}

// sendCommand emits the downlink of a command: its normalized body
// encrypted with the session key, a fresh sMsgId, frame_id
// "command/{command_id}" (a command is sent at most once).
func (c *call) sendCommand(s *State, snd *cmdlife.Send) {
	if !deliverable(s) {
		c.fail(fmt.Errorf("device: %s: command %q due to be sent without a session", c.sn, snd.Command.CommandID))
		return
	}
	p := snd.Command
	f := protocol.Frame{
		CmdType:         snd.CmdType,
		ProtocolVersion: c.p.cmdProto,
		MsgID:           p.MsgID,
		Data:            protocol.EncryptBody(*s.session, []byte(p.Body)),
	}
	if snd.CmdType == protocol.CmdAms {
		f.AmsCmdType = int(p.Code)
	} else {
		f.AppCmdType = int(p.Code)
	}
	id := p.CommandID
	c.p.m.replies.WithLabelValues(PurposeCommand).Inc()
	publishBy := snd.PublishBy
	c.emit(&schemas.Downlink{
		FrameID:    "command/" + id,
		SN:         c.sn,
		Topic:      protocol.DownlinkTopic(c.sn),
		Payload:    f.Encode(),
		CmdType:    int32(f.CmdType),
		SubType:    int32(p.Code),
		MsgID:      p.MsgID,
		CommandID:  &id,
		Purpose:    PurposeCommand,
		CreatedAt:  c.now,
		Deadline:   &publishBy,
		AtMostOnce: snd.AtMostOnce,
	})
}

// command handles one request of ams.commands.
func (c *call) command(s *State, cmd *schemas.Command) *State {
	if cmd.ID == "" {
		c.reject(ReasonBadRecord, "command without an id", "", c.in.Value)
		return s
	}
	d := cmdlife.Device{Known: known(s), Deliverable: deliverable(s)}
	return c.cmdTx(s, func(tx *cmdlife.Tx) {
		c.p.m.cmdInputs.WithLabelValues("request", string(tx.Submit(c.sn, *cmd, d))).Inc()
	})
}

// receipt handles one record of ams.downlink.receipts: a command's frame
// reached the broker. Receipts of other downlinks (no command id) are
// ignored.
func (c *call) receipt(s *State, r *schemas.DownlinkReceipt) *State {
	if r.CommandID == nil {
		return s
	}
	if r.SN != c.sn {
		c.reject(ReasonSNMismatch, fmt.Sprintf("receipt sn %q is not the key", r.SN), "", c.in.Value)
		return s
	}
	return c.cmdTx(s, func(tx *cmdlife.Tx) {
		c.p.m.cmdInputs.WithLabelValues("receipt", string(tx.Receipt(*r.CommandID, r.MsgID, r.Status))).Inc()
	})
}

// commandReply correlates a reply frame (iCmdType 6, or 7 / 704, 705) with
// the command sent with its sMsgId. A reply that matches none is counted
// and changes nothing (its DeviceEvent is emitted all the same).
func (c *call) commandReply(s *State, f protocol.Frame, body string) *State {
	return c.cmdTx(s, func(tx *cmdlife.Tx) {
		c.p.m.cmdInputs.WithLabelValues("reply", string(tx.Reply(f.CmdType, f.AmsCmdType, f.MsgID, body))).Inc()
	})
}
