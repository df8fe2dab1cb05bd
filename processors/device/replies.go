package device

import (
	"fmt"

	"github.com/ivms/ams/pkg/protocol"
)

// Fixed reply bodies.
var heartbeatReply = protocol.HeartbeatReply{Online: 1}

// reply encrypts body for the device's session and emits it as a downlink
// echoing the request's sProtocolVersion; withMsgID gives it a fresh sMsgId.
func (c *call) reply(s *State, req protocol.Frame, cmdType, sub int, withMsgID bool, body any, purpose string) {
	if c.err != nil {
		return
	}
	pt, err := protocol.MarshalASCII(body)
	if err != nil {
		c.fail(fmt.Errorf("device: %s reply body: %w", purpose, err))
		return
	}
	f := protocol.Frame{CmdType: cmdType, ProtocolVersion: req.ProtocolVersion, Data: protocol.EncryptBody(*s.session, pt)}
	clear(pt)
	switch cmdType {
	case protocol.CmdCommand:
		f.AppCmdType = sub
	case protocol.CmdAms:
		f.AmsCmdType = sub
	}
	if withMsgID {
		f.MsgID = c.msgID()
	}
	c.downlink(f.Encode(), f, purpose)
}

// configReplies answers a configuration: the device name (333) when the
// device is bound and named, then the bind status (301).
func (c *call) configReplies(s *State, req protocol.Frame) {
	bound := 0
	if s.reg.Bound {
		bound = 1
		if s.reg.Name != "" {
			c.reply(s, req, protocol.CmdCommand, protocol.AppOSD, true,
				protocol.OSDName{OsdName: protocol.OSDText{Enable: 1, Text: s.reg.Name}}, PurposeDeviceName)
		}
	}
	c.reply(s, req, protocol.CmdCommand, protocol.AppGetConfig, true,
		protocol.BindStatus{GetConfig: 1, BindStatus: bound}, PurposeBindStatus)
}

// streamReply answers a stream URL request (702) of a bound device with a
// signed push URL. Unbound devices, and a processor without stream
// configuration, get no answer (counted).
func (c *call) streamReply(s *State, req protocol.Frame, r protocol.StreamURLRequest) {
	const request = "stream_url"
	switch {
	case !s.reg.Bound:
		c.p.m.unanswered.WithLabelValues(request, "unbound").Inc()
		return
	case !c.p.stream.enabled():
		c.p.m.unanswered.WithLabelValues(request, "not_configured").Inc()
		return
	}
	base := c.p.stream.BaseURL
	if s.reg.StreamURL != "" {
		base = s.reg.StreamURL
	}
	exp := c.p.stream.expiry(c.now, r.ExpiresTime)
	url, err := SignStreamURL(c.p.stream.Secret, base, c.sn, exp)
	if err != nil {
		c.p.m.unanswered.WithLabelValues(request, "bad_stream_url").Inc()
		c.p.log.Warn("device: registration has an unusable stream_url; stream URL request not answered",
			"sn", c.sn, "err", err)
		return
	}
	c.reply(s, req, protocol.CmdAms, protocol.AmsStreamURL, true, protocol.StreamURLReply{
		IsForbidden: 0,
		PushURL:     url,
		Index:       r.Index,
		ExpiresTime: protocol.Float(exp),
		Protocol:    "rtmp",
	}, PurposeStreamURL)
}

// uploadParams is the body of the 703 answer, fields in the seed's order.
type uploadParams struct {
	IsForbidden  int        `json:"isForBidden"`
	UploadMethod string     `json:"uploadmethod"`
	FTP          uploadFTP  `json:"ftp"`
	HTTP         uploadHTTP `json:"http"`
	Index        int64      `json:"index"`
}

type uploadFTP struct {
	URL      string `json:"ftpurl"`
	Port     string `json:"ftpport"`
	User     string `json:"ftpuser"`
	Password string `json:"ftppassword"`
	Path     string `json:"ftppath"`
}

type uploadHTTP struct {
	HostURL     string `json:"hosturl"`
	AccessKey   string `json:"access_key"`
	SecretKey   string `json:"secret_key"`
	Bucket      string `json:"bucket_name"`
	ObjectPath  string `json:"object_path"`
	CallbackURL string `json:"callbackurl"`
}

// uploadReply answers a picture upload parameters request (703) with
// credentials from the configured provider. The body holds a secret: it
// only ever exists encrypted in the downlink.
func (c *call) uploadReply(s *State, req protocol.Frame, r protocol.UploadParamsRequest) {
	const request = "upload_params"
	if !c.p.upload.enabled() {
		c.p.m.unanswered.WithLabelValues(request, "not_configured").Inc()
		return
	}
	u := c.p.upload
	objectPath := u.objectPath(c.sn)
	g, err := u.Credentials.Grant(c.sn, u.Bucket, objectPath, c.now)
	if err != nil {
		c.p.m.unanswered.WithLabelValues(request, "credentials").Inc()
		c.p.log.Warn("device: upload credentials unavailable; upload parameters request not answered",
			"sn", c.sn, "err", err)
		return
	}
	c.reply(s, req, protocol.CmdAms, protocol.AmsUploadParams, true, uploadParams{
		UploadMethod: "http",
		HTTP: uploadHTTP{
			HostURL:     u.HostURL,
			AccessKey:   g.AccessKey,
			SecretKey:   g.SecretKey,
			Bucket:      u.Bucket,
			ObjectPath:  objectPath,
			CallbackURL: u.CallbackURL,
		},
		Index: r.Index,
	}, PurposeUploadParams)
}
