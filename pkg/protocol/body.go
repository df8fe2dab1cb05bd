package protocol

import (
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// Configuration is the body of an iCmdType 1 uplink: the device describes
// itself. Check DeviceSn against the topic's sn before trusting it.
type Configuration struct {
	DeviceSn           string `json:"sDeviceSn"`
	HwVersion          string `json:"sHwVersion"`
	ModelName          string `json:"sModelName"`
	IPAddr             string `json:"sIpAddr"`
	MacAddr            string `json:"sMacAddr"`
	VPNIPAddr          string `json:"sVPNIpAddr"`
	FwVersion          string `json:"sFwVersion"`
	AlphaVer           string `json:"sAlphaVer"`
	AiModelVer         string `json:"sAiModelVer"`
	IEVer              string `json:"sIEVer"`
	ChnCnt             int    `json:"iChnCnt"`
	AlarmIn            int    `json:"iAlarmIn"`
	AlarmOut           int    `json:"iAlarmOut"`
	NetMethod          int    `json:"iNetMethod"`
	TFCardState        int    `json:"iTFCardState"`
	TFCardCapacitySize int64  `json:"iTFCardCapacitySize"`
	TFCardUseSize      int64  `json:"iTFCardUseSize"`
	SSID               string `json:"sSSID,omitempty"`
	WifiStrength       int    `json:"iWifiStrength,omitempty"`
}

// SNBody is the part of any uplink body the cloud checks: the optional
// sDeviceSn, nil when the body has none (absent or null), so that an empty
// sn is told apart from a missing one. A body the cloud does not otherwise
// read (heartbeats, replies, unknown kinds) is decoded into it alone.
type SNBody struct {
	DeviceSn *string `json:"sDeviceSn"`
}

// ConfigurationSN is a Configuration whose sDeviceSn goes to DeviceSn, nil
// when the body has none (Configuration.DeviceSn stays empty): one decode
// gives the typed body and the sn to check.
type ConfigurationSN struct {
	Configuration
	DeviceSn *string `json:"sDeviceSn"`
}

// Heartbeat is the body of an iCmdType 2 uplink.
type Heartbeat struct {
	DeviceSn  string `json:"sDeviceSn"`
	HeartBeat int    `json:"iHeartBeat"`
}

// StreamURLRequest is the body of an iCmdType 7 / iAmsCmdType 702 uplink.
// ExpiresTime is in Unix seconds; 0 means "not given".
type StreamURLRequest struct {
	Index       int64   `json:"iGetVMSURL"`
	ExpiresTime float64 `json:"iExpiresTime"`
}

// UploadParamsRequest is the body of an iCmdType 7 / iAmsCmdType 703 uplink.
type UploadParamsRequest struct {
	Index int64 `json:"iGetPicUploadPara"`
}

// SDCardInfo is the device's reply (iCmdType 6) to AppGetSDInfo.
type SDCardInfo struct {
	TFCardState        int   `json:"iTFCardState"`
	TFCardCapacitySize int64 `json:"iTFCardCapacitySize"`
	TFCardUseSize      int64 `json:"iTFCardUseSize"`
}

// HeartbeatReply is the body of the iCmdType 2 downlink: {"iOnline":1}.
type HeartbeatReply struct {
	Online int `json:"iOnline"`
}

// BindStatus is the body of the AppGetConfig (301) command:
// {"iGetconfig":1,"iBindStatus":0 or 1}.
type BindStatus struct {
	GetConfig  int `json:"iGetconfig"`
	BindStatus int `json:"iBindStatus"`
}

// Reboot is the body of the AppReboot (313) command: {"iReboot":1}.
type Reboot struct {
	Reboot int `json:"iReboot"`
}

// OSDName is the AppOSD (333) body that sets the device name:
// {"sOsdName":{"iEnable":1,"strText":NAME}}.
type OSDName struct {
	OsdName OSDText `json:"sOsdName"`
}

// OSDText is one OSD text item.
type OSDText struct {
	Enable int    `json:"iEnable"`
	Text   string `json:"strText"`
}

// StreamURLReply is the body of the AmsStreamURL (702) downlink. ExpiresTime
// is in Unix seconds and prints with a decimal point, like the seed's.
type StreamURLReply struct {
	IsForbidden int    `json:"isForBidden"`
	PushURL     string `json:"pushurl"`
	Index       int64  `json:"index"`
	ExpiresTime Float  `json:"iExpiresTime"`
	Protocol    string `json:"protocol"`
}

// AmsControl is the body of the AmsStreamControl (704) and AmsUploadControl
// (705) downlinks: {"icmdtype":N}.
type AmsControl struct {
	CmdType int `json:"icmdtype"`
}

// DecryptJSON decrypts a body (as DecryptBody, with its reasons), checks it
// is valid UTF-8 (bad_utf8) and a JSON object, and decodes it into v with
// encoding/json (bad_json for invalid JSON, a non-object, or a value that does
// not fit v, such as a string for an int field or a number out of range).
// Unknown fields are ignored. On error v may be partly filled.
func DecryptJSON(k SessionKey, sData string, v any) error {
	pt, err := DecryptBody(k, sData)
	if err != nil {
		return err
	}
	return UnmarshalBody(pt, v)
}

// AppendDecryptJSON is DecryptJSON decrypting into buf's spare capacity, so
// that one buffer serves many frames; it returns the (possibly grown) buffer
// for the next call. Strings decoded into v do not alias buf.
func AppendDecryptJSON(buf []byte, k SessionKey, sData string, v any) ([]byte, error) {
	pt, err := AppendDecryptBody(buf[:0], k, sData)
	if err != nil {
		return buf, err
	}
	err = UnmarshalBody(pt, v)
	return pt[:0], err
}

// UnmarshalBody is DecryptJSON's decoding of a decrypted body pt (from
// DecryptBody): valid UTF-8 (bad_utf8), a JSON object that fits v (bad_json).
// The hot bodies (*Configuration, *ConfigurationSN, *Heartbeat, *SNBody)
// take a single-pass decoder that gives exactly encoding/json's result.
func UnmarshalBody(pt []byte, v any) error {
	if !utf8.Valid(pt) {
		return newError(ReasonBadUTF8, "body is not valid UTF-8")
	}
	if c, ok := firstNonSpace(pt); !ok || c != '{' {
		if !json.Valid(pt) {
			return newError(ReasonBadJSON, "body is not valid JSON")
		}
		return newError(ReasonBadJSON, "body is not a JSON object")
	}
	switch t := v.(type) {
	case *Configuration:
		if decodeFast(pt, t) {
			return nil
		}
	case *ConfigurationSN:
		if decodeFast(pt, t) {
			return nil
		}
	case *Heartbeat:
		if decodeFast(pt, t) {
			return nil
		}
	case *SNBody:
		if decodeFast(pt, t) {
			return nil
		}
	}
	if err := json.Unmarshal(pt, v); err != nil {
		var ie *json.InvalidUnmarshalError
		if errors.As(err, &ie) {
			return err // caller's bug: ReasonOf says internal
		}
		return wrapError(ReasonBadJSON, "body does not decode", err)
	}
	return nil
}
